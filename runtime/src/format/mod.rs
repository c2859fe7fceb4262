//! The `.frt` file format, version 1: constants, record layouts, the shape/attribute rules
//! shared by the writer and the reader, and aligned byte buffers.
//!
//! The normative description is `docs/frt-format.md`; this module is its implementation.
//! Reading is done by [`crate::Model::from_bytes`]; writing (feature `alloc`) by [`crate::write`].
//!
//! Everything is little-endian. A file is a 32-byte header, a section table, and
//! 16-byte aligned sections (tensors, nodes, weights, memory plan, signature, metadata,
//! names). The CRC-32 in the header covers every byte of the file except itself.

use core::fmt;

use crate::ops::{Binary, CoordMode, PadMode, PoolKind, ReduceKind, ResizeMode, Unary, Window};
use crate::Error;

mod aligned;
pub mod pipeline;
pub(crate) mod rules;
pub mod sampling;

pub use aligned::Aligned16;
#[cfg(feature = "alloc")]
pub use aligned::AlignedBytes;

/// The four magic bytes every `.frt` file starts with.
pub const MAGIC: [u8; 4] = *b"FLRT";
/// The format version this runtime reads and writes.
pub const VERSION: u16 = 1;
/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 32;
/// Length of one section-table entry in bytes.
pub const SECTION_ENTRY_LEN: usize = 24;
/// Most sections a file may list.
pub const MAX_SECTIONS: usize = 64;
/// Section flag bit: a reader that does not know the section's kind must reject the file.
pub const SECTION_FLAG_REQUIRED: u16 = 1;
/// Alignment (bytes) of sections, of each constant's data and of every arena offset.
pub const ALIGN: usize = 16;
/// Highest tensor rank the format and the kernels support.
pub const MAX_RANK: usize = 6;
/// Length of one tensor record in bytes.
pub const TENSOR_RECORD_LEN: usize = 64;
/// Length of one node record in bytes.
pub const NODE_RECORD_LEN: usize = 48;
/// Number of 32-bit attribute words in a node record.
pub const NODE_ATTRS: usize = 8;
/// Length of one memory-plan entry in bytes.
pub const PLAN_ENTRY_LEN: usize = 16;
/// Length of one signature entry in bytes.
pub const SIGNATURE_ENTRY_LEN: usize = 8;
/// "None" value of u32 index fields (producer node, plan slot).
pub const NONE_U32: u32 = u32::MAX;
/// Batch-axis value meaning "this tensor has no batch dimension".
pub const NO_BATCH: u8 = 0xFF;
/// Element type code of f32 (the only one in version 1).
pub const DTYPE_F32: u8 = 0;

/// Section kind codes.
pub mod section {
    /// Tensor descriptors (required).
    pub const TENSORS: u16 = 1;
    /// Nodes and their input lists (required).
    pub const NODES: u16 = 2;
    /// Constant data (required, may be empty).
    pub const WEIGHTS: u16 = 3;
    /// Static memory plan (required).
    pub const PLAN: u16 = 4;
    /// Model signature: inputs with roles, output, state dimension (required).
    pub const SIGNATURE: u16 = 5;
    /// Free-form key/value metadata (optional).
    pub const METADATA: u16 = 6;
    /// Tensor and node names (optional).
    pub const NAMES: u16 = 7;
    /// Solver defaults baked in at export: method, steps, grid, guidance (optional).
    pub const SOLVER_DEFAULTS: u16 = 8;
    /// The source ONNX model's bytes, self-contained (optional; `flowrt export --embed-onnx`).
    pub const ONNX: u16 = 9;
    /// The model's time convention (required when present; absent = `t` 0 → 1, unscaled).
    pub const TIME: u16 = 10;
    /// Further graphs and the rule that picks them (required when present; see
    /// [`crate::pipeline`]).
    pub const PIPELINE: u16 = 11;
}

/// Operation codes of node records.
pub mod opcode {
    /// `Dense`: `a[.., K] x w[K, N] (+ bias[N])`.
    pub const DENSE: u16 = 0x0001;
    /// `MatMul`: numpy matmul with broadcast leading dims.
    pub const MATMUL: u16 = 0x0002;
    /// `Concat { axis }`.
    pub const CONCAT: u16 = 0x0010;
    /// `Reshape`.
    pub const RESHAPE: u16 = 0x0011;
    /// `Expand`.
    pub const EXPAND: u16 = 0x0012;
    /// `Transpose { perm }`.
    pub const TRANSPOSE: u16 = 0x0013;
    /// `Slice { axis, start, end, step }`.
    pub const SLICE: u16 = 0x0014;
    /// `Where`: `cond != 0 ? a : b`, three inputs broadcast together.
    pub const WHERE: u16 = 0x0020;
    /// `Gather { axis: 0 }`: rows of a table picked by an index tensor (embedding lookup).
    pub const GATHER: u16 = 0x0030;
    /// `Pad { mode, begin, end }`.
    pub const PAD: u16 = 0x0015;
    /// `Conv { groups, window }`: NCHW convolution, `[x, w]` or `[x, w, bias]`.
    pub const CONV: u16 = 0x0040;
    /// `ConvTranspose { groups, window, out_pad }`.
    pub const CONV_TRANSPOSE: u16 = 0x0041;
    /// `Pool { kind, kernel, window }`: max / average pooling.
    pub const POOL: u16 = 0x0042;
    /// `Reduce { kind, start, end }` over a contiguous axis range (dims kept).
    pub const REDUCE: u16 = 0x0050;
    /// `Softmax { start, end, log }` over a contiguous axis range.
    pub const SOFTMAX: u16 = 0x0051;
    /// `Resize { mode, coord, scales }` of the last two axes.
    pub const RESIZE: u16 = 0x0060;
    /// Binary ops: `BINARY_BASE + Binary::code()` (Add 0, Sub 1, Mul 2, Div 3, Pow 4, Max 5,
    /// Min 6, Greater 7, Less 8, GreaterOrEqual 9, LessOrEqual 10, Equal 11).
    pub const BINARY_BASE: u16 = 0x0100;
    /// Unary ops: `UNARY_BASE + Unary::code()` (see [`crate::ops::Unary`]).
    pub const UNARY_BASE: u16 = 0x0200;
}

