//! In-memory description of a model before it is written as `.frt` (feature `alloc`).
//!
//! The exporter lowers an ONNX graph into a [`ModelDesc`]; `format::write` plans memory and
//! serializes it. Tensors are f32. Shapes are lists of [`Dim`]s where at most one dim is the
//! symbolic batch size `B`.

use alloc::string::String;
use alloc::vec::Vec;

/// One dimension of a tensor shape: a fixed size or the symbolic batch size `B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    /// The batch size chosen at sampling time.
    Batch,
    /// A size fixed at export.
    Fixed(u32),
}

/// Role an ONNX input plays in the velocity field `v(x, t)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The state `x`, shape `[B, ...]`.
    X,
    /// The time `t`: shape `[]` (scalar), `[B]` or `[B, 1]`.
    T,
    /// State with time appended as the last feature: `[B, D + 1]` (torchcfm `MLP(time_varying=True)`).
    Xt,
}

/// Element-wise binary operations with numpy (ONNX multidirectional) broadcasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b
    Div,
    /// a ^ b (libm `powf`)
    Pow,
    /// max(a, b)
    Max,
    /// min(a, b)
    Min,
    /// 1.0 if a > b else 0.0
    Greater,
    /// 1.0 if a < b else 0.0
    Less,
    /// 1.0 if a >= b else 0.0
    GreaterOrEqual,
    /// 1.0 if a <= b else 0.0
    LessOrEqual,
    /// 1.0 if a == b else 0.0
    Equal,
}

/// Element-wise unary operations (with their ONNX attribute values where they have any).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    /// max(x, 0)
    Relu,
    /// x if x >= 0 else alpha * x
    LeakyRelu {
        /// Slope for negative x.
        alpha: f32,
    },
    /// x if x > 0 else alpha * (exp(x) - 1)
    Elu {
        /// Scale of the negative part.
        alpha: f32,
    },
    /// gamma * (x if x > 0 else alpha * (exp(x) - 1))
    Selu {
        /// ONNX `alpha`.
        alpha: f32,
        /// ONNX `gamma`.
        gamma: f32,
    },
    /// 1 / (1 + exp(-x))
    Sigmoid,
    /// tanh(x)
    Tanh,
    /// ln(1 + exp(x))
    Softplus,
    /// x * sigmoid(x)
    Silu,
    /// 0.5 x (1 + erf(x / sqrt 2))
    GeluErf,
    /// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    GeluTanh,
    /// sin(x)
    Sin,
    /// cos(x)
    Cos,
    /// exp(x)
    Exp,
    /// ln(x)
    Log,
    /// sqrt(x)
    Sqrt,
    /// -x
    Neg,
    /// |x|
    Abs,
    /// erf(x)
    Erf,
    /// 1 / x
    Recip,
    /// x * x
    Square,
    /// 1 / sqrt(x)
    Rsqrt,
}

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
}
