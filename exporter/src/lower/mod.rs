//! Lowering: tract's decluttered typed model → flowrt's [`ModelDesc`].
//!
//! Every reachable tract node becomes zero or more flowrt ops; anything flowrt cannot run
//! exactly is refused with an error naming the node and what is unsupported about it.

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, bail, Context, Result};
use flowrt::ir::{BinaryOp, Dim, InputDesc, ModelDesc, NodeDesc, Op, Role, TensorDesc, UnaryOp};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::array::{Gather, MultiBroadcastTo, Slice, TypedConcat};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::downsample::Downsample;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::logic::Iff;
use tract_onnx::tract_core::ops::math::PowConst;
use tract_onnx::tract_core::ops::nn::{GeluApproximate, LeakyRelu};
use tract_onnx::tract_core::ops::source::TypedSource;

use crate::import::{FlowrtUnary, BATCH_SYMBOL};

/// A `Transpose` op (output axis `i` = input axis `perm[i]`).
///
/// Errors: a permutation flowrt cannot store (more than 6 axes, an entry out of range).
pub(crate) fn transpose_op(perm: &[u32]) -> Result<Op> {
    Op::transpose(perm).map_err(|e| anyhow!("Transpose {perm:?}: {e}"))
}

mod cnn;
mod reduce;

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
    let needed = reachable(model, *output)?;
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
            let t = &t;
            if lw.desc.inputs.iter().any(|i| i.tensor == *t) {
                // The output is an input passed through: copy it so it has its own slot.
                let shape = lw.desc.tensors[*t as usize].shape.clone();
                let out = lw.push_tensor("output", shape, None);
                lw.desc.nodes.push(NodeDesc {
                    name: "output".into(),
                    op: Op::Reshape,
                    inputs: vec![*t],
                    output: out,
                });
                lw.desc.output = out;
            } else {
                lw.desc.output = *t;
            }
        }
        _ => bail!("the model output is a constant; it does not depend on x or t"),
    }
    fuse_dense_bias(&mut lw.desc);
    compact_tensors(&mut lw.desc);
    Ok(lw.desc)
}

/// Nodes the output depends on.
fn reachable(model: &TypedModel, output: OutletId) -> Result<HashSet<usize>> {
    let mut seen = HashSet::new();
    let mut stack = vec![output.node];
    while let Some(n) = stack.pop() {
        if seen.insert(n) {
            stack.extend(model.node(n).inputs.iter().map(|i| i.node));
        }
    }
    Ok(seen)
}

