//! What a build links: the [`Selection`] trait and its bits (the lower half of
//! [`crate::select`], which re-exports all of it). It sits below the file format and the
//! model, so that the loader, too, checks only what a selection links.

use crate::method::Method;
use crate::ops::{Binary, Unary};
use crate::Error;

/// What a build links. Each constant is a bit mask: bit `i` set = item `i` linked.
///
/// Implementations are usually generated ([`crate::select::Needs::to_rust`]); [`All`] sets
/// every bit.
pub trait Selection {
    /// Node kinds, bits [`node`]`::*` (a Unary / Binary node also needs its operation's bit
    /// in [`Selection::UNARY`] / [`Selection::BINARY`]).
    const NODES: u32;
    /// Unary operations, bit [`Unary::code`].
    const UNARY: u32;
    /// Binary operations, bit [`Binary::code`].
    const BINARY: u32;
    /// Stored weight types besides f32, bits [`weight`]`::*`.
    const WEIGHTS: u32;
    /// Solver methods, bit = the method's position in [`Method::EVERY`].
    const METHODS: u32;
    /// The few-step rule of models with a second time input ([`crate::fewstep`]).
    const FEW_STEP: bool;
    /// Classifier-free guidance ([`crate::guidance`]).
    const GUIDANCE: bool;
    /// Multi-network files (a `PIPELINE` section, [`crate::pipeline`]): without it the
    /// loader refuses them. Linked unless an implementation says otherwise.
    const PIPELINE: bool = true;
    /// Conditioning inputs the CPU field feeds besides `x` / `xt` and `t`, bits [`role`]`::*`
    /// (a few-step model's `step` input comes with [`Selection::FEW_STEP`]). All linked
    /// unless an implementation says otherwise.
    const ROLES: u32 = u32::MAX;
}

/// Links everything: the default selection.
#[derive(Debug, Clone, Copy, Default)]
pub struct All;

impl Selection for All {
    const NODES: u32 = u32::MAX;
    const UNARY: u32 = u32::MAX;
    const BINARY: u32 = u32::MAX;
    const WEIGHTS: u32 = u32::MAX;
    const METHODS: u32 = u32::MAX;
    const FEW_STEP: bool = true;
    const GUIDANCE: bool = true;
    const PIPELINE: bool = true;
    const ROLES: u32 = u32::MAX;
}

/// Node-kind bits of [`Selection::NODES`].
pub mod node {
    /// `Dense`.
    pub const DENSE: u32 = 1 << 0;
    /// `MatMul`.
    pub const MATMUL: u32 = 1 << 1;
    /// Element-wise binary operations (each also needs its [`super::Selection::BINARY`] bit).
    pub const BINARY: u32 = 1 << 2;
    /// Element-wise unary operations (each also needs its [`super::Selection::UNARY`] bit).
    pub const UNARY: u32 = 1 << 3;
    /// `Where`.
    pub const WHERE: u32 = 1 << 4;
    /// `Concat`.
    pub const CONCAT: u32 = 1 << 5;
    /// `Reshape`.
    pub const RESHAPE: u32 = 1 << 6;
    /// `Expand`.
    pub const EXPAND: u32 = 1 << 7;
    /// `Transpose`.
    pub const TRANSPOSE: u32 = 1 << 8;
    /// `Slice`.
    pub const SLICE: u32 = 1 << 9;
    /// `Gather`.
    pub const GATHER: u32 = 1 << 10;
    /// `Conv`.
    pub const CONV: u32 = 1 << 11;
    /// `ConvTranspose`.
    pub const CONV_TRANSPOSE: u32 = 1 << 12;
    /// `MaxPool` / `AveragePool`.
    pub const POOL: u32 = 1 << 13;
    /// The reductions (`ReduceSum`, `ReduceMean`, ...).
    pub const REDUCE: u32 = 1 << 14;
    /// `Softmax` / `LogSoftmax`.
    pub const SOFTMAX: u32 = 1 << 15;
    /// `Resize`.
    pub const RESIZE: u32 = 1 << 16;
    /// `Pad`.
    pub const PAD: u32 = 1 << 17;
    /// `Widen`.
    pub const WIDEN: u32 = 1 << 18;
    /// `Norm` (the fused normalizations).
    pub const NORM: u32 = 1 << 19;
    /// `Lut` (table activations of the full-integer mode).
    pub const LUT: u32 = 1 << 20;
    /// Full-integer `Dense` (4 inputs: int8 weights, int8 activations): its own kernels,
    /// apart from [`DENSE`]'s float ones (a full-integer firmware links no float Dense).
    pub const DENSE_Q8: u32 = 1 << 21;
    /// Full-integer `Conv` (4 inputs), apart from [`CONV`]'s float kernels.
    pub const CONV_Q8: u32 = 1 << 22;
    /// Names of the bits, lowest first (for generated code and messages).
    pub const NAMES: [&str; 23] = [
        "DENSE",
        "MATMUL",
        "BINARY",
        "UNARY",
        "WHERE",
        "CONCAT",
        "RESHAPE",
        "EXPAND",
        "TRANSPOSE",
        "SLICE",
        "GATHER",
        "CONV",
        "CONV_TRANSPOSE",
        "POOL",
        "REDUCE",
        "SOFTMAX",
        "RESIZE",
        "PAD",
        "WIDEN",
        "NORM",
        "LUT",
        "DENSE_Q8",
        "CONV_Q8",
    ];

