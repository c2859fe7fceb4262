//! The `.frt` file format, versions 1 to 3: constants, record layouts, the shape/attribute rules
//! shared by the writer and the reader, and aligned byte buffers.
//!
//! The normative description is `docs/frt-format.md`; this module is its implementation.
//! Reading is done by [`crate::Model::from_bytes`]; writing (feature `alloc`) by [`crate::write`].
//!
//! Everything is little-endian. A file is a 32-byte header, a section table, and
//! 16-byte aligned sections (tensors, nodes, weights, memory plan, signature, metadata,
//! names). The CRC-32 in the header covers every byte of the file except itself.

use core::fmt;

use crate::Error;

mod aligned;
pub(crate) mod compact;
mod node;
pub mod pipeline;
pub(crate) mod rules;
pub mod sampling;

pub use aligned::Aligned16;
#[cfg(feature = "alloc")]
pub use aligned::AlignedBytes;
pub(crate) use node::opcode_linked;
pub use node::NodeOp;

/// The four magic bytes every `.frt` file starts with.
pub const MAGIC: [u8; 4] = *b"FLRT";
/// The format version of files whose constants are all f32: every runtime since the first
/// reads it, and the writer uses it whenever it can.
pub const VERSION: u16 = 1;
/// The format version of files with f16, bf16 or int8 constants ([`WeightType`]).
pub const VERSION_TYPED_WEIGHTS: u16 = 2;
/// The format version with compact records: tensor and node records coded with
/// variable-length integers behind an offset index, each arena tensor's plan offset in its
/// own record, sections and constants 4-byte aligned (docs/frt-format.md, "Version 3").
/// What the writer emits by default.
pub const VERSION_COMPACT: u16 = 3;
/// Alignment (bytes) of sections and of each constant's data in version 3.
pub const ALIGN_COMPACT: usize = 4;
/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 32;
/// Length of one section-table entry in bytes (versions 1 and 2).
pub const SECTION_ENTRY_LEN: usize = 24;
/// Length of one section-table entry in version 3: `u16 kind, u16 flags, u64 length`; the
/// offset is implied ([`section_entry`]).
pub const SECTION_ENTRY_LEN_COMPACT: usize = 12;
/// Most sections a file may list.
pub const MAX_SECTIONS: usize = 64;
/// Section flag bit: a reader that does not know the section's kind must reject the file.
pub const SECTION_FLAG_REQUIRED: u16 = 1;
/// Alignment (bytes) of every arena offset, and in versions 1 and 2 of sections and of
/// each constant's data.
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
/// Element type code of f16 constants (version 2).
pub const DTYPE_F16: u8 = 1;
/// Element type code of bf16 constants (version 2).
pub const DTYPE_BF16: u8 = 2;
/// Element type code of int8 constants with one f32 scale per channel (version 2).
pub const DTYPE_I8: u8 = 3;
/// Element type code of int8 constants with one bfloat16 scale per channel (version 2; what
/// the writer emits for int8 in fixed-record files).
pub const DTYPE_I8_BF16_SCALES: u8 = 4;
/// Element type code of int8 constants with 8-bit scales: one exponent byte for the tensor,
/// then one byte per channel ([`ScaleType::Mini`]; version 3).
pub const DTYPE_I8_MINI_SCALES: u8 = 5;

/// The rule on typed constants, as the reader's and the writer's error text.
pub const TYPED_INPUT_RULE: &str = "a typed constant feeds an input that cannot read it (f16 / \
     bf16 / int8: the weights of Dense, Conv, ConvTranspose and Gather and the bias of Dense, \
     Conv and ConvTranspose; everything else reads f32)";

/// How the per-channel scales of an int8 constant are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum ScaleType {
    /// 4 bytes per channel (dtype 3).
    #[default]
    F32,
    /// bfloat16, 2 bytes per channel (dtype 4): the high half of the f32 bits, widened by
    /// one shift. The writer rounds the scale up to bfloat16 and quantizes against the
    /// rounded scale, so the coarser scale costs no systematic error.
    Bf16,
    /// 8-bit scales (dtype 5, version 3): a tensor-wide biased exponent `base` (one byte,
    /// 16..=254), then one byte per channel, `code = e << 4 | m`, standing for
    /// `2^(base - 127 - e) · (1 + m/16)`: the f32 with exponent field `base - e` and the
    /// top four mantissa bits `m` ([`mini_scale`]). Sixteen binades below the largest
    /// scale, at most 1/16 coarser than the exact scale; the writer rounds up, as for
    /// bfloat16.
    Mini,
}