// ---------------------------------------------------------------------------------------------
// Little-endian field access (never panics; `None` when out of bounds).

pub(crate) fn le_u16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes(s.try_into().ok()?))
}

pub(crate) fn le_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

pub(crate) fn le_u64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

/// Rounds `n` up to a multiple of [`ALIGN`] (`None` on overflow).
pub(crate) fn align_up(n: usize) -> Option<usize> {
    Some(n.checked_add(ALIGN - 1)? & !(ALIGN - 1))
}

/// CRC-32 (IEEE 802.3, as zlib / `crc32fast`) of a whole file image, skipping the 4
/// checksum bytes at offset 16. Tools that patch a file recompute it with this.
pub fn file_checksum(file: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(file.get(..16).unwrap_or(&[]));
    h.update(file.get(20..).unwrap_or(&[]));
    h.finalize()
}

// ---------------------------------------------------------------------------------------------
// Shapes.

/// One dimension of a tensor shape: the symbolic batch size `B` or a fixed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    /// The batch size chosen at run time.
    Batch,
    /// A size fixed in the file (>= 1).
    Fixed(u32),
}

/// A tensor shape of rank <= [`MAX_RANK`] with at most one [`Dim::Batch`].
///
/// Only valid shapes can be constructed: every fixed dim is >= 1.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    rank: u8,
    batch_axis: u8,
    dims: [u32; MAX_RANK],
}

impl Shape {
    /// The rank-0 shape `[]` (one element).
    pub const SCALAR: Shape = Shape {
        rank: 0,
        batch_axis: NO_BATCH,
        dims: [0; MAX_RANK],
    };

    /// Builds a shape from dims. Errors name the broken rule.
    pub fn new(dims: &[Dim]) -> Result<Shape, &'static str> {
        if dims.len() > MAX_RANK {
            return Err("rank is larger than 6");
        }
        let mut s = Shape::SCALAR;
        for (i, (d, slot)) in dims.iter().zip(s.dims.iter_mut()).enumerate() {
            match *d {
                Dim::Batch => {
                    if s.batch_axis != NO_BATCH {
                        return Err("shape has more than one batch dim");
                    }
                    s.batch_axis = i as u8; // i < MAX_RANK
                    *slot = 0;
                }
                Dim::Fixed(0) => return Err("shape has a zero-sized dim"),
                Dim::Fixed(n) => *slot = n,
            }
        }
        s.rank = dims.len() as u8; // <= MAX_RANK
        Ok(s)
    }

    /// Decodes the raw record fields, checking every rule (rank, batch axis, dims >= 1,
    /// unused dims and the batch dim's slot zero).
    pub(crate) fn from_raw(
        rank: u8,
        batch_axis: u8,
        dims: [u32; MAX_RANK],
    ) -> Result<Shape, &'static str> {
        if usize::from(rank) > MAX_RANK {
            return Err("rank is larger than 6");
        }
        if batch_axis != NO_BATCH && batch_axis >= rank {
            return Err("batch axis out of range");
        }
        for (i, d) in dims.iter().enumerate() {
            let expect_zero = i >= usize::from(rank) || i == usize::from(batch_axis);
            if expect_zero && *d != 0 {
                return Err("unused or batch dim slot is not zero");
            }
            if !expect_zero && *d == 0 {
                return Err("shape has a zero-sized dim");
            }
        }
        Ok(Shape {
            rank,
            batch_axis,
            dims,
        })
    }

    #[cfg(feature = "alloc")]
    pub(crate) fn raw(&self) -> (u8, u8, [u32; MAX_RANK]) {
        (self.rank, self.batch_axis, self.dims)
    }

    /// Number of dims.
    pub fn rank(&self) -> usize {
        usize::from(self.rank)
    }

    /// Position of the batch dim, if the shape has one.
    pub fn batch_axis(&self) -> Option<usize> {
        (self.batch_axis != NO_BATCH).then_some(usize::from(self.batch_axis))
    }

    /// `true` when the shape contains [`Dim::Batch`].
    pub fn has_batch(&self) -> bool {
        self.batch_axis != NO_BATCH
    }

    /// Dim `i`, or `None` when `i >= rank`.
    pub fn dim(&self, i: usize) -> Option<Dim> {
        if i >= self.rank() {
            return None;
        }
        if i == usize::from(self.batch_axis) {
            return Some(Dim::Batch);
        }
        self.dims.get(i).map(|d| Dim::Fixed(*d))
    }

    /// The dims, outermost first.
    pub fn dims(&self) -> impl Iterator<Item = Dim> + '_ {
        (0..self.rank()).filter_map(|i| self.dim(i))
    }

    /// Product of the fixed dims: elements per batch row for a batched shape, the total
    /// element count otherwise. `None` on u64 overflow.
    pub fn row_elements(&self) -> Option<u64> {
        self.dims().try_fold(1u64, |acc, d| match d {
            Dim::Batch => Some(acc),
            Dim::Fixed(n) => acc.checked_mul(u64::from(n)),
        })
    }

    /// Element count when the batch size is `batch` (`None` on overflow).
    pub fn elements(&self, batch: usize) -> Option<usize> {
        let row = usize::try_from(self.row_elements()?).ok()?;
        if self.has_batch() {
            row.checked_mul(batch)
        } else {
            Some(row)
        }
    }

    /// Concrete dims for batch size `batch`.
    pub fn concrete(&self, batch: usize) -> crate::ops::Dims {
        let mut d = [1usize; MAX_RANK];
        for (slot, dim) in d.iter_mut().zip(self.dims()) {
            *slot = match dim {
                Dim::Batch => batch,
                Dim::Fixed(n) => n as usize,
            };
        }
        crate::ops::Dims::from_parts(self.rank(), d)
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Shape {
    /// Writes the shape as `[B, 3, 64]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.dims().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match d {
                Dim::Batch => f.write_str("B")?,
                Dim::Fixed(n) => write!(f, "{n}")?,
            }
        }
        f.write_str("]")
    }
}