impl Lowering<'_> {
    fn push_tensor(&mut self, name: &str, shape: Vec<Dim>, data: Option<Vec<f32>>) -> u32 {
        self.desc.tensors.push(TensorDesc {
            name: name.to_string(),
            shape,
            data,
        });
        (self.desc.tensors.len() - 1) as u32
    }

    /// `k` when `d` is `k * B` for a constant `k > 1` (attention code folds heads into the
    /// batch axis: `[B, H*C, T] -> [B*H, C, T]`).
    fn batch_multiple(&self, d: &TDim) -> Option<u32> {
        let b = TDim::Sym(self.batch.clone());
        match d {
            TDim::MulInt(k, inner) if **inner == b && *k > 1 => u32::try_from(*k).ok(),
            _ => None,
        }
    }

    /// flowrt dims of a tract shape. A leading `k * B` becomes the two dims `[B, k]` (the
    /// same elements in the same order), so a tensor with heads folded into the batch keeps
    /// a plain batch dim; [`Lowering::axis`] maps the axes of such tensors.
    fn dims_to_shape(&self, dims: &[TDim]) -> Result<Vec<Dim>> {
        let b = TDim::Sym(self.batch.clone());
        let mut shape = Vec::with_capacity(dims.len() + 1);
        for d in dims {
            if *d == b {
                shape.push(Dim::Batch);
            } else if let Some(k) = self.batch_multiple(d) {
                shape.push(Dim::Batch);
                shape.push(Dim::Fixed(k));
            } else if let Ok(n) = d.to_i64() {
                shape.push(Dim::Fixed(
                    u32::try_from(n).map_err(|_| anyhow!("dim {n} too large"))?,
                ));
            } else {
                bail!("dimension `{d}` is not supported (only the batch size B, k·B, or a fixed size)");
            }
        }
        if shape.iter().filter(|d| **d == Dim::Batch).count() > 1 {
            bail!("shape {dims:?} uses the batch size twice");
        }
        Ok(shape)
    }

    fn shape_of(&self, outlet: OutletId) -> Result<Vec<Dim>> {
        let fact = self.model.outlet_fact(outlet)?;
        self.dims_to_shape(&fact.shape.to_tvec())
    }

    /// The tract axis holding `k * B` in the value at `outlet`, if any (stored as the two
    /// flowrt axes `[B, k]`).
    fn split_axis(&self, outlet: OutletId) -> Result<Option<usize>> {
        let fact = self.model.outlet_fact(outlet)?;
        Ok(fact
            .shape
            .to_tvec()
            .iter()
            .position(|d| self.batch_multiple(d).is_some()))
    }

    /// `true` when the tract value has a `k * B` dim (stored as `[B, k]`).
    fn is_split(&self, outlet: OutletId) -> Result<bool> {
        Ok(self.split_axis(outlet)?.is_some())
    }

    /// The flowrt axis of tract axis `axis` of the value at `outlet` (shifted by one past a
    /// split `k * B` dim; the split axis itself has no single flowrt axis).
    fn axis(&self, outlet: OutletId, axis: usize) -> Result<usize> {
        match self.split_axis(outlet)? {
            None => Ok(axis),
            Some(s) if axis < s => Ok(axis),
            Some(s) if axis == s => {
                bail!("an op along a batch axis merged with heads (k·B) is not supported")
            }
            Some(_) => Ok(axis + 1),
        }
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
                let shape = k.shape().iter().map(|&d| Dim::Fixed(d as u32)).collect();
                let name = self.model.node(outlet.node).name.clone();
                let id = self.push_tensor(&name, shape, Some(data));
                self.values.insert(outlet, Value::Tensor(id));
                Ok(id)
            }
        }
    }

    fn emit(&mut self, node: &TypedNode, op: Op, inputs: Vec<u32>) -> Result<u32> {
        let shape = self.shape_of(OutletId::new(node.id, 0))?;
        self.emit_shaped(&node.name, op, inputs, shape)
    }

    fn emit_shaped(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<u32>,
        shape: Vec<Dim>,
    ) -> Result<u32> {
        let out = self.push_tensor(name, shape, None);
        self.desc.nodes.push(NodeDesc {
            name: name.to_string(),
            op,
            inputs,
            output: out,
        });
        Ok(out)
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
        let out_fact = &node.outputs[0].fact;
        // Comparisons yield booleans, which flowrt keeps as f32 masks (1.0 / 0.0).
        let is_comparison = node
            .op_as::<TypedBinOp>()
            .is_some_and(|b| matches!(b.0.name(), "GT" | "LT" | "GTE" | "LTE" | "Eq"));
        if out_fact.datum_type != f32::datum_type()
            && !(is_comparison && out_fact.datum_type == bool::datum_type())
        {
            // Integer label values on their way to a Gather index: a Cast between integer
            // types (or Identity) is the same values, a shape op is a Reshape.
            let src = match node.inputs.first().map(|i| self.value(*i)).transpose()? {
                Some(Value::Tensor(t)) if self.int_values.contains(&t) => Some(t),
                _ => None,
            };
            // tract types an ONNX Cast to int64 as TDim (its symbolic-dim integer type).
            let integer =
                out_fact.datum_type.is_integer() || out_fact.datum_type == TDim::datum_type();
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
                "produces {:?} at run time; flowrt computes in f32 only (shape-only integer \
                 subgraphs must fold away for a symbolic batch)",
                out_fact.datum_type
            );
        }
        let out = if let Some(bin) = node.op_as::<TypedBinOp>() {
            let op = match bin.0.name() {
                "Add" => BinaryOp::Add,
                "Sub" => BinaryOp::Sub,
                "Mul" => BinaryOp::Mul,
                "Div" => BinaryOp::Div,
                "Pow" => BinaryOp::Pow,
                "Max" => BinaryOp::Max,
                "Min" => BinaryOp::Min,
                "GT" => BinaryOp::Greater,
                "LT" => BinaryOp::Less,
                "GTE" => BinaryOp::GreaterOrEqual,
                "LTE" => BinaryOp::LessOrEqual,
                "Eq" => BinaryOp::Equal,
                other => bail!("binary op {other} is not supported"),
            };
            let a = self.tensor(node.inputs[0])?;
            let b = self.tensor(node.inputs[1])?;
            self.emit(node, Op::Binary(op), vec![a, b])?
        } else if let Some(ew) = node.op_as::<ElementWiseOp>() {
            let x = self.tensor(node.inputs[0])?;
            let pow = ew.0.downcast_ref::<PowConst>().map(|p| p.exponent);
            if pow == Some(2.0) {
                self.emit(node, Op::Unary(UnaryOp::Square), vec![x])?
            } else if pow == Some(3.0) {
                // x^3 as x * x * x (GELU-tanh's cube; libm's powf would cost 20x more): at
                // most ~1.5 ulp from the exact cube.
                let shape = self.desc.tensors[x as usize].shape.clone();
                let sq = self.emit_shaped(
                    &format!("{}.square", node.name),
                    Op::Unary(UnaryOp::Square),
                    vec![x],
                    shape,
                )?;
                self.emit(node, Op::Binary(BinaryOp::Mul), vec![sq, x])?
            } else if let Some(pc) = ew.0.downcast_ref::<PowConst>() {
                let rank = self.desc.tensors[x as usize].shape.len();
                let e = self.push_tensor(
                    &format!("{}.exponent", node.name),
                    vec![Dim::Fixed(1); rank],
                    Some(vec![pc.exponent]),
                );
                self.emit(node, Op::Binary(BinaryOp::Pow), vec![x, e])?
            } else {
                let op = unary_of(ew)?;
                self.emit(node, Op::Unary(op), vec![x])?
            }
        } else if let Some(ein) = node.op_as::<EinSum>() {
            self.lower_einsum(node, ein)?
        } else if let Some(axis_op) = node.op_as::<AxisOp>() {
            let x = self.tensor(node.inputs[0])?;
            match axis_op {
                AxisOp::Move(from, to) => {
                    // Permute tract axes; a split `k * B` axis moves as its two flowrt axes.
                    let rank = self.model.outlet_fact(node.inputs[0])?.rank();
                    let mut tract_perm: Vec<usize> = (0..rank).collect();
                    let moved = tract_perm.remove(*from);
                    tract_perm.insert(*to, moved);
                    let split = self.split_axis(node.inputs[0])?;
                    let flowrt_axes = |a: usize| -> Vec<u32> {
                        match split {
                            Some(s) if a == s => vec![s as u32, s as u32 + 1],
                            Some(s) if a > s => vec![a as u32 + 1],
                            _ => vec![a as u32],
                        }
                    };
                    let perm: Vec<u32> = tract_perm.iter().flat_map(|a| flowrt_axes(*a)).collect();
                    self.emit(node, transpose_op(&perm)?, vec![x])?
                }
                _ => self.emit(node, Op::Reshape, vec![x])?,
            }
        } else if node.op_is::<Iff>() {
            let inputs = node
                .inputs
                .iter()
                .map(|i| self.tensor(*i))
                .collect::<Result<Vec<_>>>()?;
            self.emit(node, Op::Where, inputs)?
        } else if let Some(concat) = node.op_as::<TypedConcat>() {
            let inputs = node
                .inputs
                .iter()
                .map(|i| self.tensor(*i))
                .collect::<Result<Vec<_>>>()?;
            let axis = self.axis(node.inputs[0], concat.axis)? as u32;
            self.emit(node, Op::Concat { axis }, inputs)?
        } else if let Some(gather) = node.op_as::<Gather>() {
            self.lower_gather(node, gather)?
        } else if node.op_is::<MultiBroadcastTo>() {
            let x = self.tensor(node.inputs[0])?;
            self.emit(node, Op::Expand, vec![x])?
        } else if let Some(slice) = node.op_as::<Slice>() {
            let x = self.tensor(node.inputs[0])?;
            let start = slice
                .start
                .to_i64()
                .map_err(|_| anyhow!("Slice start is not fixed"))?;
            let end = slice
                .end
                .to_i64()
                .map_err(|_| anyhow!("Slice end is not fixed"))?;
            let op = Op::Slice {
                axis: self.axis(node.inputs[0], slice.axis)? as u32,
                start: start as u32,
                end: end as u32,
                step: 1,
            };
            self.emit(node, op, vec![x])?
        } else if let Some(ds) = node.op_as::<Downsample>() {
            // tract's form of a strided Slice: every `stride`-th element from `modulo`.
            let x = self.tensor(node.inputs[0])?;
            let axis = self.axis(node.inputs[0], ds.axis)?;
            let dim = self.desc.tensors[x as usize].shape.get(axis).copied();
            let (Some(Dim::Fixed(len)), Ok(step)) = (dim, u32::try_from(ds.stride)) else {
                bail!(
                    "strided slice along the batch axis or with a negative step is not supported"
                );
            };
            if step == 0 || ds.modulo as u32 >= len {
                bail!(
                    "strided slice with stride {} from {} of {len} is empty",
                    ds.stride,
                    ds.modulo
                );
            }
            let op = Op::Slice {
                axis: axis as u32,
                start: ds.modulo as u32,
                end: len,
                step,
            };
            self.emit(node, op, vec![x])?
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

    /// EinSum from MatMul / Gemm: `[..., K] x const[K, N]` becomes Dense (with transposes
    /// where the axes are ordered otherwise); two run-time operands in batched-matmul order
    /// become MatMul.
    fn lower_einsum(&mut self, node: &TypedNode, ein: &EinSum) -> Result<u32> {
        if ein.q_params.is_some() {
            bail!("quantized einsum is not supported");
        }
        if node.inputs.len() == 1 {
            return self.lower_einsum_unary(node, ein);
        }
        if node.inputs.len() != 2 {
            bail!(
                "einsum with {} operands is not supported (one or two)",
                node.inputs.len()
            );
        }
        let [a_str, b_str, o_str]: [String; 3] = self
            .einsum_letters(node, ein)?
            .try_into()
            .map_err(|_| anyhow!("internal: einsum letters"))?;
        let a_konst = matches!(self.value(node.inputs[0])?, Value::Konst(_));
        let b_konst = matches!(self.value(node.inputs[1])?, Value::Konst(_));
        let expr = format!("{a_str},{b_str}->{o_str}");
        if a_konst != b_konst {
            let (x_outlet, x_str, w_outlet, w_str) = if b_konst {
                (node.inputs[0], a_str, node.inputs[1], b_str)
            } else {
                (node.inputs[1], b_str, node.inputs[0], a_str)
            };
            return self.lower_dense(node, &expr, x_outlet, &x_str, w_outlet, &w_str, &o_str);
        }
        let a = self.tensor(node.inputs[0])?;
        let b = self.tensor(node.inputs[1])?;
        self.lower_matmul(node, &expr, (a, &a_str), (b, &b_str), &o_str)
    }

    /// The einsum's operand letters, then the output's, as flowrt's axes: a value with heads
    /// folded into the batch (`k * B`, stored as `[B, k]`) gets a fresh letter for its `k`
    /// axis right after the batch letter.
    fn einsum_letters(&self, node: &TypedNode, ein: &EinSum) -> Result<Vec<String>> {
        let (ins, outs) = ein.axes.to_strs();
        let mut strs: Vec<String> = ins.iter().chain(outs.iter()).cloned().collect();
        let fresh = ('A'..='Z')
            .chain('a'..='z')
            .find(|c| strs.iter().all(|s| !s.contains(*c)))
            .ok_or_else(|| anyhow!("einsum uses every letter"))?;
        let outlets = node
            .inputs
            .iter()
            .copied()
            .chain([OutletId::new(node.id, 0)]);
        for (s, outlet) in strs.iter_mut().zip(outlets) {
            if let Some(ax) = self.split_axis(outlet)? {
                let at = s.char_indices().nth(ax + 1).map_or(s.len(), |(i, _)| i);
                s.insert(at, fresh);
            }
        }
        Ok(strs)
    }

    /// A one-operand einsum (`nhwpqc->nchpwq`: a permutation, e.g. DiT unpatchify), with
    /// letters missing from the output summed first.
    fn lower_einsum_unary(&mut self, node: &TypedNode, ein: &EinSum) -> Result<u32> {
        let [a_str, o_str]: [String; 2] = self
            .einsum_letters(node, ein)?
            .try_into()
            .map_err(|_| anyhow!("internal: einsum letters"))?;
        let unique = |s: &str| s.chars().collect::<HashSet<_>>().len() == s.len();
        let o_shape = self.shape_of(OutletId::new(node.id, 0))?;
        let new_axis = o_str
            .chars()
            .zip(&o_shape)
            .any(|(c, d)| !a_str.contains(c) && *d != Dim::Fixed(1));
        if !unique(&a_str) || !unique(&o_str) || new_axis {
            bail!("einsum `{a_str}->{o_str}` (a diagonal or a new axis) is not supported");
        }
        let a = self.tensor(node.inputs[0])?;
        let (a, kept) = self.sum_private_axes(node, a, &a_str, "", &o_str, "a")?;
        if kept == o_str {
            return self.emit(node, Op::Reshape, vec![a]);
        }
        self.arrange(node, a, &kept, &o_str)
    }

    /// An einsum of two run-time operands as one batched MatMul: letters in both operands
    /// and the output are batch axes, in one operand and the output the rows / columns, in
    /// both operands only the summed axes; each operand is transposed to `[batch.., M, K]`
    /// / `[batch.., K, N]` (merging several row, column or summed letters by a Reshape)
    /// and the product is brought into the output order.
    fn lower_matmul(
        &mut self,
        node: &TypedNode,
        expr: &str,
        (a, a_str): (u32, &str),
        (b, b_str): (u32, &str),
        o_str: &str,
    ) -> Result<u32> {
        let bad = |why: &str| anyhow!("einsum `{expr}` is not supported: {why}");
        // Axes of one operand only (in neither the other nor the output) are summed first
        // (unit axes just dropped).
        let (a, a_own) = self.sum_private_axes(node, a, a_str, b_str, o_str, "a")?;
        let (b, b_own) = self.sum_private_axes(node, b, b_str, &a_own, o_str, "b")?;
        let (a_str, b_str) = (a_own.as_str(), b_own.as_str());
        let dim_of = |lw: &Self, c: char| -> Dim {
            if let Some(p) = a_str.find(c) {
                lw.desc.tensors[a as usize].shape[p]
            } else if let Some(p) = b_str.find(c) {
                lw.desc.tensors[b as usize].shape[p]
            } else {
                Dim::Fixed(1)
            }
        };
        let in_a = |c: char| a_str.contains(c);
        let in_b = |c: char| b_str.contains(c);
        let in_o = |c: char| o_str.contains(c);
        let batch: Vec<char> = o_str.chars().filter(|c| in_a(*c) && in_b(*c)).collect();
        let m: Vec<char> = a_str.chars().filter(|c| in_o(*c) && !in_b(*c)).collect();
        let k: Vec<char> = a_str.chars().filter(|c| in_b(*c) && !in_o(*c)).collect();
        let n: Vec<char> = b_str.chars().filter(|c| in_o(*c) && !in_a(*c)).collect();
        if a_str
            .chars()
            .chain(b_str.chars())
            .any(|c| !(in_o(c) || (in_a(c) && in_b(c))))
        {
            return Err(bad("an axis summed within one operand"));
        }
        if o_str.chars().any(|c| !in_a(c) && !in_b(c)) {
            return Err(bad("an output axis from neither operand"));
        }
        // A batch-dim letter may be a batch axis, or the only row / column letter.
        let has_b = |lw: &Self, cs: &[char]| cs.iter().any(|c| dim_of(lw, *c) == Dim::Batch);
        if has_b(self, &k) || (has_b(self, &m) && m.len() > 1) || (has_b(self, &n) && n.len() > 1) {
            return Err(bad(
                "the batch axis would be summed or merged with another axis",
            ));
        }
        let merged = |lw: &Self, cs: &[char]| -> Dim {
            match cs {
                [c] => dim_of(lw, *c),
                _ => Dim::Fixed(
                    cs.iter()
                        .map(|c| match dim_of(lw, *c) {
                            Dim::Fixed(v) => v,
                            Dim::Batch => 1,
                        })
                        .product(),
                ),
            }
        };
        let operand = |lw: &mut Self,
                       t: u32,
                       s: &str,
                       first: &[char],
                       second: &[char],
                       tag: &str|
         -> Result<u32> {
            let order: String = batch.iter().chain(first).chain(second).collect();
            let mut cur = t;
            if order != s {
                let perm: Vec<u32> = order
                    .chars()
                    .map(|c| s.find(c).unwrap_or(0) as u32)
                    .collect();
                let xs = lw.desc.tensors[cur as usize].shape.clone();
                let shape = perm.iter().map(|p| xs[*p as usize]).collect();
                cur = lw.emit_shaped(
                    &format!("{}.{tag}_order", node.name),
                    transpose_op(&perm)?,
                    vec![cur],
                    shape,
                )?;
            }
            let mut shape: Vec<Dim> = batch.iter().map(|c| dim_of(lw, *c)).collect();
            shape.push(merged(lw, first));
            shape.push(merged(lw, second));
            if shape != lw.desc.tensors[cur as usize].shape {
                cur = lw.emit_shaped(
                    &format!("{}.{tag}_2d", node.name),
                    Op::Reshape,
                    vec![cur],
                    shape,
                )?;
            }
            Ok(cur)
        };
        let a2 = operand(self, a, a_str, &m, &k, "a")?;
        let b2 = operand(self, b, b_str, &k, &n, "b")?;
        let mut shape: Vec<Dim> = batch.iter().map(|c| dim_of(self, *c)).collect();
        shape.push(merged(self, &m));
        shape.push(merged(self, &n));
        let mm_str: String = batch.iter().chain(&m).chain(&n).collect();
        let mm_single = m.len() == 1 && n.len() == 1;
        if mm_single && mm_str == o_str {
            return self.emit(node, Op::MatMul, vec![a2, b2]);
        }
        let mut cur = self.emit_shaped(
            &format!("{}.matmul", node.name),
            Op::MatMul,
            vec![a2, b2],
            shape,
        )?;
        if !mm_single {
            let shape: Vec<Dim> = mm_str.chars().map(|c| dim_of(self, c)).collect();
            if shape != self.desc.tensors[cur as usize].shape {
                if mm_str == o_str {
                    return self.emit(node, Op::Reshape, vec![cur]);
                }
                cur = self.emit_shaped(
                    &format!("{}.unmerge", node.name),
                    Op::Reshape,
                    vec![cur],
                    shape,
                )?;
            }
        }
        self.arrange(node, cur, &mm_str, o_str)
    }

    /// `x · W` for a constant `W`: the summed letters (in `x` and `w`, not the output)
    /// become one `K` (transposed last and merged), `w`'s other letters one `N`, and the
    /// Dense result is reshaped / transposed into the output order. A weight with no output
    /// letter (one output channel) puts `N = 1` on an output unit axis.
    #[allow(clippy::too_many_arguments)]
    fn lower_dense(
        &mut self,
        node: &TypedNode,
        expr: &str,
        x_outlet: OutletId,
        x_str: &str,
        w_outlet: OutletId,
        w_str: &str,
        o_str: &str,
    ) -> Result<u32> {
        let unsupported =
            || anyhow!("einsum `{expr}` with a constant operand is not a dense layer");
        let Value::Konst(w) = self.value(w_outlet)? else {
            unreachable!()
        };
        let summed: Vec<char> = w_str
            .chars()
            .filter(|c| x_str.contains(*c) && !o_str.contains(*c))
            .collect();
        if summed.is_empty() {
            return self.lower_outer(node, x_outlet, x_str, w_outlet, w_str, o_str, expr);
        }
        // Axes of x in neither the weight nor the output (unit axes of a reshape, or a real
        // sum): summed / dropped first.
        let x0 = self.tensor(x_outlet)?;
        let (x_pre, x_own) = self.sum_private_axes(node, x0, x_str, w_str, o_str, "x")?;
        let x_str = x_own.as_str();
        let mut outs: Vec<char> = w_str.chars().filter(|c| !summed.contains(c)).collect();
        // Every weight letter is summed or an output column; x's others go to the output.
        if outs
            .iter()
            .any(|c| x_str.contains(*c) || !o_str.contains(*c))
            || x_str
                .chars()
                .any(|c| !summed.contains(&c) && !o_str.contains(c))
        {
            return Err(unsupported());
        }
        let o_shape = self.shape_of(OutletId::new(node.id, 0))?;
        let w_dims: Vec<usize> = w.shape().to_vec();
        let dim_w = |c: char| w_str.find(c).map_or(1, |p| w_dims[p]);
        if outs.is_empty() {
            let unit = o_str
                .chars()
                .zip(&o_shape)
                .find(|(c, d)| !x_str.contains(*c) && **d == Dim::Fixed(1))
                .map(|(c, _)| c)
                .ok_or_else(unsupported)?;
            outs.push(unit);
        }
        // Weight as [K, N]: permute to summed ++ outs, row-major.
        let wd = konst_f32(&w)?;
        let kk: usize = summed.iter().map(|c| dim_w(*c)).product();
        let nn: usize = outs.iter().map(|c| dim_w(*c)).product();
        let order: Vec<char> = summed.iter().chain(&outs).copied().collect();
        // (A unit output letter the weight lacks adds no axis.)
        let perm: Vec<usize> = order.iter().filter_map(|c| w_str.find(*c)).collect();
        let w_kn = permute_const(&wd, &w_dims, &perm);
        let w_id = self.push_tensor(
            &format!("{}.weight", node.name),
            vec![Dim::Fixed(kk as u32), Dim::Fixed(nn as u32)],
            Some(w_kn),
        );
        // x with the summed letters last (in the weight's order), merged into K.
        let mut x = x_pre;
        let rest: Vec<char> = x_str.chars().filter(|c| !summed.contains(c)).collect();
        let x_order: String = rest.iter().chain(&summed).collect();
        if x_order != x_str {
            let perm: Vec<u32> = x_order
                .chars()
                .map(|c| x_str.find(c).unwrap_or(0) as u32)
                .collect();
            let xs = &self.desc.tensors[x as usize].shape;
            let shape = perm.iter().map(|&p| xs[p as usize]).collect();
            x = self.emit_shaped(
                &format!("{}.k_last", node.name),
                transpose_op(&perm)?,
                vec![x],
                shape,
            )?;
        }
        let xs = self.desc.tensors[x as usize].shape.clone();
        let mut k_shape = xs[..rest.len()].to_vec();
        k_shape.push(Dim::Fixed(kk as u32));
        if k_shape != xs {
            x = self.emit_shaped(
                &format!("{}.k_merged", node.name),
                Op::Reshape,
                vec![x],
                k_shape.clone(),
            )?;
        }
        let mut dense_shape = k_shape[..rest.len()].to_vec();
        dense_shape.push(Dim::Fixed(nn as u32));
        let single = outs.len() == 1;
        let dense_str: String = rest.iter().chain(&outs).collect();
        if single && dense_str == o_str {
            return self.emit(node, Op::Dense, vec![x, w_id]);
        }
        let mut d = self.emit_shaped(
            &format!("{}.dense", node.name),
            Op::Dense,
            vec![x, w_id],
            dense_shape,
        )?;
        if !single {
            let mut shape = k_shape[..rest.len()].to_vec();
            shape.extend(outs.iter().map(|c| Dim::Fixed(dim_w(*c) as u32)));
            if dense_str == o_str {
                return self.emit(node, Op::Reshape, vec![d]);
            }
            d = self.emit_shaped(
                &format!("{}.unmerge", node.name),
                Op::Reshape,
                vec![d],
                shape,
            )?;
        }
        self.arrange(node, d, &dense_str, o_str)
            .map_err(|_| unsupported())
    }

    /// Sums (or, for unit dims, drops) the axes of `t` (letters `s`) that are in neither
    /// `other` nor `out`; returns the new tensor and its letters.
    fn sum_private_axes(
        &mut self,
        node: &TypedNode,
        t: u32,
        s: &str,
        other: &str,
        out: &str,
        tag: &str,
    ) -> Result<(u32, String)> {
        let private: Vec<usize> = s
            .char_indices()
            .filter(|(_, c)| !other.contains(*c) && !out.contains(*c))
            .map(|(i, _)| i)
            .collect();
        if private.is_empty() {
            return Ok((t, s.to_string()));
        }
        let shape = self.desc.tensors[t as usize].shape.clone();
        let mut cur = t;
        for &i in private.iter().rev() {
            let d = shape[i];
            if d == Dim::Batch {
                bail!("einsum sums over the batch axis");
            }
            if d != Dim::Fixed(1) {
                let mut reduced = self.desc.tensors[cur as usize].shape.clone();
                reduced[i] = Dim::Fixed(1);
                let op = Op::Reduce {
                    kind: flowrt::ir::ReduceKind::Sum,
                    start: i as u8,
                    end: i as u8 + 1,
                };
                cur = self.emit_shaped(
                    &format!("{}.{tag}_sum{i}", node.name),
                    op,
                    vec![cur],
                    reduced,
                )?;
            }
        }
        let kept: Vec<Dim> = shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !private.contains(i))
            .map(|(_, d)| *d)
            .collect();
        let cur = self.emit_shaped(
            &format!("{}.{tag}_squeeze", node.name),
            Op::Reshape,
            vec![cur],
            kept,
        )?;
        let letters = s
            .char_indices()
            .filter(|(i, _)| !private.contains(i))
            .map(|(_, c)| c)
            .collect();
        Ok((cur, letters))
    }

    /// Brings `t`, whose axes are the letters of `from`, into the node's output order `to`
    /// (a permutation of `from` plus unit axes): a Transpose and / or a Reshape, the last
    /// step named after the node.
    fn arrange(&mut self, node: &TypedNode, t: u32, from: &str, to: &str) -> Result<u32> {
        let core: String = to.chars().filter(|c| from.contains(*c)).collect();
        if core.len() != from.len() {
            bail!("einsum output `{to}` lacks axes of `{from}`");
        }
        let mut cur = t;
        if core != from {
            let perm: Vec<u32> = core
                .chars()
                .map(|c| from.find(c).map(|p| p as u32).unwrap_or(0))
                .collect();
            if core == to {
                return self.emit(node, transpose_op(&perm)?, vec![cur]);
            }
            let xs = self.desc.tensors[cur as usize].shape.clone();
            let shape = perm.iter().map(|p| xs[*p as usize]).collect();
            cur = self.emit_shaped(
                &format!("{}.order", node.name),
                transpose_op(&perm)?,
                vec![cur],
                shape,
            )?;
        }
        // Unit axes to add (or, when nothing moved, an identity that is still its own node).
        self.emit(node, Op::Reshape, vec![cur])
    }
}