impl ScaleType {
    /// Bytes per scale (per channel; [`ScaleType::Mini`] adds one byte per tensor).
    pub fn bytes(self) -> u64 {
        match self {
            ScaleType::F32 => 4,
            ScaleType::Bf16 => 2,
            ScaleType::Mini => 1,
        }
    }

    /// Bytes stored once per tensor before the per-channel scales.
    pub fn header_bytes(self) -> u64 {
        match self {
            ScaleType::Mini => 1,
            _ => 0,
        }
    }
}

pub use crate::ops::{mini_scale, MINI_BASE_RANGE};

/// How a constant's values are stored in the file (a tensor record's `dtype`; see
/// docs/frt-format.md, "Weight types"). Every computed tensor is f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum WeightType {
    /// 4 bytes per value.
    #[default]
    F32,
    /// IEEE half precision, 2 bytes per value (rounded to nearest even at export).
    F16,
    /// bfloat16, 2 bytes per value (rounded to nearest even at export).
    Bf16,
    /// int8, symmetric, with one scale per index of the `axis` dim: 1 byte per value plus
    /// 4 (f32), 2 (bfloat16) or 1 (8-bit) bytes per channel.
    Int8 {
        /// The channel axis (< rank), or the rank itself for one scale for the whole tensor
        /// (version 3).
        axis: u8,
        /// How the scales are stored.
        scales: ScaleType,
    },
}

impl WeightType {
    /// The record's `dtype` code.
    pub fn code(self) -> u8 {
        match self {
            WeightType::F32 => DTYPE_F32,
            WeightType::F16 => DTYPE_F16,
            WeightType::Bf16 => DTYPE_BF16,
            WeightType::Int8 {
                scales: ScaleType::F32,
                ..
            } => DTYPE_I8,
            WeightType::Int8 {
                scales: ScaleType::Bf16,
                ..
            } => DTYPE_I8_BF16_SCALES,
            WeightType::Int8 {
                scales: ScaleType::Mini,
                ..
            } => DTYPE_I8_MINI_SCALES,
        }
    }

    /// Short name (`f32`, `f16`, `bf16`, `int8`).
    pub fn name(self) -> &'static str {
        match self {
            WeightType::F32 => "f32",
            WeightType::F16 => "f16",
            WeightType::Bf16 => "bf16",
            WeightType::Int8 { .. } => "int8",
        }
    }

    /// The number of scales a constant of `shape` stored in this type carries: the size of
    /// the int8 channel axis (1 for one scale per tensor), 0 for the other types.
    ///
    /// Errors: an int8 axis that is above the rank or the batch dim.
    pub fn channels(self, shape: &Shape) -> Result<u64, &'static str> {
        match self {
            WeightType::Int8 { axis, .. } => shape
                .channel_layout(usize::from(axis))
                .map(|(channels, _)| channels as u64)
                .ok_or("int8 channel axis is not a fixed dim"),
            _ => Ok(0),
        }
    }

    /// Bytes of a constant of `elements` values whose channel axis has `channels` entries:
    /// the values (int8: padded to a multiple of 4), then for int8 the scales. `None` on
    /// overflow.
    pub fn data_len(self, elements: u64, channels: u64) -> Option<u64> {
        match self {
            WeightType::F32 => elements.checked_mul(4),
            WeightType::F16 | WeightType::Bf16 => elements.checked_mul(2),
            WeightType::Int8 { scales, .. } => {
                let values = elements.checked_add(3)? & !3;
                values
                    .checked_add(scales.header_bytes())?
                    .checked_add(channels.checked_mul(scales.bytes())?)
            }
        }
    }
}

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
    /// `Widen`: a constant in any stored type, as f32.
    pub const WIDEN: u16 = 0x0016;
    /// `Transpose { perm }`.
    pub const TRANSPOSE: u16 = 0x0013;
    /// `Slice { axis, start, end, step }`.
    pub const SLICE: u16 = 0x0014;
    /// `Where`: `cond != 0 ? a : b`, three inputs broadcast together.
    pub const WHERE: u16 = 0x0020;
    /// `Lut { of }`: a unary function by table lookup on the int8-quantized input.
    pub const LUT: u16 = 0x0021;
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
    /// `Norm { start, end, eps }`: centre and scale to unit variance over an axis range.
    pub const NORM: u16 = 0x0052;
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