// ---------------------------------------------------------------------------------------------
// Tensor kinds, roles, plan regions.

/// What a tensor is and where its values live at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorKind {
    /// A graph input: supplied by the caller.
    Input,
    /// A constant: zero-copy from the weights section.
    Const,
    /// Computed by a node, stored in the arena.
    Intermediate,
    /// The graph output (the velocity): computed by a node, stored in the arena, then
    /// copied to the caller's buffer.
    Output,
}

impl TensorKind {
    /// Code stored in the tensor record (input 0, const 1, intermediate 2, output 3).
    pub fn code(self) -> u8 {
        match self {
            TensorKind::Input => 0,
            TensorKind::Const => 1,
            TensorKind::Intermediate => 2,
            TensorKind::Output => 3,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<TensorKind> {
        Some(match c {
            0 => TensorKind::Input,
            1 => TensorKind::Const,
            2 => TensorKind::Intermediate,
            3 => TensorKind::Output,
            _ => return None,
        })
    }

    /// `true` for tensors stored in the arena (intermediate and output).
    pub fn in_arena(self) -> bool {
        matches!(self, TensorKind::Intermediate | TensorKind::Output)
    }
}

/// Role a graph input plays in the velocity field `v(x, t)` (mirror of `ir::Role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputRole {
    /// The state `x`, shape `[B, ...]`.
    X,
    /// The time `t`: one value per row (`[B]`, `[B, 1]`) or one value in all (`[]`, `[1]`, ...).
    T,
    /// State with time appended as the last feature: `[B, D + 1]`.
    Xt,
    /// A class index per row (`[B]` or `[B, 1]`), stored as exact integers in f32; it feeds
    /// the index input of `Gather` (embedding lookup). ONNX: an int64 input such as `y`.
    Label,
    /// A float conditioning vector per row: `[B, C]`.
    Cond,
    /// An embedded guidance scale (Flux-style): one value per row (`[B]`, `[B, 1]`) or one
    /// value in all (`[]`, `[1]`, ...), like `T`.
    Guidance,
    /// The second time input of few-step models (mean flows' `r` or `h = t − r`, shortcut
    /// models' step size or log2 step count; which one is declared by the `TIME` section),
    /// shaped like `T`; filled by the sampler for each step.
    Step,
    /// An operand of a *plain graph*: a fixed-shape f32 input without a batch dim. A model
    /// whose inputs are all `Data` is a plain graph (no state, no time; any number of
    /// inputs), run with [`crate::exec::run`] — e.g. the ONNX operator conformance cases
    /// (`flowrt conformance`). Samplers refuse it.
    Data,
}

impl InputRole {
    /// Every role, in code order.
    pub const ALL: [InputRole; 8] = [
        InputRole::X,
        InputRole::T,
        InputRole::Xt,
        InputRole::Label,
        InputRole::Cond,
        InputRole::Guidance,
        InputRole::Step,
        InputRole::Data,
    ];

    /// Code stored in the signature entry (x 0, t 1, xt 2, label 3, cond 4, guidance 5,
    /// step 6).
    pub fn code(self) -> u32 {
        match self {
            InputRole::X => 0,
            InputRole::T => 1,
            InputRole::Xt => 2,
            InputRole::Label => 3,
            InputRole::Cond => 4,
            InputRole::Guidance => 5,
            InputRole::Step => 6,
            InputRole::Data => 7,
        }
    }

    /// The role with signature code `c`, if any.
    pub fn from_code(c: u32) -> Option<InputRole> {
        Some(match c {
            0 => InputRole::X,
            1 => InputRole::T,
            2 => InputRole::Xt,
            3 => InputRole::Label,
            4 => InputRole::Cond,
            5 => InputRole::Guidance,
            6 => InputRole::Step,
            7 => InputRole::Data,
            _ => return None,
        })
    }

    /// Short name (`"x"`, `"t"`, `"xt"`, `"label"`, `"cond"`, `"guidance"`, `"step"`).
    pub fn name(self) -> &'static str {
        match self {
            InputRole::X => "x",
            InputRole::T => "t",
            InputRole::Xt => "xt",
            InputRole::Label => "label",
            InputRole::Cond => "cond",
            InputRole::Guidance => "guidance",
            InputRole::Step => "step",
            InputRole::Data => "data",
        }
    }

    /// `true` for the conditioning roles (`label`, `cond`, `guidance`), which the caller
    /// supplies through [`crate::exec::Conditioning`].
    pub fn is_conditioning(self) -> bool {
        matches!(
            self,
            InputRole::Label | InputRole::Cond | InputRole::Guidance
        )
    }
}

/// Arena region of a planned tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    /// The fixed region: offset and size in bytes, independent of the batch size.
    Fixed,
    /// The per-row region: offset and size in bytes *per batch row*; the tensor's byte
    /// offset for batch `B` is `fixed_bytes + offset * B`.
    PerRow,
}

impl Region {
    /// Code stored in the plan entry (fixed 0, per-row 1).
    pub fn code(self) -> u32 {
        match self {
            Region::Fixed => 0,
            Region::PerRow => 1,
        }
    }

