//! Node operations as the file stores them ([`NodeOp`]): the one op enum of flowrt (the
//! exporter's `ir::Op` is this type), with its attribute encoding and checks.

use super::MAX_RANK;
use super::{opcode, NODE_ATTRS};
use crate::linked::{has_binary, has_node, has_unary, node, not_linked, All, Selection};
use crate::ops::{Binary, CoordMode, PadMode, PoolKind, ReduceKind, ResizeMode, Unary, Window};
use crate::Error;

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
    /// `w [C/groups, (KH,) KW, M]` (channel-last) and `bias [M]` constants.
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
    /// `inputs = [x]`: normalization over axes `start..end` jointly (what ONNX's
    /// LayerNormalization, GroupNormalization and InstanceNormalization do before their
    /// scale and shift): with `n` the number of values normalized together, `μ = (Σ x)·(1/n)`,
    /// `c = x − μ`, `y = c · (1 / sqrt(Σ c² / n + eps))`, every sum in ascending order — the
    /// arithmetic of the decomposed graph tract makes of them, bit for bit.
    Norm {
        /// First axis.
        start: u8,
        /// One past the last axis.
        end: u8,
        /// Added to the variance (finite, `>= 0`).
        eps: f32,
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
    /// `inputs = [x, table, scale]`: a unary function by table lookup (the full-integer
    /// mode's activations, `flowrt export --activations int8`): `x` quantized like a
    /// full-integer Dense input, `q = clamp(round(x / scale), -127, 127)`, then `out =
    /// table[q + 127]`; a NaN `x` gives NaN. `table` is a constant of 255 values (f32, f16 or
    /// bf16), `scale` a constant `[1]` (finite, `> 0`). `of` names the function the table
    /// holds, for `inspect` only: the values come from the table.
    Lut {
        /// The function tabulated.
        of: Unary,
    },
    /// `inputs = [c]`: the values of constant `c` as f32, `c` stored in any type (f32, f16,
    /// bf16, int8; [`crate::format::WeightType`]). How a typed constant reaches an input that
    /// reads f32 (an element-wise operand, a norm parameter): the exporter stores such
    /// constants in the file's smaller type and widens them here, into the arena.
    Widen,
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
    /// Whether input `j` is a weight input that may be a constant stored as f16, bf16 or
    /// int8 ([`crate::format::WeightType`]): Dense's and (transposed) Conv's kernel, Gather's
    /// table. Every other input reads f32.
    pub fn reads_typed_weights(&self, j: usize) -> bool {
        matches!(
            (self, j),
            (NodeOp::Dense, 1)
                | (NodeOp::Conv { .. }, 1)
                | (NodeOp::ConvTranspose { .. }, 1)
                | (NodeOp::Gather, 0)
        )
    }

    /// Whether input `j` is a bias that may be a constant stored as f16 or bf16 (not int8):
    /// the third input of Dense, Conv and ConvTranspose.
    pub fn reads_typed_bias(&self, j: usize) -> bool {
        j == 2
            && matches!(
                self,
                NodeOp::Dense | NodeOp::Conv { .. } | NodeOp::ConvTranspose { .. }
            )
    }

    /// Whether input `j` may be a constant stored as `stored` (the reader's and the
    /// writer's rule): f32 anywhere; f16, bf16 and int8 for weight inputs, biases and the
    /// input of `Widen`; f16 and bf16 for a `Lut`'s table.
    pub fn accepts_stored(&self, j: usize, stored: crate::format::WeightType) -> bool {
        use crate::format::WeightType;
        match stored {
            WeightType::F32 => true,
            _ if matches!((self, j), (NodeOp::Widen, 0)) => true,
            WeightType::F16 | WeightType::Bf16 => {
                self.reads_typed_weights(j)
                    || self.reads_typed_bias(j)
                    || matches!((self, j), (NodeOp::Lut { .. }, 1))
            }
            WeightType::Int8 { .. } => self.reads_typed_weights(j) || self.reads_typed_bias(j),
        }
    }

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
            NodeOp::Norm { .. } => "Norm",
            NodeOp::Resize { .. } => "Resize",
            NodeOp::Pad { .. } => "Pad",
            NodeOp::Widen => "Widen",
            NodeOp::Lut { .. } => "Lut",
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
            NodeOp::Widen => opcode::WIDEN,
            NodeOp::Lut { of } => {
                let (p0, p1) = of.params();
                a[0] = u32::from(of.code());
                a[1] = p0.to_bits();
                a[2] = p1.to_bits();
                opcode::LUT
            }
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
            NodeOp::Norm { start, end, eps } => {
                a[0] = u32::from(start);
                a[1] = u32::from(end);
                a[2] = eps.to_bits();
                opcode::NORM
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
        NodeOp::decode_linked::<All>(code, attrs)
    }

    /// [`NodeOp::decode`] of the op kinds `S` links: the code of any other kind is
    /// rejected as unknown (so a build does not contain the attribute checks of kinds it
    /// does not link; callers check [`opcode_linked`] first to name them).
    pub(crate) fn decode_linked<S: Selection + ?Sized>(
        code: u16,
        attrs: [u32; NODE_ATTRS],
    ) -> Result<NodeOp, &'static str> {
        let has = has_node::<S>;
        let used = |n: usize| attrs.iter().skip(n).all(|w| *w == 0);
        let op = match code {
            opcode::DENSE if has(node::DENSE) || has(node::DENSE_Q8) => NodeOp::Dense,
            opcode::MATMUL if has(node::MATMUL) => NodeOp::MatMul,
            opcode::CONCAT if has(node::CONCAT) => NodeOp::Concat { axis: attrs[0] },
            opcode::RESHAPE if has(node::RESHAPE) => NodeOp::Reshape,
            opcode::WIDEN if has(node::WIDEN) => NodeOp::Widen,
            opcode::LUT if has(node::LUT) => {
                let code = u16::try_from(attrs[0]).map_err(|_| "unknown tabulated function")?;
                let of = Unary::from_code(code, f32::from_bits(attrs[1]), f32::from_bits(attrs[2]))
                    .ok_or("unknown tabulated function")?;
                let (p0, p1) = of.params();
                if !p0.is_finite() || !p1.is_finite() {
                    return Err("activation parameter is not finite");
                }
                if p0.to_bits() != attrs[1] || p1.to_bits() != attrs[2] || !used(3) {
                    return Err("non-zero unused attribute");
                }
                return Ok(NodeOp::Lut { of });
            }
            opcode::EXPAND if has(node::EXPAND) => NodeOp::Expand,
            opcode::WHERE if has(node::WHERE) => NodeOp::Where,
            // attrs[0] is the axis; only 0 is defined (checked as an unused word below).
            opcode::GATHER if has(node::GATHER) => NodeOp::Gather,
            opcode::TRANSPOSE if has(node::TRANSPOSE) => {
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
            opcode::SLICE if has(node::SLICE) => {
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
            // Their own checks of the unused words (5 or 6 used).
            opcode::CONV if has(node::CONV) || has(node::CONV_Q8) => {
                return NodeOp::decode_window_op(code, attrs)
            }
            opcode::CONV_TRANSPOSE if has(node::CONV_TRANSPOSE) => {
                return NodeOp::decode_window_op(code, attrs)
            }
            opcode::POOL if has(node::POOL) => return NodeOp::decode_window_op(code, attrs),
            opcode::REDUCE if has(node::REDUCE) => {
                let (start, end) = axis_range(attrs[1], attrs[2])?;
                NodeOp::Reduce {
                    kind: ReduceKind::from_code(attrs[0]).ok_or("unknown reduction")?,
                    start,
                    end,
                }
            }
            opcode::SOFTMAX if has(node::SOFTMAX) => {
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
            opcode::NORM if has(node::NORM) => {
                let (start, end) = axis_range(attrs[0], attrs[1])?;
                let eps = f32::from_bits(attrs[2]);
                if !(eps.is_finite() && eps >= 0.0) || attrs[2] == (-0.0f32).to_bits() {
                    return Err("norm epsilon is not a finite number >= 0");
                }
                NodeOp::Norm { start, end, eps }
            }
            opcode::RESIZE if has(node::RESIZE) => {
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
            opcode::PAD if has(node::PAD) => {
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
            c if (opcode::BINARY_BASE..opcode::BINARY_BASE + 0x100).contains(&c)
                && has(node::BINARY) =>
            {
                NodeOp::Binary(Binary::from_code(c - opcode::BINARY_BASE).ok_or("unknown op code")?)
            }
            c if (opcode::UNARY_BASE..opcode::UNARY_BASE + 0x100).contains(&c)
                && has(node::UNARY) =>
            {
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
            NodeOp::Reduce { .. } | NodeOp::Softmax { .. } | NodeOp::Norm { .. } => 3,
            _ => 0,
        };
        if !used(n_used) {
            return Err("non-zero unused attribute");
        }
        Ok(op)
    }

    /// Decodes a Conv, ConvTranspose or Pool record (`code` is one of them).
    fn decode_window_op(code: u16, attrs: [u32; NODE_ATTRS]) -> Result<NodeOp, &'static str> {
        let used = |n: usize| attrs.iter().skip(n).all(|w| *w == 0);
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
        Ok(op)
    }

    /// Allowed number of inputs `(min, max)`.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            // Dense and Conv: a 4th input, the int8 activation scale (full-integer mode).
            NodeOp::Dense | NodeOp::Conv { .. } => (2, 4),
            NodeOp::ConvTranspose { .. } => (2, 3),
            NodeOp::MatMul | NodeOp::Binary(_) | NodeOp::Gather => (2, 2),
            NodeOp::Where | NodeOp::Lut { .. } => (3, 3),
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

/// What [`Error::NotLinked`] calls a node of kind `bit` (a [`node`] constant).
fn kind_name(bit: u32) -> &'static str {
    const NAMES: [&str; 23] = [
        "Dense",
        "MatMul",
        "a binary op",
        "a unary op",
        "Where",
        "Concat",
        "Reshape",
        "Expand",
        "Transpose",
        "Slice",
        "Gather",
        "Conv",
        "ConvTranspose",
        "MaxPool / AveragePool",
        "a reduction",
        "Softmax / LogSoftmax",
        "Resize",
        "Pad",
        "Widen",
        "Norm",
        "Lut",
        "full-integer Dense",
        "full-integer Conv",
    ];
    NAMES
        .get(bit.trailing_zeros() as usize)
        .copied()
        .unwrap_or("an op")
}

/// The [`node`] bit of a node record's op code (`None` for a code no op has).
pub(super) fn opcode_bit(code: u16) -> Option<u32> {
    use crate::format::opcode as op;
    // (code, bit index): a table is a fraction of the code of a `match`.
    const KINDS: [(u16, u8); 19] = [
        (op::DENSE, 0),
        (op::MATMUL, 1),
        (op::WHERE, 4),
        (op::CONCAT, 5),
        (op::RESHAPE, 6),
        (op::EXPAND, 7),
        (op::TRANSPOSE, 8),
        (op::SLICE, 9),
        (op::GATHER, 10),
        (op::CONV, 11),
        (op::CONV_TRANSPOSE, 12),
        (op::POOL, 13),
        (op::REDUCE, 14),
        (op::SOFTMAX, 15),
        (op::RESIZE, 16),
        (op::PAD, 17),
        (op::WIDEN, 18),
        (op::NORM, 19),
        (op::LUT, 20),
    ];
    KINDS
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, bit)| 1 << bit)
}

/// Checks that `S` links the op a node record stores as `code` with `n_inputs` inputs (a
/// 4-input Dense or Conv is the full-integer form, [`node::with_arity`]), before it is
/// decoded: `Ok(())`, or [`Error::NotLinked`] naming it. Codes no op has pass (decoding
/// rejects them), so with [`All`] this never fails.
pub(crate) fn opcode_linked<S: Selection + ?Sized>(
    code: u16,
    n_inputs: usize,
) -> Result<(), Error> {
    use crate::format::opcode as op;
    if (op::BINARY_BASE..op::BINARY_BASE + 0x100).contains(&code) {
        if let Some(b) = Binary::from_code(code - op::BINARY_BASE) {
            if !has_binary::<S>(b) {
                return Err(not_linked(b.name()));
            }
        }
    } else if (op::UNARY_BASE..op::UNARY_BASE + 0x100).contains(&code) {
        if let Some(u) = Unary::from_code(code - op::UNARY_BASE, 0.0, 0.0) {
            if !has_unary::<S>(u) {
                return Err(not_linked(u.name()));
            }
        }
    } else if let Some(bit) = opcode_bit(code) {
        let bit = node::with_arity(bit, n_inputs);
        if !has_node::<S>(bit) {
            return Err(not_linked(kind_name(bit)));
        }
    }
    Ok(())
}