impl Lowering<'_> {
    /// ONNX `Gather(table, idx, axis=0)`: an embedding lookup. `idx` is the label (integer
    /// values carried as f32) or an integer constant; the table has no batch dim.
    fn lower_gather(&mut self, node: &TypedNode, gather: &Gather) -> Result<u32> {
        let runtime_table = match self.value(node.inputs[0])? {
            Value::Tensor(t) => self.desc.tensors[t as usize].data.is_none(),
            Value::Konst(_) => false,
        };
        if runtime_table {
            if let Value::Konst(k) = self.value(node.inputs[1])? {
                return self.lower_gather_slices(node, gather.axis, &k);
            }
        }
        let mut table = self.tensor(node.inputs[0])?;
        let axis = gather.axis;
        // A constant table gathered along another axis (tract moves embedding tables): the
        // same lookup on the table with that axis moved first, then the result permuted.
        let moved = if axis != 0 {
            let t = &self.desc.tensors[table as usize];
            let (Some(data), rank) = (t.data.clone(), t.shape.len()) else {
                bail!("Gather along axis {axis} of a run-time tensor with run-time indices is not supported");
            };
            if axis >= rank {
                bail!("Gather axis {axis} is out of range for rank {rank}");
            }
            let dims: Vec<usize> = t
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n as usize,
                    Dim::Batch => 0,
                })
                .collect();
            let mut perm = vec![axis];
            perm.extend((0..rank).filter(|a| *a != axis));
            let t_data = permute_const(&data, &dims, &perm);
            let mut shape = vec![t.shape[axis]];
            shape.extend(t.shape[..axis].iter().copied());
            shape.extend(t.shape[axis + 1..].iter().copied());
            table = self.push_tensor(
                &format!("{}.table_axis_first", node.name),
                shape,
                Some(t_data),
            );
            Some(rank)
        } else {
            None
        };
        let n = match self.desc.tensors[table as usize].shape.first() {
            Some(Dim::Fixed(n)) => *n,
            _ => bail!("Gather table must have a fixed first dim (no batch dim)"),
        };
        let idx = match self.value(node.inputs[1])? {
            Value::Tensor(t) if self.int_values.contains(&t) => t,
            Value::Tensor(_) => bail!(
                "Gather indices computed at run time from float values are not supported \
                 (only the label input, or a constant)"
            ),
            Value::Konst(k) => {
                let k = k
                    .cast_to::<i64>()
                    .map_err(|e| anyhow!("Gather indices: {e}"))?;
                let view = k.try_as_plain_ram()?;
                let mut data = Vec::new();
                for &i in view.as_slice::<i64>()? {
                    // ONNX counts negative indices from the end; flowrt's Gather does not.
                    let j = if i < 0 { i + i64::from(n) } else { i };
                    if !(0..i64::from(n)).contains(&j) {
                        bail!("Gather index {i} is out of range for a table of {n} rows");
                    }
                    data.push(j as f32);
                }
                let shape = k.shape().iter().map(|&d| Dim::Fixed(d as u32)).collect();
                self.push_tensor(&format!("{}.indices", node.name), shape, Some(data))
            }
        };
        let Some(rank) = moved else {
            return self.emit(node, Op::Gather, vec![table, idx]);
        };
        // Gathered: idx dims, then the table's axes before `axis`, then those after it;
        // ONNX's order is before-axes, idx dims, after-axes.
        let ni = self.desc.tensors[idx as usize].shape.len();
        let mut shape = self.desc.tensors[idx as usize].shape.clone();
        let t_shape = self.desc.tensors[table as usize].shape.clone();
        shape.extend(t_shape[1..].iter().copied());
        let g = self.emit_shaped(
            &format!("{}.gathered", node.name),
            Op::Gather,
            vec![table, idx],
            shape,
        )?;
        let before = axis as u32;
        let mut perm: Vec<u32> = (ni as u32..ni as u32 + before).collect();
        perm.extend(0..ni as u32);
        perm.extend(ni as u32 + before..(ni + rank - 1) as u32);
        self.emit(node, transpose_op(&perm)?, vec![g])
    }

    /// `Gather` of a run-time tensor with constant indices (picking q / k / v out of a
    /// stacked projection, a head, a token): one `Slice` per index along the axis, joined by
    /// `Concat`, then reshaped to the output shape (a scalar index drops the axis).
    fn lower_gather_slices(&mut self, node: &TypedNode, axis: usize, idx: &Tensor) -> Result<u32> {
        let x = self.tensor(node.inputs[0])?;
        let axis = self.axis(node.inputs[0], axis)?;
        let shape = self.desc.tensors[x as usize].shape.clone();
        let Some(Dim::Fixed(len)) = shape.get(axis).copied() else {
            bail!("Gather along the batch axis is not supported");
        };
        let k = idx
            .cast_to::<i64>()
            .map_err(|e| anyhow!("Gather indices: {e}"))?;
        let view = k.try_as_plain_ram()?;
        let indices: Vec<u32> = view
            .as_slice::<i64>()?
            .iter()
            .map(|&i| {
                let j = if i < 0 { i + i64::from(len) } else { i };
                u32::try_from(j)
                    .ok()
                    .filter(|j| *j < len)
                    .ok_or_else(|| anyhow!("Gather index {i} is out of range for {len}"))
            })
            .collect::<Result<_>>()?;
        if indices.is_empty() {
            bail!("Gather with no indices");
        }
        let mut parts = Vec::new();
        for (n, &i) in indices.iter().enumerate() {
            let mut s = shape.clone();
            s[axis] = Dim::Fixed(1);
            let op = Op::Slice {
                axis: axis as u32,
                start: i,
                end: i + 1,
                step: 1,
            };
            parts.push(self.emit_shaped(&format!("{}.pick{n}", node.name), op, vec![x], s)?);
        }
        let joined = if parts.len() == 1 {
            parts[0]
        } else {
            let mut s = shape.clone();
            s[axis] = Dim::Fixed(parts.len() as u32);
            self.emit_shaped(
                &format!("{}.picked", node.name),
                Op::Concat { axis: axis as u32 },
                parts,
                s,
            )?
        };
        self.emit(node, Op::Reshape, vec![joined])
    }

    /// `x[...] (outer) w[n] -> [..., n]`: a dense layer with K = 1 (tract splits Gemms over
    /// concatenated inputs into such pieces).
    #[allow(clippy::too_many_arguments)]
    fn lower_outer(
        &mut self,
        node: &TypedNode,
        x_outlet: OutletId,
        x_str: &str,
        w_outlet: OutletId,
        w_str: &str,
        o_str: &str,
        expr: &str,
    ) -> Result<u32> {
        let Value::Konst(w) = self.value(w_outlet)? else {
            unreachable!()
        };
        let bad = || anyhow!("einsum `{expr}` (an outer product) is not supported in this form");
        let [n] = w_str.chars().collect::<Vec<_>>()[..] else {
            return Err(bad());
        };
        let x = self.tensor(x_outlet)?;
        let x_shape = self.desc.tensors[x as usize].shape.clone();
        let o_shape = self.shape_of(OutletId::new(node.id, 0))?;
        // x axes summed away must be unit axes; output axes from nowhere must be unit axes.
        let mut kept = Vec::new();
        let mut kept_shape = Vec::new();
        for (c, d) in x_str.chars().zip(&x_shape) {
            if o_str.contains(c) {
                kept.push(c);
                kept_shape.push(*d);
            } else if *d != Dim::Fixed(1) {
                return Err(bad());
            }
        }
        for (c, d) in o_str.chars().zip(&o_shape) {
            if c != n && !x_str.contains(c) && *d != Dim::Fixed(1) {
                return Err(bad());
            }
        }
        let o_core: Vec<char> = o_str
            .chars()
            .filter(|c| *c == n || kept.contains(c))
            .collect();
        let mut want = kept.clone();
        want.push(n);
        if o_core != want || x_str.contains(n) {
            return Err(bad());
        }
        let wd = konst_f32(&w)?;
        let n_len = wd.len() as u32;
        let w_id = self.push_tensor(
            &format!("{}.weight", node.name),
            vec![Dim::Fixed(1), Dim::Fixed(n_len)],
            Some(wd),
        );
        let mut x1_shape = kept_shape.clone();
        x1_shape.push(Dim::Fixed(1));
        let x1 = self.emit_shaped(&format!("{}.k1", node.name), Op::Reshape, vec![x], x1_shape)?;
        let mut d_shape = kept_shape;
        d_shape.push(Dim::Fixed(n_len));
        if d_shape == o_shape {
            return self.emit(node, Op::Dense, vec![x1, w_id]);
        }
        let d = self.emit_shaped(
            &format!("{}.dense", node.name),
            Op::Dense,
            vec![x1, w_id],
            d_shape,
        )?;
        self.emit(node, Op::Reshape, vec![d])
    }
}

