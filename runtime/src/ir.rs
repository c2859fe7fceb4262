//! In-memory description of a model before it is written as `.frt` (feature `alloc`).
//!
//! The exporter lowers an ONNX graph into a [`ModelDesc`]; `format::write` plans memory and
//! serializes it. Tensors are f32. Shapes are lists of [`Dim`]s where at most one dim is the
//! symbolic batch size `B`.

use alloc::string::String;
use alloc::vec::Vec;

// The shape, role and element-wise op vocabularies are the runtime's own types: what the
// exporter builds is exactly what the file stores and the executor runs.
pub use crate::format::{Dim, InputRole as Role};
pub use crate::ops::{Binary as BinaryOp, Unary as UnaryOp};
pub use crate::ops::{CoordMode, PadMode, PoolKind, ReduceKind, ResizeMode, Window};

/// One operation of the lowered graph. Inputs and the output are tensor indices in
/// [`ModelDesc::tensors`]; the output shape is the output tensor's shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `inputs = [a, w]` or `[a, w, bias]`: `a[..., K] x w[K, N] (+ bias[N]) -> [..., N]`.
    /// `w` and `bias` are constants.
    Dense,
    /// `inputs = [a, b]`: numpy `matmul` of two tensors (rank >= 2, leading dims broadcast).
    MatMul,
    /// `inputs = [a, b]`, broadcast element-wise.
    Binary(BinaryOp),
    /// `inputs = [x]`, element-wise.
    Unary(UnaryOp),
    /// `inputs = [cond, a, b]`, broadcast together: `cond != 0 ? a : b` (ONNX `Where`;
    /// `cond` is an f32 mask such as a comparison's output).
    Where,
    /// `inputs = [table, idx]`: `out[i, ...] = table[idx[i], ...]` along axis 0 (embedding
    /// lookup); `table` has no batch dim, output shape = `idx.shape + table.shape[1..]`.
    /// Indices are f32 values that must be exact integers in `0..N` at run time.
    Gather,
    /// `inputs = [x0, x1, ...]` joined along `axis`.
    Concat {
        /// Axis (0-based, non-negative) along which the inputs are joined.
        axis: u32,
    },
    /// `inputs = [x]`: same elements in the same order, new shape (Reshape, Flatten,
    /// Squeeze, Unsqueeze, Identity).
    Reshape,
    /// `inputs = [x]`: broadcast `x` to the output shape (ONNX `Expand`).
    Expand,
    /// `inputs = [x]`: permute axes; output axis `i` is input axis `perm[i]`.
    Transpose {
        /// The permutation (length = rank).
        perm: Vec<u32>,
    },
    /// `inputs = [x]`: elements `start, start + step, ...` (< `end`) along `axis`, `step >= 1`.
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
    /// `inputs = [x, w]` or `[x, w, bias]`: NCHW convolution (ONNX `Conv`), `w` and `bias`
    /// constants.
    Conv {
        /// Channel groups.
        groups: u32,
        /// Strides, dilations, pads.
        window: Window,
    },
    /// `inputs = [x, w]` or `[x, w, bias]`: ONNX `ConvTranspose` with the kernel as
    /// `[M, C/groups, KH, KW]` (as `Conv`; ONNX stores `[C, M/groups, ..]`).
    ConvTranspose {
        /// Channel groups.
        groups: u32,
        /// Strides, dilations, pads.
        window: Window,
        /// Extra output rows / columns.
        out_pad: [u16; 2],
    },
    /// `inputs = [x]`: ONNX `MaxPool` / `AveragePool` (output dims decide `ceil_mode`).
    Pool {
        /// Max or average.
        kind: PoolKind,
        /// `[KH, KW]` (`KH = 1` for 1-D).
        kernel: [u16; 2],
        /// Strides, dilations, pads.
        window: Window,
    },
    /// `inputs = [x]`: reduction over axes `start..end` (kept as 1s).
    Reduce {
        /// The reduction.
        kind: ReduceKind,
        /// First axis.
        start: u8,
        /// One past the last axis.
        end: u8,
    },
    /// `inputs = [x]`: softmax / log-softmax over axes `start..end` jointly.
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
        /// Interpolation.
        mode: ResizeMode,
        /// Coordinate transformation.
        coord: CoordMode,
        /// `[row scale, column scale]`.
        scales: [f32; 2],
    },
    /// `inputs = [x]`: pad per axis (`begin[i]`, `end[i]`; lengths = rank).
    Pad {
        /// Fill mode.
        mode: PadMode,
        /// Before each axis.
        begin: Vec<u16>,
        /// After each axis.
        end: Vec<u16>,
    },
}