    /// The bit of a node of kind `bit` with `n_inputs` inputs: a 4-input Dense or Conv is
    /// the full-integer form, [`DENSE_Q8`] / [`CONV_Q8`]; any other node keeps `bit`.
    pub const fn with_arity(bit: u32, n_inputs: usize) -> u32 {
        match (bit, n_inputs) {
            (DENSE, 4) => DENSE_Q8,
            (CONV, 4) => CONV_Q8,
            _ => bit,
        }
    }
}

/// Weight-type bits of [`Selection::WEIGHTS`] (f32 is always linked).
pub mod weight {
    /// IEEE half-precision weights.
    pub const F16: u32 = 1 << 0;
    /// bfloat16 weights.
    pub const BF16: u32 = 1 << 1;
    /// int8 weights with per-channel scales.
    pub const INT8: u32 = 1 << 2;
}

/// Conditioning-input bits of [`Selection::ROLES`].
pub mod role {
    /// A `label` input (class indices, [`crate::field::Conditioning::label`]).
    pub const LABEL: u32 = 1 << 0;
    /// A `cond` input (conditioning vectors).
    pub const COND: u32 = 1 << 1;
    /// A `guidance` input (an embedded guidance scale).
    pub const GUIDANCE: u32 = 1 << 2;
}

/// The [`Selection::METHODS`] bit of a method (its position in [`Method::EVERY`]).
pub const fn method_bit(m: Method) -> u32 {
    1 << match m {
        Method::Euler => 0,
        Method::Midpoint => 1,
        Method::Heun => 2,
        Method::Ralston => 3,
        Method::Rk4 => 4,
        Method::Rk4_38 => 5,
        Method::Rk4Torchdyn => 6,
        Method::Ab2 => 7,
        Method::Ab3 => 8,
        Method::Ab4 => 9,
        Method::HeunReuse => 10,
        Method::Dopri5 => 11,
    }
}

/// `true` when `S` links node kind `bit` (a [`node`] constant).
#[inline(always)]
pub fn has_node<S: Selection + ?Sized>(bit: u32) -> bool {
    S::NODES & bit != 0
}

/// `true` when `S` links the unary operation `op` (and unary nodes).
#[inline(always)]
pub fn has_unary<S: Selection + ?Sized>(op: Unary) -> bool {
    has_node::<S>(node::UNARY) && (S::UNARY >> op.code()) & 1 != 0
}

/// `true` when `S` links the binary operation `op` (and binary nodes).
#[inline(always)]
pub fn has_binary<S: Selection + ?Sized>(op: Binary) -> bool {
    has_node::<S>(node::BINARY) && (S::BINARY >> op.code()) & 1 != 0
}

/// `true` when `S` links solver `method`.
#[inline(always)]
pub fn has_method<S: Selection + ?Sized>(method: Method) -> bool {
    S::METHODS & method_bit(method) != 0
}

/// [`Error::NotLinked`] for `what`.
pub const fn not_linked(what: &'static str) -> Error {
    Error::NotLinked { what }
}