/// The values of a constant of row-major `dims` with its axes permuted: output axis `i` is
/// input axis `perm[i]` (weight re-layouts at export).
pub(super) fn permute_const(data: &[f32], dims: &[usize], perm: &[usize]) -> Vec<f32> {
    if perm.iter().enumerate().all(|(i, p)| i == *p) {
        return data.to_vec();
    }
    let mut strides = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1];
    }
    let lens: Vec<usize> = perm.iter().map(|p| dims[*p]).collect();
    let steps: Vec<usize> = perm.iter().map(|p| strides[*p]).collect();
    let mut out = Vec::with_capacity(data.len());
    let mut idx = vec![0usize; perm.len()];
    for _ in 0..data.len() {
        out.push(data[idx.iter().zip(&steps).map(|(i, s)| i * s).sum::<usize>()]);
        for a in (0..idx.len()).rev() {
            idx[a] += 1;
            if idx[a] < lens[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    out
}

/// The f32 values of a constant; errors for other dtypes.
fn konst_f32(k: &Tensor) -> Result<Vec<f32>> {
    if k.datum_type() == bool::datum_type() {
        // A constant mask (e.g. a Where condition): flowrt's masks are f32 1.0 / 0.0.
        let view = k.try_as_plain_ram()?;
        return Ok(view
            .as_slice::<bool>()?
            .iter()
            .map(|b| f32::from(u8::from(*b)))
            .collect());
    }
    if k.datum_type() != f32::datum_type() {
        bail!(
            "constant of dtype {:?} used in arithmetic; flowrt computes in f32",
            k.datum_type()
        );
    }
    let view = k.try_as_plain_ram()?;
    Ok(view.as_slice::<f32>()?.to_vec())
}

fn unary_of(ew: &ElementWiseOp) -> Result<UnaryOp> {
    if let Some(FlowrtUnary(op)) = ew.0.downcast_ref::<FlowrtUnary>() {
        return Ok(*op);
    }
    if let Some(l) = ew.0.downcast_ref::<LeakyRelu>() {
        return Ok(UnaryOp::LeakyRelu { alpha: l.alpha });
    }
    if let Some(g) = ew.0.downcast_ref::<GeluApproximate>() {
        if g.fast_impl {
            bail!("GeluApproximate with fast_impl (x^2 form) is not supported");
        }
        return Ok(UnaryOp::GeluTanh);
    }
    Ok(match ew.0.name().as_str() {
        "Sigmoid" => UnaryOp::Sigmoid,
        "Tanh" => UnaryOp::Tanh,
        "Exp" => UnaryOp::Exp,
        "Ln" => UnaryOp::Log,
        "Sin" => UnaryOp::Sin,
        "Cos" => UnaryOp::Cos,
        "Sqrt" => UnaryOp::Sqrt,
        "Rsqrt" => UnaryOp::Rsqrt,
        "Floor" => UnaryOp::Floor,
        "Ceil" => UnaryOp::Ceil,
        "RoundHalfToEven" => UnaryOp::Round,
        "Sign" => UnaryOp::Sign,
        "Recip" => UnaryOp::Recip,
        "Abs" => UnaryOp::Abs,
        "Neg" => UnaryOp::Neg,
        "Square" => UnaryOp::Square,
        "Erf" => UnaryOp::Erf,
        "Silu" => UnaryOp::Silu,
        "GeluExact" => UnaryOp::GeluErf,
        other => bail!("element-wise op {other} is not supported"),
    })
}

/// Peephole: `Dense(x, W)` whose only consumer is `Add(dense, const b)` with `b` of shape
/// `[N]` or `[1, ..., 1, N]` becomes `Dense(x, W, b)`.
fn fuse_dense_bias(desc: &mut ModelDesc) {
    let mut uses: HashMap<u32, usize> = HashMap::new();
    for n in &desc.nodes {
        for i in &n.inputs {
            *uses.entry(*i).or_default() += 1;
        }
    }
    let mut removed = vec![false; desc.nodes.len()];
    for i in 0..desc.nodes.len() {
        if desc.nodes[i].op != Op::Dense || desc.nodes[i].inputs.len() != 2 {
            continue;
        }
        let d_out = desc.nodes[i].output;
        if uses.get(&d_out) != Some(&1) || d_out == desc.output {
            continue;
        }
        let Some(j) = desc.nodes.iter().position(|n| n.inputs.contains(&d_out)) else {
            continue;
        };
        let add = &desc.nodes[j];
        if add.op != Op::Binary(BinaryOp::Add) {
            continue;
        }
        let other = if add.inputs[0] == d_out {
            add.inputs[1]
        } else {
            add.inputs[0]
        };
        let w = desc.nodes[i].inputs[1];
        let n_cols = desc.tensors[w as usize].shape[1];
        let bias = &desc.tensors[other as usize];
        let Some(data) = bias.data.clone() else {
            continue;
        };
        let shape_ok = bias.shape.last() == Some(&n_cols)
            && bias.shape[..bias.shape.len() - 1]
                .iter()
                .all(|d| *d == Dim::Fixed(1))
            && bias.shape.len() <= desc.tensors[d_out as usize].shape.len();
        if !shape_ok {
            continue;
        }
        let name = format!("{}.bias", desc.nodes[i].name);
        desc.tensors.push(TensorDesc {
            name,
            shape: vec![n_cols],
            data: Some(data),
        });
        let b_id = (desc.tensors.len() - 1) as u32;
        let add_out = desc.nodes[j].output;
        desc.nodes[i].inputs.push(b_id);
        desc.nodes[i].output = add_out;
        removed[j] = true;
    }
    let mut k = 0;
    desc.nodes.retain(|_| {
        let keep = !removed[k];
        k += 1;
        keep
    });
}

/// Drops tensors no node, input or output refers to, and renumbers the rest in order.
fn compact_tensors(desc: &mut ModelDesc) {
    let mut used = vec![false; desc.tensors.len()];
    used[desc.output as usize] = true;
    for i in &desc.inputs {
        used[i.tensor as usize] = true;
    }
    for n in &desc.nodes {
        used[n.output as usize] = true;
        for i in &n.inputs {
            used[*i as usize] = true;
        }
    }
    let mut remap = vec![u32::MAX; desc.tensors.len()];
    let mut next = 0u32;
    for (i, u) in used.iter().enumerate() {
        if *u {
            remap[i] = next;
            next += 1;
        }
    }
    let mut i = 0;
    desc.tensors.retain(|_| {
        let keep = used[i];
        i += 1;
        keep
    });
    desc.output = remap[desc.output as usize];
    for inp in &mut desc.inputs {
        inp.tensor = remap[inp.tensor as usize];
    }
    for n in &mut desc.nodes {
        n.output = remap[n.output as usize];
        for i in &mut n.inputs {
            *i = remap[*i as usize];
        }
    }
}