    pub(crate) fn from_code(c: u32) -> Option<Region> {
        match c {
            0 => Some(Region::Fixed),
            1 => Some(Region::PerRow),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Node operations.

/// A node's operation with its attributes, as stored in the file (no heap).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NodeOp {
    /// `inputs = [a, w]` or `[a, w, bias]`: `a[.., K] x w[K, N] (+ bias[N]) -> [.., N]`.
    Dense,
    /// `inputs = [a, b]`: numpy matmul, rank >= 2, leading dims broadcast.
    MatMul,
    /// `inputs = [a, b]`: element-wise with numpy broadcasting.
    Binary(Binary),
    /// `inputs = [x]`: element-wise.
    Unary(Unary),
    /// `inputs = [cond, a, b]`: `cond != 0 ? a : b`, all three broadcast (numpy) to the output.
    Where,
    /// `inputs = [x0, x1, ...]` joined along `axis`.
    Concat {
        /// Axis along which the inputs are joined.
        axis: u32,
    },
    /// `inputs = [x]`: same elements, new shape.
    Reshape,
    /// `inputs = [x]`: broadcast to the output shape.
    Expand,
    /// `inputs = [x]`: output axis `i` is input axis `perm[i]`.
    Transpose {
        /// Rank (length of the permutation).
        rank: u8,
        /// The permutation; entries past `rank` are 0.
        perm: [u8; MAX_RANK],
    },
    /// `inputs = [x]`: indices `start, start + step, ...` (< `end`) along `axis`.
    Slice {
        /// Axis to slice.
        axis: u32,
        /// First index taken.
        start: u32,
        /// One past the last index that may be taken.
        end: u32,
        /// Stride (>= 1).
        step: u32,
    },
    /// `inputs = [table, idx]`: `out[i, ...] = table[idx[i], ...]` along axis 0 (the only
    /// axis in this version); output shape = `idx.shape + table.shape[1..]`. An index that
    /// is not an integer in `0..N` is a run-time error.
    Gather,
    /// `inputs = [x, w]` or `[x, w, bias]`: NCHW convolution (rank 3 = 1-D, rank 4 = 2-D),
    /// `w [M, C/groups, (KH,) KW]` and `bias [M]` constants.
    Conv {
        /// Channel groups (>= 1).
        groups: u32,
        /// Strides, dilations and pads.
        window: Window,
    },
    /// `inputs = [x, w]` or `[x, w, bias]`: transposed convolution, `w [M, C/groups, ...]`
    /// (the layout of `Conv`'s kernel).
    ConvTranspose {
        /// Channel groups (>= 1).
        groups: u32,
        /// Strides, dilations and pads.
        window: Window,
        /// Extra output rows / columns at the end.
        out_pad: [u16; 2],
    },
    /// `inputs = [x]`: max or average pooling over the spatial axes of NCHW `x`.
    Pool {
        /// Max or average (with or without the padding counted).
        kind: PoolKind,
        /// Window size `[KH, KW]` (`KH = 1` for 1-D).
        kernel: [u16; 2],
        /// Strides, dilations and pads.
        window: Window,
    },
    /// `inputs = [x]`: reduction over axes `start..end`, which become 1 in the output.
    Reduce {
        /// The reduction.
        kind: ReduceKind,
        /// First reduced axis.
        start: u8,
        /// One past the last reduced axis.
        end: u8,
    },
    /// `inputs = [x]`: softmax (or log-softmax) over axes `start..end` jointly.
    Softmax {
        /// First axis.
        start: u8,
        /// One past the last axis.
        end: u8,
        /// Log-softmax.
        log: bool,
    },
    /// `inputs = [x]`: resize of the last two axes.
    Resize {
        /// Nearest (with its rounding) or linear.
        mode: ResizeMode,
        /// Coordinate transformation.
        coord: CoordMode,
        /// `[row scale, column scale]` (> 0).
        scales: [f32; 2],
    },
    /// `inputs = [x]`: pad each axis `i` by `begin[i]` before and `end[i]` after.
    Pad {
        /// Constant, reflect, edge or wrap.
        mode: PadMode,
        /// Padding before, per axis (entries past the rank are 0).
        begin: [u16; MAX_RANK],
        /// Padding after, per axis (entries past the rank are 0).
        end: [u16; MAX_RANK],
    },
}

/// Packs two u16 into one attribute word (low half first).
fn pack2(v: [u16; 2]) -> u32 {
    u32::from(v[0]) | (u32::from(v[1]) << 16)
}

/// Inverse of [`pack2`].
fn unpack2(w: u32) -> [u16; 2] {
    [(w & 0xFFFF) as u16, (w >> 16) as u16]
}

fn encode_window(a: &mut [u32; NODE_ATTRS], w: &Window) {
    a[1] = pack2(w.stride);
    a[2] = pack2(w.dilation);
    a[3] = pack2(w.pad_begin);
    a[4] = pack2(w.pad_end);
}

fn decode_window(a: &[u32; NODE_ATTRS]) -> Result<Window, &'static str> {
    let w = Window {
        stride: unpack2(a[1]),
        dilation: unpack2(a[2]),
        pad_begin: unpack2(a[3]),
        pad_end: unpack2(a[4]),
    };
    if w.stride.contains(&0) || w.dilation.contains(&0) {
        return Err("stride or dilation is 0");
    }
    Ok(w)
}

impl NodeOp {
    /// A `Transpose` whose output axis `i` is input axis `perm[i]`.
    ///
    /// Errors: a permutation longer than [`MAX_RANK`] or with an entry that is no axis of
    /// it (the reader's rule).
    pub fn transpose(perm: &[u32]) -> Result<NodeOp, &'static str> {
        if perm.len() > MAX_RANK {
            return Err("transpose rank is larger than 6");
        }
        let mut p = [0u8; MAX_RANK];
        for (slot, v) in p.iter_mut().zip(perm) {
            *slot = u8::try_from(*v).map_err(|_| "transpose perm entry out of range")?;
        }
        let op = NodeOp::Transpose {
            rank: perm.len() as u8,
            perm: p,
        };
        let (code, attrs) = op.encode();
        NodeOp::decode(code, attrs)
    }