/// Entry `i` of the section table of a file of format `version` with `count` sections:
/// `(kind, flags, offset, length)`. Versions 1 and 2 store the offset; version 3 implies it:
/// section 0 starts at the first multiple of 4 after the table, and each later one at the
/// first multiple of 4 after the end of the one before. `None` when the table runs past
/// `file` or an offset overflows. For tools that read or patch files; the loader checks
/// the rest (alignment, bounds, overlap, reserved fields).
pub fn section_entry(
    file: &[u8],
    version: u16,
    count: usize,
    i: usize,
) -> Option<(u16, u16, u64, u64)> {
    if i >= count {
        return None;
    }
    if version < VERSION_COMPACT {
        let o = HEADER_LEN.checked_add(i.checked_mul(SECTION_ENTRY_LEN)?)?;
        return Some((
            le_u16(file, o)?,
            le_u16(file, o + 2)?,
            le_u64(file, o + 8)?,
            le_u64(file, o + 16)?,
        ));
    }
    let entry = |j: usize| -> Option<(u16, u16, u64)> {
        let o = HEADER_LEN.checked_add(j.checked_mul(SECTION_ENTRY_LEN_COMPACT)?)?;
        Some((le_u16(file, o)?, le_u16(file, o + 2)?, le_u64(file, o + 4)?))
    };
    let up4 = |n: u64| Some(n.checked_add(3)? & !3);
    let table_end = HEADER_LEN.checked_add(count.checked_mul(SECTION_ENTRY_LEN_COMPACT)?)?;
    let mut offset = up4(table_end as u64)?;
    for j in 0..i {
        offset = up4(offset.checked_add(entry(j)?.2)?)?;
    }
    let (kind, flags, length) = entry(i)?;
    Some((kind, flags, offset, length))
}

/// CRC-32 (IEEE 802.3, as zlib / `crc32fast`) of a whole file image, skipping the 4
/// checksum bytes at offset 16. Tools that patch a file recompute it with this.
pub fn file_checksum(file: &[u8]) -> u32 {
    let mut h = crate::crc::Hasher::new();
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

    /// The per-channel layout along `axis` (int8 weight scales): `(channels, inner)`, the
    /// size of `axis` and the product of the dims after it, so element `e` belongs to
    /// channel `(e / inner) % channels`. `axis` equal to the rank of a shape without a batch
    /// dim is one channel for the whole tensor, `(1, 1)`. `None` when `axis` is above the
    /// rank, one of those dims is the batch dim, or the product overflows.
    pub fn channel_layout(&self, axis: usize) -> Option<(usize, usize)> {
        if axis == self.rank() && !self.has_batch() {
            // One channel: the whole tensor (per-tensor int8 scales, version 3).
            return Some((1, 1));
        }
        let fixed = |d: Dim| match d {
            Dim::Fixed(n) => usize::try_from(n).ok(),
            Dim::Batch => None,
        };
        let channels = fixed(self.dim(axis)?)?;
        let inner = self
            .dims()
            .skip(axis + 1)
            .try_fold(1usize, |acc, d| acc.checked_mul(fixed(d)?))?;
        Some((channels, inner))
    }

    /// Product of the fixed dims: elements per batch row for a batched shape, the total
    /// element count otherwise. `None` on u64 overflow.
    // Its unrolled 64-bit products are large on a 32-bit core: one copy for the firmware.
    #[cfg_attr(feature = "compact-code", inline(never))]
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
    /// supplies through [`crate::field::Conditioning`].
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
mod tests;
