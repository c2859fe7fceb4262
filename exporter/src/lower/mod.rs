//! Lowering: tract's decluttered typed model → flowrt's [`ModelDesc`].
//!
//! Every reachable tract node becomes zero or more flowrt ops; anything flowrt cannot run
//! exactly is refused with an error naming the node and what is unsupported about it.
//!
//! This file holds the driver and the emit helpers; `shape` maps tract shapes and axes,
//! `konst` reads constants, the op families lower in `elementwise`, `layout`, `einsum`,
//! `cnn` and `reduce`, and `passes` rewrites the finished description.

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, bail, Context, Result};
use flowrt::ir::{Dim, InputDesc, ModelDesc, NodeDesc, Op, Role};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::source::TypedSource;

use crate::import::BATCH_SYMBOL;

mod cnn;
mod einsum;
mod elementwise;
mod konst;
mod layout;
pub(crate) mod passes;
mod reduce;
mod shape;

use konst::{fixed_shape, konst_f32};

/// A `Transpose` op (output axis `i` = input axis `perm[i]`).
///
/// Errors: a permutation flowrt cannot store (more than 6 axes, an entry out of range).
pub(crate) fn transpose_op(perm: &[u32]) -> Result<Op> {
    Op::transpose(perm).map_err(|e| anyhow!("Transpose {perm:?}: {e}"))
}

/// A lowered value: a flowrt tensor, or a tract constant not yet materialized.
#[derive(Clone)]
enum Value {
    Tensor(u32),
    Konst(Arc<Tensor>),
}

struct Lowering<'m> {
    model: &'m TypedModel,
    batch: Symbol,
    desc: ModelDesc,
    values: HashMap<OutletId, Value>,
    /// flowrt tensors holding integer values as f32: the label input and Casts / reshapes
    /// of it on its way to a `Gather` index.
    int_values: HashSet<u32>,
}

/// Lowers `model` (inputs in ONNX order, with `roles`) into a flowrt model description.
///
/// Errors: an op, attribute, dtype or shape flowrt does not support, naming the node.
pub fn lower(model: &TypedModel, roles: &[Role]) -> Result<ModelDesc> {
    let batch = model.symbols.sym(BATCH_SYMBOL);
    let mut lw = Lowering {
        model,
        batch,
        desc: ModelDesc::default(),
        values: HashMap::new(),
        int_values: HashSet::new(),
    };
    let inputs = model.input_outlets()?.to_vec();
    if inputs.len() != roles.len() {
        bail!(
            "internal: {} inputs but {} roles",
            inputs.len(),
            roles.len()
        );
    }
    for (outlet, role) in inputs.iter().zip(roles) {
        let node = model.node(outlet.node);
        let fact = model.outlet_fact(*outlet)?;
        let int_label = *role == Role::Label && fact.datum_type.is_integer();
        if fact.datum_type != f32::datum_type() && !int_label {
            bail!(
                "input `{}` has dtype {:?}; flowrt inputs are f32 (only a label may be an \
                 integer)",
                node.name,
                fact.datum_type
            );
        }
        let shape = lw
            .shape_of(*outlet)
            .with_context(|| format!("input `{}`", node.name))?;
        let id = lw.push_tensor(&node.name, shape, None);
        lw.desc.inputs.push(InputDesc {
            tensor: id,
            role: *role,
        });
        if int_label {
            // The .frt label is f32 holding exact integers (checked at run time by Gather).
            lw.int_values.insert(id);
        }
        lw.values.insert(*outlet, Value::Tensor(id));
    }
    let outputs = model.output_outlets()?.to_vec();
    let [output] = outputs.as_slice() else {
        bail!(
            "the model has {} outputs; a velocity network has exactly one",
            outputs.len()
        );
    };
    let needed = reachable(model, *output);
    for id in model.eval_order()? {
        if !needed.contains(&id) {
            continue;
        }
        let node = model.node(id);
        if node.op_is::<TypedSource>() {
            continue;
        }
        lw.lower_node(node)
            .with_context(|| format!("node `{}` ({})", node.name, node.op.name()))?;
    }
    match lw.values.get(output).cloned() {
        Some(Value::Tensor(t)) => {
            if lw.desc.inputs.iter().any(|i| i.tensor == t) {
                // The output is an input passed through: copy it so it has its own slot.
                let shape = lw.dims(t).to_vec();
                lw.desc.output = lw.emit_shaped("output", Op::Reshape, vec![t], shape);
            } else {
                lw.desc.output = t;
            }
        }
        _ => bail!("the model output is a constant; it does not depend on x or t"),
    }
    passes::merge_split_dense(&mut lw.desc);
    passes::fuse_norm(&mut lw.desc);
    passes::fuse_dense_bias(&mut lw.desc);
    passes::compact_tensors(&mut lw.desc);
    Ok(lw.desc)
}

/// Nodes the output depends on.
fn reachable(model: &TypedModel, output: OutletId) -> HashSet<usize> {
    let mut seen = HashSet::new();
    let mut stack = vec![output.node];
    while let Some(n) = stack.pop() {
        if seen.insert(n) {
            stack.extend(model.node(n).inputs.iter().map(|i| i.node));
        }
    }
    seen
}