    /// A `Pad` of `begin[i]` before and `end[i]` after axis `i`.
    ///
    /// Errors: more than [`MAX_RANK`] axes, or `begin` and `end` of different lengths.
    pub fn pad(mode: PadMode, begin: &[u16], end: &[u16]) -> Result<NodeOp, &'static str> {
        if begin.len() > MAX_RANK || end.len() != begin.len() {
            return Err("Pad has more than 6 axes or unequal begin / end lists");
        }
        let mut b = [0u16; MAX_RANK];
        let mut e = [0u16; MAX_RANK];
        b.iter_mut().zip(begin).for_each(|(s, v)| *s = *v);
        e.iter_mut().zip(end).for_each(|(s, v)| *s = *v);
        Ok(NodeOp::Pad {
            mode,
            begin: b,
            end: e,
        })
    }

    /// Short operation name for `inspect` (`"Dense"`, `"Add"`, `"Gelu"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            NodeOp::Dense => "Dense",
            NodeOp::MatMul => "MatMul",
            NodeOp::Binary(b) => b.name(),
            NodeOp::Unary(u) => u.name(),
            NodeOp::Where => "Where",
            NodeOp::Concat { .. } => "Concat",
            NodeOp::Reshape => "Reshape",
            NodeOp::Expand => "Expand",
            NodeOp::Transpose { .. } => "Transpose",
            NodeOp::Slice { .. } => "Slice",
            NodeOp::Gather => "Gather",
            NodeOp::Conv { .. } => "Conv",
            NodeOp::ConvTranspose { .. } => "ConvTranspose",
            NodeOp::Pool {
                kind: PoolKind::Max,
                ..
            } => "MaxPool",
            NodeOp::Pool { .. } => "AveragePool",
            NodeOp::Reduce { kind, .. } => kind.name(),
            NodeOp::Softmax { log: false, .. } => "Softmax",
            NodeOp::Softmax { log: true, .. } => "LogSoftmax",
            NodeOp::Resize { .. } => "Resize",
            NodeOp::Pad { .. } => "Pad",
        }
    }

    /// Permutation of a `Transpose` as a slice (empty for other ops).
    pub fn perm(&self) -> &[u8] {
        match self {
            NodeOp::Transpose { rank, perm } => perm.get(..usize::from(*rank)).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Encodes as (op code, attribute words).
    pub fn encode(&self) -> (u16, [u32; NODE_ATTRS]) {
        let mut a = [0u32; NODE_ATTRS];
        let code = match *self {
            NodeOp::Dense => opcode::DENSE,
            NodeOp::MatMul => opcode::MATMUL,
            NodeOp::Binary(b) => opcode::BINARY_BASE + b.code(),
            NodeOp::Unary(u) => {
                let (p0, p1) = u.params();
                a[0] = p0.to_bits();
                a[1] = p1.to_bits();
                opcode::UNARY_BASE + u.code()
            }
            NodeOp::Concat { axis } => {
                a[0] = axis;
                opcode::CONCAT
            }
            NodeOp::Reshape => opcode::RESHAPE,
            NodeOp::Expand => opcode::EXPAND,
            NodeOp::Where => opcode::WHERE,
            NodeOp::Gather => opcode::GATHER,
            NodeOp::Transpose { rank, perm } => {
                a[0] = u32::from(rank);
                for (slot, p) in a.iter_mut().skip(1).zip(perm.iter()) {
                    *slot = u32::from(*p);
                }
                opcode::TRANSPOSE
            }
            NodeOp::Slice {
                axis,
                start,
                end,
                step,
            } => {
                a[0] = axis;
                a[1] = start;
                a[2] = end;
                a[3] = step;
                opcode::SLICE
            }
            NodeOp::Conv { groups, window } => {
                a[0] = groups;
                encode_window(&mut a, &window);
                opcode::CONV
            }
            NodeOp::ConvTranspose {
                groups,
                window,
                out_pad,
            } => {
                a[0] = groups;
                encode_window(&mut a, &window);
                a[5] = pack2(out_pad);
                opcode::CONV_TRANSPOSE
            }
            NodeOp::Pool {
                kind,
                kernel,
                window,
            } => {
                a[0] = kind.code();
                encode_window(&mut a, &window);
                a[5] = pack2(kernel);
                opcode::POOL
            }
            NodeOp::Reduce { kind, start, end } => {
                a[0] = kind.code();
                a[1] = u32::from(start);
                a[2] = u32::from(end);
                opcode::REDUCE
            }
            NodeOp::Softmax { start, end, log } => {
                a[0] = u32::from(start);
                a[1] = u32::from(end);
                a[2] = u32::from(log);
                opcode::SOFTMAX
            }
            NodeOp::Resize {
                mode,
                coord,
                scales,
            } => {
                a[0] = mode.code();
                a[1] = coord.code();
                a[2] = scales[0].to_bits();
                a[3] = scales[1].to_bits();
                opcode::RESIZE
            }
            NodeOp::Pad { mode, begin, end } => {
                a[0] = mode.code();
                a[1] = mode.value().to_bits();
                for (slot, (b, e)) in a.iter_mut().skip(2).zip(begin.iter().zip(&end)) {
                    *slot = pack2([*b, *e]);
                }
                opcode::PAD
            }
        };
        (code, a)
    }

    /// Decodes and checks attribute ranges (not shapes): unknown op codes, non-finite
    /// parameters, bad permutations, `step == 0`, and non-zero unused attribute words are
    /// rejected.
    pub fn decode(code: u16, attrs: [u32; NODE_ATTRS]) -> Result<NodeOp, &'static str> {
        let used = |n: usize| attrs.iter().skip(n).all(|w| *w == 0);
        let op = match code {
            opcode::DENSE => NodeOp::Dense,
            opcode::MATMUL => NodeOp::MatMul,
            opcode::CONCAT => NodeOp::Concat { axis: attrs[0] },
            opcode::RESHAPE => NodeOp::Reshape,
            opcode::EXPAND => NodeOp::Expand,
            opcode::WHERE => NodeOp::Where,
            // attrs[0] is the axis; only 0 is defined (checked as an unused word below).
            opcode::GATHER => NodeOp::Gather,
            opcode::TRANSPOSE => {
                let rank = attrs[0];
                if rank as usize > MAX_RANK {
                    return Err("transpose rank is larger than 6");
                }
                let mut perm = [0u8; MAX_RANK];
                let mut seen = [false; MAX_RANK];
                for (slot, w) in perm
                    .iter_mut()
                    .zip(attrs.iter().skip(1))
                    .take(rank as usize)
                {
                    let flag = seen
                        .get_mut(*w as usize)
                        .filter(|_| *w < rank)
                        .ok_or("transpose perm entry out of range")?;
                    if *flag {
                        return Err("transpose perm is not a permutation");
                    }
                    *flag = true;
                    *slot = *w as u8; // < rank <= 6
                }
                if !attrs.iter().skip(1 + rank as usize).all(|w| *w == 0) {
                    return Err("non-zero unused attribute");
                }
                return Ok(NodeOp::Transpose {
                    rank: rank as u8,
                    perm,
                });
            }
            opcode::SLICE => {
                if attrs[3] == 0 {
                    return Err("slice step is 0");
                }
                NodeOp::Slice {
                    axis: attrs[0],
                    start: attrs[1],
                    end: attrs[2],
                    step: attrs[3],
                }
            }
            opcode::CONV | opcode::CONV_TRANSPOSE | opcode::POOL => {
                let window = decode_window(&attrs)?;
                let op = match code {
                    opcode::CONV => NodeOp::Conv {
                        groups: attrs[0],
                        window,
                    },
                    opcode::CONV_TRANSPOSE => NodeOp::ConvTranspose {
                        groups: attrs[0],
                        window,
                        out_pad: unpack2(attrs[5]),
                    },
                    _ => NodeOp::Pool {
                        kind: PoolKind::from_code(attrs[0]).ok_or("unknown pool kind")?,
                        kernel: unpack2(attrs[5]),
                        window,
                    },
                };
                if matches!(
                    op,
                    NodeOp::Conv { groups: 0, .. } | NodeOp::ConvTranspose { groups: 0, .. }
                ) {
                    return Err("convolution groups is 0");
                }
                if let NodeOp::Pool { kernel, .. } = op {
                    if kernel.contains(&0) {
                        return Err("pool kernel size is 0");
                    }
                }
                let n = if code == opcode::CONV { 5 } else { 6 };
                if !used(n) {
                    return Err("non-zero unused attribute");
                }
                return Ok(op);
            }
            opcode::REDUCE => {
                let (start, end) = axis_range(attrs[1], attrs[2])?;
                NodeOp::Reduce {
                    kind: ReduceKind::from_code(attrs[0]).ok_or("unknown reduction")?,
                    start,
                    end,
                }
            }
            opcode::SOFTMAX => {
                let (start, end) = axis_range(attrs[0], attrs[1])?;
                if attrs[2] > 1 {
                    return Err("softmax log flag is not 0 or 1");
                }
                NodeOp::Softmax {
                    start,
                    end,
                    log: attrs[2] == 1,
                }
            }
            opcode::RESIZE => {
                let scales = [f32::from_bits(attrs[2]), f32::from_bits(attrs[3])];
                if !scales.iter().all(|s| s.is_finite() && *s > 0.0) {
                    return Err("resize scale is not a positive finite number");
                }
                NodeOp::Resize {
                    mode: ResizeMode::from_code(attrs[0]).ok_or("unknown resize mode")?,
                    coord: CoordMode::from_code(attrs[1])
                        .ok_or("unknown resize coordinate mode")?,
                    scales,
                }
            }
            opcode::PAD => {
                let value = f32::from_bits(attrs[1]);
                let mode = PadMode::from_code(attrs[0], value).ok_or("unknown pad mode")?;
                if mode.value().to_bits() != attrs[1] {
                    return Err("non-zero unused attribute");
                }
                if value.is_nan() {
                    return Err("pad value is NaN");
                }
                let mut begin = [0u16; MAX_RANK];
                let mut end = [0u16; MAX_RANK];
                for ((b, e), w) in begin
                    .iter_mut()
                    .zip(end.iter_mut())
                    .zip(attrs.iter().skip(2))
                {
                    [*b, *e] = unpack2(*w);
                }
                return Ok(NodeOp::Pad { mode, begin, end });
            }
            c if (opcode::BINARY_BASE..opcode::BINARY_BASE + 0x100).contains(&c) => {
                NodeOp::Binary(Binary::from_code(c - opcode::BINARY_BASE).ok_or("unknown op code")?)
            }
            c if (opcode::UNARY_BASE..opcode::UNARY_BASE + 0x100).contains(&c) => {
                let u = Unary::from_code(
                    c - opcode::UNARY_BASE,
                    f32::from_bits(attrs[0]),
                    f32::from_bits(attrs[1]),
                )
                .ok_or("unknown op code")?;
                let (p0, p1) = u.params();
                if !p0.is_finite() || !p1.is_finite() {
                    return Err("activation parameter is not finite");
                }
                // Parameters not used by this activation must be zero (canonical form).
                if p0.to_bits() != attrs[0] || p1.to_bits() != attrs[1] || !used(2) {
                    return Err("non-zero unused attribute");
                }
                return Ok(NodeOp::Unary(u));
            }
            _ => return Err("unknown op code"),
        };
        let n_used = match op {
            NodeOp::Concat { .. } => 1,
            NodeOp::Slice { .. } | NodeOp::Resize { .. } => 4,
            NodeOp::Reduce { .. } | NodeOp::Softmax { .. } => 3,
            _ => 0,
        };
        if !used(n_used) {
            return Err("non-zero unused attribute");
        }
        Ok(op)
    }

    /// Allowed number of inputs `(min, max)`.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            NodeOp::Dense | NodeOp::Conv { .. } | NodeOp::ConvTranspose { .. } => (2, 3),
            NodeOp::MatMul | NodeOp::Binary(_) | NodeOp::Gather => (2, 2),
            NodeOp::Where => (3, 3),
            NodeOp::Concat { .. } => (1, u16::MAX as usize),
            _ => (1, 1),
        }
    }
}