/// A tensor of the model: a constant (weights) or a value computed at run time.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDesc {
    /// Name (from the ONNX graph) for messages and `inspect`.
    pub name: String,
    /// Shape; at most one [`Dim::Batch`].
    pub shape: Vec<Dim>,
    /// `Some(values)` for a constant (row-major, must match the shape, no batch dim).
    pub data: Option<Vec<f32>>,
}

/// One node: an operation, its input tensors and its single output tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDesc {
    /// Name of the ONNX node it came from (for messages).
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Input tensor indices.
    pub inputs: Vec<u32>,
    /// Output tensor index.
    pub output: u32,
}

/// A graph input and the role it plays.
#[derive(Debug, Clone, PartialEq)]
pub struct InputDesc {
    /// Tensor index of the input.
    pub tensor: u32,
    /// Its role in `v(x, t)`.
    pub role: Role,
}

/// A whole lowered model: the velocity network plus metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelDesc {
    /// All tensors; indices are used by nodes, inputs and the output.
    pub tensors: Vec<TensorDesc>,
    /// Nodes in execution (topological) order.
    pub nodes: Vec<NodeDesc>,
    /// Graph inputs with roles.
    pub inputs: Vec<InputDesc>,
    /// The tensor holding the velocity (same shape as `x`, or `[B, D]` for `xt`).
    pub output: u32,
    /// Free-form key/value metadata (producer, source file hash, ...).
    pub metadata: Vec<(String, String)>,
    /// The source ONNX model, self-contained (weights inline), stored in the optional `ONNX`
    /// section so `flowrt-ort` can run the same artifact (`flowrt export --embed-onnx`).
    pub onnx: Option<Vec<u8>>,
    /// The time convention (written as a `TIME` section unless it is the default).
    pub time: crate::time::TimeConvention,
    /// Solver defaults (written as a `SOLVER_DEFAULTS` section when set).
    pub solver_defaults: Option<SolverDefaultsDesc>,
    /// Further graphs of a multi-network file (written as a `PIPELINE` section when not
    /// empty): each a complete `.frt` image and its rule, see [`crate::pipeline`].
    pub pipeline: Vec<(crate::pipeline::StageKind, Vec<u8>)>,
}

/// Owned solver defaults for [`ModelDesc`]; see [`crate::format::sampling::SolverDefaults`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SolverDefaultsDesc {
    /// Default method.
    pub method: Option<crate::solver::Method>,
    /// Default step count.
    pub steps: Option<usize>,
    /// Default named grid (ignored when `grid_points` is set).
    pub grid: Option<crate::grid::GridSpec<'static>>,
    /// Default explicit grid (model times).
    pub grid_points: Option<Vec<f32>>,
    /// Default guidance.
    pub guidance: crate::format::sampling::GuidanceDefaults,
}

/// A small builder for [`ModelDesc`]s by hand (tests, tools, programmatic models).
///
/// Tensors get names `t0, t1, ...` and nodes `n0, n1, ...`; nothing is validated until the
/// description is written with `format::write`.
#[derive(Debug, Clone, Default)]
pub struct ModelBuilder {
    desc: ModelDesc,
}

impl ModelBuilder {
    /// A run-time tensor of `shape`; returns its index.
    pub fn tensor(&mut self, shape: &[Dim]) -> u32 {
        let n = self.desc.tensors.len();
        self.desc.tensors.push(TensorDesc {
            name: alloc::format!("t{n}"),
            shape: shape.to_vec(),
            data: None,
        });
        n as u32
    }

    /// A constant tensor of `shape` holding `data` (row-major); returns its index.
    pub fn constant(&mut self, shape: &[Dim], data: Vec<f32>) -> u32 {
        let t = self.tensor(shape);
        if let Some(desc) = self.desc.tensors.last_mut() {
            desc.data = Some(data);
        }
        t
    }

    /// A graph input of `shape` playing `role`; returns its tensor index.
    pub fn input(&mut self, shape: &[Dim], role: Role) -> u32 {
        let t = self.tensor(shape);
        self.desc.inputs.push(InputDesc { tensor: t, role });
        t
    }

    /// A node applying `op` to `inputs`, producing a new tensor of `shape` (returned).
    pub fn node(&mut self, op: Op, inputs: &[u32], shape: &[Dim]) -> u32 {
        let out = self.tensor(shape);
        let n = self.desc.nodes.len();
        self.desc.nodes.push(NodeDesc {
            name: alloc::format!("n{n}"),
            op,
            inputs: inputs.to_vec(),
            output: out,
        });
        out
    }

    /// The finished description with `output` as the velocity tensor.
    pub fn finish(mut self, output: u32) -> ModelDesc {
        self.desc.output = output;
        self.desc
    }
}
