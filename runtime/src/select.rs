//! Compile-time selection of what a build links: the op kernels, weight types and solvers.
//!
//! In the style of TFLite Micro's op resolver, but resolved by the compiler: the CPU executor
//! and the sampler take a type implementing [`Selection`], whose constants are bit masks of
//! the node kinds, unary and binary operations, weight types and solver methods a build
//! supports. Every kernel call is guarded by its (constant) bit, so a firmware built with the
//! selection of its one model does not contain the other kernels; running a model that
//! needs something left out returns [`Error::NotLinked`] naming it, never a panic.
//!
//! The loader takes the selection too ([`crate::Model::from_bytes_with`]): it decodes and
//! checks only the op kinds and weight types a build links (a file with others is refused
//! with [`Error::NotLinked`] before any of their checks), so a firmware contains no other op's
//! validation either. The conditioning inputs ([`Selection::ROLES`]) and multi-network files
//! ([`Selection::PIPELINE`]) are selected the same way.
//!
//! [`All`] links everything; it is the default everywhere ([`crate::Model::from_bytes`],
//! [`crate::exec::CpuField`], the plain [`crate::sampler::sample`] functions), so host code
//! behaves exactly as without selection. A firmware's build script computes [`Needs::of`] its
//! model and writes [`Needs::to_rust`] (a type implementing [`Selection`]) into its generated
//! code, then loads with [`crate::Model::from_bytes_with`] and samples with
//! [`crate::sampler::sample_with`].

pub use crate::linked::{
    has_binary, has_method, has_node, has_unary, method_bit, node, not_linked, role, weight, All,
    Selection,
};

use crate::format::{InputRole, NodeOp};
use crate::method::Method;
use crate::ops::{Binary, Unary, Weights};
use crate::time::SecondTime;
use crate::{Error, Model};

/// `true` when `S` feeds input role `r` (`x`, `xt`, `t` and `data` always).
#[inline(always)]
pub fn has_role<S: Selection + ?Sized>(r: InputRole) -> bool {
    match r {
        InputRole::Label => S::ROLES & role::LABEL != 0,
        InputRole::Cond => S::ROLES & role::COND != 0,
        InputRole::Guidance => S::ROLES & role::GUIDANCE != 0,
        InputRole::Step => S::FEW_STEP,
        InputRole::X | InputRole::Xt | InputRole::T | InputRole::Data => true,
    }
}

/// Checks that `S` feeds every input of `model`: `Ok(())`, or [`Error::NotLinked`] naming
/// the first input it does not.
pub fn check_roles<S: Selection + ?Sized>(model: &Model<'_>) -> Result<(), Error> {
    match model.inputs().find(|i| !has_role::<S>(i.role)) {
        Some(i) => Err(not_linked(role_input_name(i.role))),
        None => Ok(()),
    }
}

/// What [`Error::NotLinked`] calls the input of a conditioning role.
pub(crate) fn role_input_name(r: InputRole) -> &'static str {
    match r {
        InputRole::Label => "a label input",
        InputRole::Cond => "a cond input",
        InputRole::Guidance => "a guidance input",
        InputRole::Step => "few-step sampling",
        _ => "an input role",
    }
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
        NodeOp::Widen => node::WIDEN,
        NodeOp::Norm { .. } => node::NORM,
        NodeOp::Lut { .. } => node::LUT,
    }
}

/// `true` when `S` links everything `op` with `n_inputs` inputs needs (its kind — a 4-input
/// Dense or Conv is the full-integer one, [`node::with_arity`] — and, for unary / binary
/// nodes, the operation).
pub fn has_op<S: Selection + ?Sized>(op: &NodeOp, n_inputs: usize) -> bool {
    match op {
        NodeOp::Unary(u) => has_unary::<S>(*u),
        NodeOp::Binary(b) => has_binary::<S>(*b),
        other => has_node::<S>(node::with_arity(node_bit(other), n_inputs)),
    }
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
    /// [`Selection::PIPELINE`].
    pub pipeline: bool,
    /// [`Selection::ROLES`].
    pub roles: u32,
}

impl Needs {
    /// What sampling `model` with each of `methods` needs (without guidance; set
    /// [`Needs::guidance`] to add it).
    ///
    /// Errors: those of reading the model's node and tensor records.
    pub fn of(model: &Model<'_>, methods: &[Method]) -> Result<Needs, Error> {
        let mut n = Needs::default();
        for i in 0..model.node_count() as u32 {
            let rec = model.node_rec(i)?;
            let op = rec.op;
            match op {
                NodeOp::Unary(u) => n.unary |= 1 << u.code(),
                NodeOp::Binary(b) => n.binary |= 1 << b.code(),
                _ => {}
            }
            n.nodes |= node::with_arity(node_bit(&op), rec.n_inputs);
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
        n.pipeline = model.pipeline().is_some();
        for i in model.inputs() {
            n.roles |= match i.role {
                InputRole::Label => role::LABEL,
                InputRole::Cond => role::COND,
                InputRole::Guidance => role::GUIDANCE,
                _ => 0,
            };
        }
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
        if self.pipeline && !S::PIPELINE {
            return Err(not_linked("multi-network files"));
        }
        for (bit, r) in [
            (role::LABEL, InputRole::Label),
            (role::COND, InputRole::Cond),
            (role::GUIDANCE, InputRole::Guidance),
        ] {
            if self.roles & bit != 0 && S::ROLES & bit == 0 {
                return Err(not_linked(role_input_name(r)));
            }
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
        let roles = names(self.roles, &|i| {
            ["label", "cond", "guidance"].get(usize::from(i)).copied()
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
             \x20   const PIPELINE: bool = {};\n\
             \x20   /// Conditioning inputs: {roles}\n    const ROLES: u32 = {:#x};\n\
             }}\n",
            self.nodes,
            self.unary,
            self.binary,
            self.weights,
            self.methods,
            self.few_step,
            self.guidance,
            self.pipeline,
            self.roles,
        )
    }
}

/// Index of the lowest set bit.
fn first_bit(mask: u32) -> Option<u16> {
    (mask != 0).then(|| mask.trailing_zeros() as u16)
}