/// Decodes an axis range `start..end` (`start < end <= 6`).
fn axis_range(start: u32, end: u32) -> Result<(u8, u8), &'static str> {
    if start >= end || end as usize > MAX_RANK {
        return Err("axis range is empty or past rank 6");
    }
    Ok((start as u8, end as u8))
}

/// Checks a graph input's shape against its role; returns the state dimension `D` it
/// implies for `X` / `Xt` (and `None` for `T`).
pub(crate) fn check_role_shape(
    role: InputRole,
    shape: &Shape,
) -> Result<Option<u64>, &'static str> {
    match role {
        InputRole::X => {
            if shape.batch_axis() != Some(0) {
                return Err("input `x` must have the batch dim first");
            }
            Ok(Some(shape.row_elements().ok_or("input `x` is too large")?))
        }
        InputRole::Xt => {
            if shape.rank() != 2 || shape.batch_axis() != Some(0) {
                return Err("input `xt` must have shape [B, D + 1]");
            }
            match shape.dim(1) {
                Some(Dim::Fixed(w)) if w >= 2 => Ok(Some(u64::from(w) - 1)),
                _ => Err("input `xt` must have shape [B, D + 1] with D >= 1"),
            }
        }
        InputRole::T | InputRole::Guidance | InputRole::Step => {
            let one_per_row = shape.batch_axis() == Some(0) && shape.row_elements() == Some(1);
            let scalar = !shape.has_batch() && shape.row_elements() == Some(1);
            if one_per_row || scalar {
                Ok(None)
            } else if role == InputRole::T {
                Err("input `t` must have shape [], [1], [B] or [B, 1]")
            } else if role == InputRole::Step {
                Err("input `step` must have shape [], [1], [B] or [B, 1]")
            } else {
                Err("input `guidance` must have shape [], [1], [B] or [B, 1]")
            }
        }
        InputRole::Label => {
            let per_row = shape.batch_axis() == Some(0)
                && shape.rank() <= 2
                && shape.row_elements() == Some(1);
            if per_row {
                Ok(None)
            } else {
                Err("input `label` must have shape [B] or [B, 1]")
            }
        }
        InputRole::Cond => {
            if shape.rank() == 2 && shape.batch_axis() == Some(0) {
                Ok(None)
            } else {
                Err("input `cond` must have shape [B, C]")
            }
        }
        InputRole::Data => {
            if shape.has_batch() {
                Err("a plain-graph input has no batch dim")
            } else {
                Ok(None)
            }
        }
    }
}

