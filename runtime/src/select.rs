//! Compile-time selection of what a build links: the op kernels, weight types and solvers.
//!
//! In the style of TFLite Micro's op resolver, but resolved by the compiler: the CPU executor
//! and the sampler take a type implementing [`Selection`], whose constants are bit masks of
//! the node kinds, unary and binary operations, weight types and solver methods a build
//! supports. Every kernel call is guarded by its (constant) bit, so a firmware built with the
//! selection of its one model does not contain the other kernels; running a model that
//! needs something left out returns [`Error::NotLinked`] naming it, never a panic.
//!
//! [`All`] links everything; it is the default everywhere ([`crate::exec::CpuField`], the
//! plain [`crate::sampler::sample`] functions), so host code behaves exactly as without
//! selection. A firmware's build script computes [`Needs::of`] its model and writes
//! [`Needs::to_rust`] (a type implementing [`Selection`]) into its generated code, then
//! samples with [`crate::sampler::sample_with`].

use crate::format::NodeOp;
use crate::method::Method;
use crate::ops::{Binary, Unary, Weights};
use crate::time::SecondTime;
use crate::{Error, Model};

/// What a build links. Each constant is a bit mask: bit `i` set = item `i` linked.
///
/// Implementations are usually generated ([`Needs::to_rust`]); [`All`] sets every bit.
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
    /// Names of the bits, lowest first (for generated code and messages).
    pub const NAMES: [&str; 18] = [
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
    ];
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

/// The [`node`] bit of an op.
pub const fn node_bit(op: &NodeOp) -> u32 {
    match op {
        NodeOp::Dense => node::DENSE,
        NodeOp::MatMul => node::MATMUL,
        NodeOp::Binary(_) => node::BINARY,
        NodeOp::Unary(_) => node::UNARY,
        NodeOp::Where => node::WHERE,
        NodeOp::Concat { .. } => node::CONCAT,
        NodeOp::Reshape => node::RESHAPE,
        NodeOp::Expand => node::EXPAND,
        NodeOp::Transpose { .. } => node::TRANSPOSE,
        NodeOp::Slice { .. } => node::SLICE,
        NodeOp::Gather => node::GATHER,
        NodeOp::Conv { .. } => node::CONV,
        NodeOp::ConvTranspose { .. } => node::CONV_TRANSPOSE,
        NodeOp::Pool { .. } => node::POOL,
        NodeOp::Reduce { .. } => node::REDUCE,
        NodeOp::Softmax { .. } => node::SOFTMAX,
        NodeOp::Resize { .. } => node::RESIZE,
        NodeOp::Pad { .. } => node::PAD,
    }
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

/// `true` when `S` links everything `op` needs (its kind and, for unary / binary nodes, the
/// operation).
pub fn has_op<S: Selection + ?Sized>(op: &NodeOp) -> bool {
    match op {
        NodeOp::Unary(u) => has_unary::<S>(*u),
        NodeOp::Binary(b) => has_binary::<S>(*b),
        other => has_node::<S>(node_bit(other)),
    }
}

/// [`Error::NotLinked`] for `what`.
pub const fn not_linked(what: &'static str) -> Error {
    Error::NotLinked { what }
}

/// Checks that `S` links `weights`' stored type: `Ok(weights)`, or [`Error::NotLinked`].
#[inline(always)]
pub fn check_weights<'w, S: Selection + ?Sized>(
    weights: Weights<'w>,
) -> Result<Weights<'w>, Error> {
    match weights {
        Weights::F32(_) => Ok(weights),
        #[cfg(feature = "weights-f16")]
        Weights::F16(_) if S::WEIGHTS & weight::F16 != 0 => Ok(weights),
        #[cfg(feature = "weights-f16")]
        Weights::F16(_) => Err(not_linked("f16 weights")),
        #[cfg(feature = "weights-f16")]
        Weights::Bf16(_) if S::WEIGHTS & weight::BF16 != 0 => Ok(weights),
        #[cfg(feature = "weights-f16")]
        Weights::Bf16(_) => Err(not_linked("bf16 weights")),
        #[cfg(feature = "weights-int8")]
        Weights::Int8(_) if S::WEIGHTS & weight::INT8 != 0 => Ok(weights),
        #[cfg(feature = "weights-int8")]
        Weights::Int8(_) => Err(not_linked("int8 weights")),
    }
}

/// What sampling a model needs linked: the masks of the smallest [`Selection`] for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// [`Selection::NODES`].
    pub nodes: u32,
    /// [`Selection::UNARY`].
    pub unary: u32,
    /// [`Selection::BINARY`].
    pub binary: u32,
    /// [`Selection::WEIGHTS`].
    pub weights: u32,
    /// [`Selection::METHODS`].
    pub methods: u32,
    /// [`Selection::FEW_STEP`].
    pub few_step: bool,
    /// [`Selection::GUIDANCE`].
    pub guidance: bool,
}