impl Lowering<'_> {
    fn push_tensor(&mut self, name: &str, shape: Vec<Dim>, data: Option<Vec<f32>>) -> u32 {
        passes::push_tensor(&mut self.desc, name.to_string(), shape, data)
    }

    /// A constant of `node`, named `<node>.<tag>`.
    fn push_const(&mut self, node: &TypedNode, tag: &str, shape: Vec<Dim>, data: Vec<f32>) -> u32 {
        self.push_tensor(&format!("{}.{tag}", node.name), shape, Some(data))
    }

    /// The shape of flowrt tensor `t`.
    fn dims(&self, t: u32) -> &[Dim] {
        &self.desc.tensors[t as usize].shape
    }

    fn value(&self, outlet: OutletId) -> Result<Value> {
        self.values
            .get(&outlet)
            .cloned()
            .ok_or_else(|| anyhow!("internal: unlowered input {outlet:?}"))
    }

    /// The flowrt tensor for an input, materializing constants (f32 only) on first use.
    fn tensor(&mut self, outlet: OutletId) -> Result<u32> {
        match self.value(outlet)? {
            Value::Tensor(t) => Ok(t),
            Value::Konst(k) => {
                let data = konst_f32(&k)?;
                let name = self.model.node(outlet.node).name.clone();
                let id = self.push_tensor(&name, fixed_shape(&k), Some(data));
                self.values.insert(outlet, Value::Tensor(id));
                Ok(id)
            }
        }
    }

    /// The flowrt tensors for all of `node`'s inputs.
    fn input_tensors(&mut self, node: &TypedNode) -> Result<Vec<u32>> {
        node.inputs.iter().map(|i| self.tensor(*i)).collect()
    }

    /// Emits `op` as `node` itself (its name and output shape).
    fn emit(&mut self, node: &TypedNode, op: Op, inputs: Vec<u32>) -> Result<u32> {
        let shape = self.out_shape(node)?;
        Ok(self.emit_shaped(&node.name, op, inputs, shape))
    }

    /// Emits `op` as an intermediate step of `node`, named `<node>.<tag>`.
    fn emit_step(
        &mut self,
        node: &TypedNode,
        tag: &str,
        op: Op,
        inputs: Vec<u32>,
        shape: Vec<Dim>,
    ) -> u32 {
        self.emit_shaped(&format!("{}.{tag}", node.name), op, inputs, shape)
    }

    /// [`Lowering::emit_step`] of an op whose output has the shape of its first input.
    fn emit_like(&mut self, node: &TypedNode, tag: &str, op: Op, inputs: Vec<u32>) -> u32 {
        let shape = self.dims(inputs[0]).to_vec();
        self.emit_step(node, tag, op, inputs, shape)
    }

    fn emit_shaped(&mut self, name: &str, op: Op, inputs: Vec<u32>, shape: Vec<Dim>) -> u32 {
        let out = self.push_tensor(name, shape, None);
        self.desc.nodes.push(NodeDesc {
            name: name.to_string(),
            op,
            inputs,
            output: out,
        });
        out
    }

    fn lower_node(&mut self, node: &TypedNode) -> Result<()> {
        let out_outlet = OutletId::new(node.id, 0);
        if let Some(k) = node.op_as::<Const>() {
            self.values
                .insert(out_outlet, Value::Konst(k.val().clone()));
            return Ok(());
        }
        if node.outputs.len() != 1 {
            bail!("ops with {} outputs are not supported", node.outputs.len());
        }
        let dt = node.outputs[0].fact.datum_type;
        // Comparisons yield booleans, which flowrt keeps as f32 masks (1.0 / 0.0).
        if dt != f32::datum_type()
            && !(elementwise::is_comparison(node) && dt == bool::datum_type())
        {
            return self.lower_integer(node, dt);
        }
        let out = if let Some(ein) = node.op_as::<EinSum>() {
            self.lower_einsum(node, ein)?
        } else if let Some(out) = self.lower_elementwise(node)? {
            out
        } else if let Some(out) = self.lower_layout(node)? {
            out
        } else if let Some(out) = self.lower_cnn(node)? {
            out
        } else if let Some(out) = self.lower_reduce(node)? {
            out
        } else if matches!(&*node.op.name(), "Identity" | "Cast") {
            let v = self.value(node.inputs[0])?;
            self.values.insert(out_outlet, v);
            return Ok(());
        } else {
            bail!(
                "op `{}` is not supported by flowrt ({:?})",
                node.op.name(),
                node.op
            );
        };
        self.values.insert(out_outlet, Value::Tensor(out));
        Ok(())
    }

    /// A node producing `dt` (not f32): only integer label values on their way to a Gather
    /// index pass, where a Cast between integer types (or Identity) is the same values and
    /// a shape op is a Reshape.
    fn lower_integer(&mut self, node: &TypedNode, dt: DatumType) -> Result<()> {
        let out_outlet = OutletId::new(node.id, 0);
        let src = match node.inputs.first().map(|i| self.value(*i)).transpose()? {
            Some(Value::Tensor(t)) if self.int_values.contains(&t) => Some(t),
            _ => None,
        };
        // tract types an ONNX Cast to int64 as TDim (its symbolic-dim integer type).
        let integer = dt.is_integer() || dt == TDim::datum_type();
        if src.is_none() && integer && node.op.name() == "Cast" {
            bail!(
                "a Cast to an integer type of a run-time float value is not supported \
                 (flowrt computes in f32; only the label input may carry integers)"
            );
        }
        if let (Some(src), true) = (src, integer) {
            if matches!(&*node.op.name(), "Identity" | "Cast") {
                self.values.insert(out_outlet, Value::Tensor(src));
                return Ok(());
            }
            if node
                .op_as::<AxisOp>()
                .is_some_and(|a| !matches!(a, AxisOp::Move(..)))
            {
                let out = self.emit(node, Op::Reshape, vec![src])?;
                self.int_values.insert(out);
                self.values.insert(out_outlet, Value::Tensor(out));
                return Ok(());
            }
        }
        bail!(
            "produces {dt:?} at run time; flowrt computes in f32 only (shape-only integer \
             subgraphs must fold away for a symbolic batch)"
        );
    }
}