/// Checks the graph output's shape: batch dim first and, for a velocity field (a model
/// with a time input), `D` elements per row. A model without a time input (a decoder, a
/// rollout step) may map the state to rows of any size.
pub(crate) fn check_output_shape(
    shape: &Shape,
    state_dim: u64,
    velocity: bool,
) -> Result<(), &'static str> {
    if state_dim == 0 {
        // A plain graph (inputs all `Data`): a fixed-shape output.
        return if shape.has_batch() {
            Err("a plain graph's output has no batch dim")
        } else {
            Ok(())
        };
    }
    if shape.batch_axis() != Some(0) {
        return Err("output must have the batch dim first");
    }
    if velocity && shape.row_elements() != Some(state_dim) {
        return Err("output row size differs from the state dimension");
    }
    if shape.row_elements().is_none_or(|r| r == 0) {
        return Err("output rows are empty or too large");
    }
    Ok(())
}

/// Maps a rule violation at node `node` to an [`Error`].
pub(crate) fn node_err(node: usize, what: &'static str) -> Error {
    Error::InvalidNode {
        node: u32::try_from(node).unwrap_or(u32::MAX),
        what,
    }
}

/// Maps a rule violation at tensor `tensor` to an [`Error`].
pub(crate) fn tensor_err(tensor: usize, what: &'static str) -> Error {
    Error::InvalidTensor {
        tensor: u32::try_from(tensor).unwrap_or(u32::MAX),
        what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_round_trips_through_its_encoding() {
        let mut ops = std::vec![
            NodeOp::Dense,
            NodeOp::MatMul,
            NodeOp::Concat { axis: 3 },
            NodeOp::Reshape,
            NodeOp::Expand,
            NodeOp::Where,
            NodeOp::Gather,
            NodeOp::Transpose {
                rank: 3,
                perm: [2, 0, 1, 0, 0, 0]
            },
            NodeOp::Transpose {
                rank: 0,
                perm: [0; MAX_RANK]
            },
            NodeOp::Slice {
                axis: 1,
                start: 2,
                end: 9,
                step: 3
            },
            NodeOp::Conv {
                groups: 2,
                window: Window {
                    stride: [2, 1],
                    dilation: [1, 3],
                    pad_begin: [1, 0],
                    pad_end: [0, 2],
                },
            },
            NodeOp::ConvTranspose {
                groups: 1,
                window: Window::UNIT,
                out_pad: [1, 0],
            },
            NodeOp::Pool {
                kind: PoolKind::AverageIncludePad,
                kernel: [3, 2],
                window: Window::UNIT,
            },
            NodeOp::Softmax {
                start: 1,
                end: 3,
                log: true,
            },
            NodeOp::Resize {
                mode: ResizeMode::Linear,
                coord: CoordMode::AlignCorners,
                scales: [2.0, 0.5],
            },
            NodeOp::Pad {
                mode: PadMode::Constant(-1.5),
                begin: [0, 1, 2, 0, 0, 0],
                end: [0, 0, 3, 0, 0, 0],
            },
            NodeOp::Pad {
                mode: PadMode::Reflect,
                begin: [0; MAX_RANK],
                end: [1; MAX_RANK],
            },
        ];
        for kind in ReduceKind::ALL {
            ops.push(NodeOp::Reduce {
                kind,
                start: 1,
                end: 2,
            });
        }
        for c in 0..=11 {
            ops.push(NodeOp::Binary(Binary::from_code(c).unwrap()));
        }
        for c in 0..=24 {
            ops.push(NodeOp::Unary(Unary::from_code(c, 0.25, 1.5).unwrap()));
        }
        for op in ops {
            let (code, attrs) = op.encode();
            assert_eq!(NodeOp::decode(code, attrs), Ok(op), "{}", op.name());
        }
    }

    #[test]
    fn decode_rejects_bad_attributes() {
        let mut a = [0u32; NODE_ATTRS];
        assert!(NodeOp::decode(0x7777, a).is_err());
        assert!(NodeOp::decode(opcode::BINARY_BASE + 12, a).is_err());
        assert!(NodeOp::decode(opcode::UNARY_BASE + 25, a).is_err());
        assert!(NodeOp::decode(opcode::SLICE, a).is_err()); // step 0
        a[7] = 1;
        assert!(NodeOp::decode(opcode::DENSE, a).is_err()); // unused word
        assert!(NodeOp::decode(opcode::WHERE, a).is_err()); // unused word
        assert!(NodeOp::decode(opcode::WHERE + 1, [0; NODE_ATTRS]).is_err());
        let mut p = [0u32; NODE_ATTRS];
        p[0] = 2;
        p[1] = 1;
        p[2] = 1;
        assert!(NodeOp::decode(opcode::TRANSPOSE, p).is_err()); // not a permutation
        p[2] = 2;
        assert!(NodeOp::decode(opcode::TRANSPOSE, p).is_err()); // out of range
        p[0] = 7;
        assert!(NodeOp::decode(opcode::TRANSPOSE, p).is_err()); // rank > 6
        let mut u = [0u32; NODE_ATTRS];
        u[0] = f32::INFINITY.to_bits();
        assert!(NodeOp::decode(opcode::UNARY_BASE + 1, u).is_err()); // non-finite alpha
        u[0] = 1.0f32.to_bits();
        assert!(NodeOp::decode(opcode::UNARY_BASE, u).is_err()); // Relu has no alpha
    }

    #[test]
    fn shapes() {
        let s = Shape::new(&[Dim::Batch, Dim::Fixed(3), Dim::Fixed(4)]).unwrap();
        assert_eq!(s.rank(), 3);
        assert_eq!(s.batch_axis(), Some(0));
        assert_eq!(s.row_elements(), Some(12));
        assert_eq!(s.elements(5), Some(60));
        assert_eq!(std::format!("{s}"), "[B, 3, 4]");
        assert_eq!(Shape::SCALAR.elements(7), Some(1));
        assert!(Shape::new(&[Dim::Batch, Dim::Batch]).is_err());
        assert!(Shape::new(&[Dim::Fixed(0)]).is_err());
        assert!(Shape::new(&[Dim::Fixed(1); 7]).is_err());
        assert!(Shape::from_raw(2, 2, [1, 1, 0, 0, 0, 0]).is_err());
        assert!(Shape::from_raw(2, 0, [1, 1, 0, 0, 0, 0]).is_err());
        assert!(Shape::from_raw(2, NO_BATCH, [1, 1, 1, 0, 0, 0]).is_err());
        let big = Shape::new(&[Dim::Batch, Dim::Fixed(u32::MAX), Dim::Fixed(u32::MAX)]).unwrap();
        assert_eq!(big.elements(usize::MAX), None);
    }

    #[test]
    fn symbolic_shape_rules() {
        let sh = |d: &[Dim]| Shape::new(d).unwrap();
        let (b, f) = (Dim::Batch, Dim::Fixed);
        let add = NodeOp::Binary(Binary::Add);
        let check = |op: &NodeOp, ins: &[Shape], out: Shape| {
            rules::check_node(op, ins.len(), |i| ins.get(i).copied(), &out)
        };
        assert!(check(&add, &[sh(&[b, f(4)]), sh(&[f(4)])], sh(&[b, f(4)])).is_ok());
        assert!(check(&add, &[sh(&[b, f(1)]), sh(&[f(1), f(4)])], sh(&[b, f(4)])).is_ok());
        assert!(check(&add, &[sh(&[b, f(4)]), sh(&[f(3), f(4)])], sh(&[b, f(4)])).is_err());
        assert!(check(&add, &[sh(&[b, f(4)]), sh(&[f(4), b])], sh(&[b, f(4)])).is_err());
        assert!(check(&add, &[sh(&[b])], sh(&[b])).is_err()); // arity
        let mm = NodeOp::MatMul;
        assert!(check(
            &mm,
            &[sh(&[b, f(2), f(3)]), sh(&[f(3), f(5)])],
            sh(&[b, f(2), f(5)])
        )
        .is_ok());
        assert!(check(&mm, &[sh(&[f(2), b]), sh(&[b, f(5)])], sh(&[f(2), f(5)])).is_ok());
        assert!(check(
            &mm,
            &[sh(&[f(2), f(4)]), sh(&[f(3), f(5)])],
            sh(&[f(2), f(5)])
        )
        .is_err());
        let cat = NodeOp::Concat { axis: 0 };
        assert!(check(&cat, &[sh(&[b, f(2)]), sh(&[b, f(2)])], sh(&[b, f(2)])).is_err());
        let ex = NodeOp::Expand;
        assert!(check(&ex, &[sh(&[f(1), f(4)])], sh(&[b, f(4)])).is_ok());
        assert!(check(&ex, &[sh(&[f(2), f(4)])], sh(&[b, f(4)])).is_err());
        let wh = NodeOp::Where;
        let (bf4, one) = (sh(&[b, f(4)]), Shape::SCALAR);
        assert!(check(&wh, &[bf4, bf4, bf4], bf4).is_ok());
        assert!(check(&wh, &[bf4, sh(&[f(4)]), one], bf4).is_ok());
        assert!(check(
            &wh,
            &[sh(&[f(3), f(1), f(1)]), bf4, one],
            sh(&[f(3), b, f(4)])
        )
        .is_ok());
        assert!(check(&wh, &[one, sh(&[b, f(1)]), sh(&[f(4)])], bf4).is_ok());
        assert!(check(&wh, &[one, one, one], one).is_ok());
        assert!(check(&wh, &[bf4, bf4], bf4).is_err()); // arity
        assert!(check(&wh, &[bf4, bf4, bf4, bf4], bf4).is_err()); // arity
        assert!(check(&wh, &[bf4, sh(&[f(3)]), bf4], bf4).is_err()); // 3 vs 4
        assert!(check(&wh, &[sh(&[f(2), f(4)]), bf4, bf4], bf4).is_err()); // B vs 2
        assert!(check(&wh, &[bf4, bf4, bf4], sh(&[f(1), f(4)])).is_err()); // wrong output
        assert!(check(&wh, &[one, one, one], sh(&[f(1)])).is_err()); // wrong output rank
        assert!(check(&wh, &[sh(&[b, f(1)]), sh(&[f(1), b]), one], bf4).is_err()); // [B, B]
        let rs = NodeOp::Reshape;
        assert!(check(&rs, &[sh(&[b, f(2), f(3)])], sh(&[b, f(6)])).is_ok());
        assert!(check(&rs, &[sh(&[f(2), b, f(3)])], sh(&[b, f(6)])).is_ok());
        assert!(check(&rs, &[sh(&[b, f(6)])], sh(&[f(6)])).is_err());
    }
}