impl Needs {
    /// What sampling `model` with each of `methods` needs (without guidance; set
    /// [`Needs::guidance`] to add it).
    ///
    /// Errors: those of reading the model's node and tensor records.
    pub fn of(model: &Model<'_>, methods: &[Method]) -> Result<Needs, Error> {
        let mut n = Needs::default();
        for i in 0..model.node_count() as u32 {
            let op = model.node_rec(i)?.op;
            match op {
                NodeOp::Unary(u) => n.unary |= 1 << u.code(),
                NodeOp::Binary(b) => n.binary |= 1 << b.code(),
                _ => {}
            }
            n.nodes |= node_bit(&op);
        }
        for w in model.constants() {
            n.weights |= match w {
                Weights::F32(_) => 0,
                #[cfg(feature = "weights-f16")]
                Weights::F16(_) => weight::F16,
                #[cfg(feature = "weights-f16")]
                Weights::Bf16(_) => weight::BF16,
                #[cfg(feature = "weights-int8")]
                Weights::Int8(_) => weight::INT8,
            };
        }
        for m in methods {
            n.methods |= method_bit(*m);
        }
        n.few_step = model.time_convention().second != SecondTime::None;
        Ok(n)
    }

    /// Checks that `S` links everything in `self`; else [`Error::NotLinked`] naming the first
    /// missing item.
    pub fn check<S: Selection + ?Sized>(&self) -> Result<(), Error> {
        let missing = |have: u32, need: u32| need & !have;
        if let Some(u) = first_bit(missing(S::UNARY, self.unary)) {
            return Err(not_linked(
                Unary::from_code(u, 0.0, 0.0).map_or("a unary op", Unary::name),
            ));
        }
        if let Some(b) = first_bit(missing(S::BINARY, self.binary)) {
            return Err(not_linked(
                Binary::from_code(b).map_or("a binary op", Binary::name),
            ));
        }
        if let Some(k) = first_bit(missing(S::NODES, self.nodes)) {
            return Err(not_linked(
                node::NAMES.get(usize::from(k)).copied().unwrap_or("an op"),
            ));
        }
        if let Some(m) = first_bit(missing(S::METHODS, self.methods)) {
            return Err(not_linked(
                Method::EVERY
                    .get(usize::from(m))
                    .map_or("a method", |m| m.name()),
            ));
        }
        if missing(S::WEIGHTS, self.weights) != 0 {
            return Err(not_linked("a weight type"));
        }
        if self.few_step && !S::FEW_STEP {
            return Err(not_linked("few-step sampling"));
        }
        if self.guidance && !S::GUIDANCE {
            return Err(not_linked("guidance"));
        }
        Ok(())
    }

    /// Rust source of a unit struct `name` implementing [`Selection`] with these masks (what
    /// a firmware's build script writes into its generated code).
    #[cfg(feature = "alloc")]
    pub fn to_rust(&self, name: &str) -> alloc::string::String {
        use alloc::format;
        use alloc::string::String;
        use alloc::vec::Vec;
        let names = |mask: u32, name_of: &dyn Fn(u16) -> Option<&'static str>| -> String {
            let v: Vec<&str> = (0u16..32)
                .filter(|i| mask >> i & 1 != 0)
                .filter_map(name_of)
                .collect();
            if v.is_empty() {
                String::from("none")
            } else {
                v.join(", ")
            }
        };
        let nodes = names(self.nodes, &|i| node::NAMES.get(usize::from(i)).copied());
        let unary = names(self.unary, &|i| {
            Unary::from_code(i, 0.0, 0.0).map(Unary::name)
        });
        let binary = names(self.binary, &|i| Binary::from_code(i).map(Binary::name));
        let methods = names(self.methods, &|i| {
            Method::EVERY.get(usize::from(i)).map(|m| m.name())
        });
        let weights = names(self.weights, &|i| {
            ["f16", "bf16", "int8"].get(usize::from(i)).copied()
        });
        format!(
            "/// What this build links (`flowrt::select::Selection`), from its model and method.\n\
             pub struct {name};\n\
             impl flowrt::select::Selection for {name} {{\n\
             \x20   /// {nodes}\n    const NODES: u32 = {:#x};\n\
             \x20   /// {unary}\n    const UNARY: u32 = {:#x};\n\
             \x20   /// {binary}\n    const BINARY: u32 = {:#x};\n\
             \x20   /// Besides f32: {weights}\n    const WEIGHTS: u32 = {:#x};\n\
             \x20   /// {methods}\n    const METHODS: u32 = {:#x};\n\
             \x20   const FEW_STEP: bool = {};\n\
             \x20   const GUIDANCE: bool = {};\n\
             }}\n",
            self.nodes,
            self.unary,
            self.binary,
            self.weights,
            self.methods,
            self.few_step,
            self.guidance,
        )
    }
}

/// Index of the lowest set bit.
fn first_bit(mask: u32) -> Option<u16> {
    (mask != 0).then(|| mask.trailing_zeros() as u16)
}
