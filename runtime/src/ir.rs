//! In-memory description of a model before it is written as `.frt` (feature `alloc`).
//!
//! The exporter lowers an ONNX graph into a [`ModelDesc`]; [`crate::write`] plans memory and
//! serializes it. Tensors are f32. Shapes are lists of [`Dim`]s where at most one dim is the
//! symbolic batch size `B`.

use alloc::string::String;
use alloc::vec::Vec;

// The shape, role and element-wise op vocabularies are the runtime's own types: what the
// exporter builds is exactly what the file stores and the executor runs.
pub use crate::format::{Dim, InputRole as Role};
pub use crate::ops::{Binary as BinaryOp, Unary as UnaryOp};
pub use crate::ops::{CoordMode, PadMode, PoolKind, ReduceKind, ResizeMode, Window};

/// One operation of the lowered graph: the file's own op enum ([`crate::format::NodeOp`]), so
/// the exporter, the writer and the reader share one definition. Inputs and the output of a
/// [`NodeDesc`] are tensor indices in [`ModelDesc::tensors`]; the output shape is the output
/// tensor's shape. Build `Transpose` and `Pad` with [`Op::transpose`] and [`Op::pad`].
pub use crate::format::NodeOp as Op;

/// A tensor of the model: a constant (weights) or a value computed at run time.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDesc {
    /// Name (from the ONNX graph) for messages and `inspect`.
    pub name: String,
    /// Shape; at most one [`Dim::Batch`].
    pub shape: Vec<Dim>,
    /// `Some(values)` for a constant (row-major, must match the shape, no batch dim).
    pub data: Option<Vec<f32>>,
    /// How the writer stores a constant's values (f32 unless the exporter was asked for
    /// f16, bf16 or int8 weights; see [`crate::write::quantize`]). Computed tensors are f32.
    pub stored: crate::format::WeightType,
    /// For a constant stored as int8: the per-channel scales to quantize against, chosen by
    /// the exporter (its error-compensated rounding stores values that are already `q ×
    /// scale`); `None` = the writer's own `max |w| / 127` ([`crate::write::quantize`]).
    pub int8_scales: Option<Vec<f32>>,
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
    /// empty): each a complete `.frt` image and its rule, see `flowrt::pipeline`.
    pub pipeline: Vec<(crate::format::pipeline::StageKind, Vec<u8>)>,
}

/// Owned solver defaults for [`ModelDesc`]; see [`crate::format::sampling::SolverDefaults`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SolverDefaultsDesc {
    /// Default method.
    pub method: Option<crate::method::Method>,
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
/// description is written with [`crate::write::write`].
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
            stored: Default::default(),
            int8_scales: None,
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
