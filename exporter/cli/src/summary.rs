//! The numbers behind `flowrt inspect`'s summary: the graph by op family (nodes, parameters,
//! multiply-accumulates for one sample) and its memory plan (tensors, the peak of live
//! activations, the arena, the weights by stored type). Pure functions of a [`Model`].

use std::collections::HashMap;

use flowrt::format::{Dim, NodeOp, TensorKind};
use flowrt::ops::{Unary, Weights};
use flowrt::Model;

/// Op families, in the order they are printed.
pub const FAMILIES: [&str; 8] = [
    "matmul",
    "conv",
    "norm/reduce",
    "activation",
    "elementwise",
    "pool/resize",
    "shape",
    "gather",
];

/// The family of an op: `matmul` (Dense, MatMul), `conv` (Conv, ConvTranspose),
/// `norm/reduce` (Reduce, Softmax, Norm: the normalisations), `activation`
/// (non-linear unary functions: ReLU, SiLU, GELU, sigmoid, tanh, sin, exp ..., and their
/// tables, `Lut`),
/// `elementwise` (binary arithmetic and comparisons, Where, and the arithmetic unary ops
/// neg, abs, recip, square, sqrt, rsqrt, floor, ceil, round), `pool/resize`, `shape`
/// (Reshape, Expand, Transpose, Slice, Concat, Pad) and `gather` (embedding tables).
pub fn family_of(op: &NodeOp) -> &'static str {
    match op {
        NodeOp::Dense | NodeOp::MatMul => "matmul",
        NodeOp::Conv { .. } | NodeOp::ConvTranspose { .. } => "conv",
        NodeOp::Reduce { .. } | NodeOp::Softmax { .. } | NodeOp::Norm { .. } => "norm/reduce",
        NodeOp::Unary(u) => match u {
            Unary::Neg
            | Unary::Abs
            | Unary::Recip
            | Unary::Square
            | Unary::Sqrt
            | Unary::Rsqrt
            | Unary::Floor
            | Unary::Ceil
            | Unary::Round => "elementwise",
            _ => "activation",
        },
        NodeOp::Lut { .. } => "activation",
        NodeOp::Binary(_) | NodeOp::Where => "elementwise",
        NodeOp::Pool { .. } | NodeOp::Resize { .. } => "pool/resize",
        NodeOp::Reshape
        | NodeOp::Expand
        | NodeOp::Transpose { .. }
        | NodeOp::Slice { .. }
        | NodeOp::Concat { .. }
        | NodeOp::Pad { .. }
        | NodeOp::Widen => "shape",
        NodeOp::Gather => "gather",
    }
}

/// One op family of a graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Family {
    /// The family's name ([`FAMILIES`]).
    pub name: &'static str,
    /// Nodes of the family.
    pub nodes: usize,
    /// Parameters (constant elements) first read by a node of the family.
    pub params: usize,
    /// Multiply-accumulates for one sample (batch 1): matmul and conv only, `None` for the
    /// other families.
    pub macs: Option<u64>,
    /// The family's ops with their node counts, in first-seen order.
    pub ops: Vec<(&'static str, usize)>,
}

/// The families present in `m` (in [`FAMILIES`] order). Each constant's elements count
/// for the family of the first node that reads it, so the parameters add up to
/// [`Model::param_count`].
pub fn families(m: &Model<'_>) -> Vec<Family> {
    let mut out: Vec<Family> = FAMILIES
        .iter()
        .map(|&name| Family {
            name,
            macs: matches!(name, "matmul" | "conv").then_some(0),
            ..Family::default()
        })
        .collect();
    let mut counted = vec![false; m.tensor_count()];
    for n in m.nodes() {
        let fam = family_of(&n.op);
        let Some(f) = out.iter_mut().find(|f| f.name == fam) else {
            continue;
        };
        f.nodes += 1;
        match f.ops.iter_mut().find(|(op, _)| *op == n.op_name()) {
            Some((_, c)) => *c += 1,
            None => f.ops.push((n.op_name(), 1)),
        }
        for i in n.inputs() {
            let Some(t) = m.tensor(i) else { continue };
            let seen = counted.get_mut(i as usize);
            if t.kind == TensorKind::Const && seen.as_deref() == Some(&false) {
                f.params += elements(m, i).unwrap_or(0) as usize;
                if let Some(s) = seen {
                    *s = true;
                }
            }
        }
        if let Some(macs) = f.macs.as_mut() {
            *macs = macs.saturating_add(node_macs(m, &n).unwrap_or(0));
        }
    }
    out.retain(|f| f.nodes > 0);
    out
}

/// Elements of tensor `i` for one sample (batch 1).
fn elements(m: &Model<'_>, i: u32) -> Option<u64> {
    m.tensor(i)?.shape.row_elements()
}

/// The fixed dims of tensor `i` (the batch dim left out).
fn fixed_dims(m: &Model<'_>, i: u32) -> Vec<u64> {
    m.tensor(i)
        .map(|t| {
            t.shape
                .dims()
                .filter_map(|d| match d {
                    Dim::Fixed(n) => Some(u64::from(n)),
                    Dim::Batch => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Multiply-accumulates of a matmul or conv node for one sample: output elements times the
/// contraction length (Dense / MatMul: the first input's last dim; Conv: the kernel's
/// elements over its output channels, its last dim; ConvTranspose: input elements times
/// the kernel's elements over the input channels).
fn node_macs(m: &Model<'_>, n: &flowrt::model::NodeInfo<'_>) -> Option<u64> {
    let ins: Vec<u32> = n.inputs().collect();
    let out = elements(m, n.output)?;
    match n.op {
        NodeOp::Dense | NodeOp::MatMul => {
            let k = *fixed_dims(m, *ins.first()?).last()?;
            out.checked_mul(k)
        }
        NodeOp::Conv { .. } => {
            let w = elements(m, *ins.get(1)?)?;
            let outc = *fixed_dims(m, *ins.get(1)?).last()?;
            out.checked_mul(w / outc.max(1))
        }
        NodeOp::ConvTranspose { .. } => {
            let x = *ins.first()?;
            let cin = *fixed_dims(m, x).first()?;
            let w = elements(m, *ins.get(1)?)?;
            elements(m, x)?.checked_mul(w / cin.max(1))
        }
        _ => None,
    }
}

/// Bytes of activations (intermediate and output tensors) for one sample and for the
/// tensors without a batch dim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bytes {
    /// Bytes of the tensors without a batch dim.
    pub fixed: u64,
    /// Bytes per batch row.
    pub per_row: u64,
}

/// Stored weights of one type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// `f32`, `f16`, `bf16` or `int8`.
    pub dtype: &'static str,
    /// Constant tensors.
    pub tensors: usize,
    /// Their elements.
    pub values: usize,
    /// Their bytes (int8: the values and their per-channel scales), without alignment.
    pub bytes: usize,
}

/// A graph's memory plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// Tensors by kind: inputs, constants, intermediates, outputs.
    pub inputs: usize,
    /// Constant tensors.
    pub consts: usize,
    /// Intermediate tensors (computed by a node, in the arena).
    pub intermediates: usize,
    /// Output tensors.
    pub outputs: usize,
    /// Every activation (intermediate and output) with its own buffer: what the arena would
    /// take without sharing.
    pub unshared: Bytes,
    /// The most activation bytes alive at once (a tensor lives from its node to its last
    /// reader; the output to the end), for each arena region on its own (tensors without
    /// a batch dim, and per batch row), as the planner plans them: the least any plan of
    /// the region can use.
    pub peak: Bytes,
    /// Constants by stored type.
    pub weights: Vec<Stored>,
}

/// The memory plan of `m`.
pub fn memory(m: &Model<'_>) -> Memory {
    let mut mem = Memory::default();
    let mut act: HashMap<u32, Bytes> = HashMap::new();
    for t in m.tensors() {
        match t.kind {
            TensorKind::Input => mem.inputs += 1,
            TensorKind::Const => mem.consts += 1,
            TensorKind::Intermediate | TensorKind::Output => {
                if t.kind == TensorKind::Output {
                    mem.outputs += 1;
                } else {
                    mem.intermediates += 1;
                }
                let n = t.shape.row_elements().unwrap_or(0).saturating_mul(4);
                let b = if t.shape.dims().any(|d| d == Dim::Batch) {
                    Bytes {
                        fixed: 0,
                        per_row: n,
                    }
                } else {
                    Bytes {
                        fixed: n,
                        per_row: 0,
                    }
                };
                mem.unshared.fixed += b.fixed;
                mem.unshared.per_row += b.per_row;
                act.insert(t.index, b);
            }
        }
    }
    // Last reader of every activation (the output lives to the end).
    let nodes: Vec<_> = m.nodes().collect();
    let mut last: HashMap<u32, usize> = HashMap::new();
    for (k, n) in nodes.iter().enumerate() {
        for i in n.inputs() {
            last.insert(i, k);
        }
    }
    let end = nodes.len();
    let mut live = Bytes::default();
    for (k, n) in nodes.iter().enumerate() {
        if let Some(b) = act.get(&n.output) {
            live.fixed += b.fixed;
            live.per_row += b.per_row;
        }
        mem.peak.fixed = mem.peak.fixed.max(live.fixed);
        mem.peak.per_row = mem.peak.per_row.max(live.per_row);
        // Free what this node read for the last time (and its own output if never read).
        let mut done: Vec<u32> = n.inputs().filter(|i| last.get(i) == Some(&k)).collect();
        let out_read = last.contains_key(&n.output);
        let is_output = m.tensor(n.output).map(|t| t.kind) == Some(TensorKind::Output);
        if !out_read && !is_output && k + 1 < end {
            done.push(n.output);
        }
        done.sort_unstable();
        done.dedup();
        for i in done {
            if let Some(b) = act.get(&i) {
                live.fixed -= b.fixed;
                live.per_row -= b.per_row;
            }
        }
    }
    for w in m.constants() {
        let bytes = weight_bytes(&w);
        match mem.weights.iter_mut().find(|s| s.dtype == w.type_name()) {
            Some(s) => {
                s.tensors += 1;
                s.values += w.len();
                s.bytes += bytes;
            }
            None => mem.weights.push(Stored {
                dtype: w.type_name(),
                tensors: 1,
                values: w.len(),
                bytes,
            }),
        }
    }
    mem
}

/// Bytes of a constant as stored (int8: values and scales), without alignment padding.
fn weight_bytes(w: &Weights<'_>) -> usize {
    match w {
        Weights::F32(v) => v.len() * 4,
        Weights::F16(v) => v.len() * 2,
        Weights::Bf16(v) => v.len() * 2,
        Weights::Int8(q) => {
            q.values.len()
                + match q.scales {
                    flowrt::ops::Scales::F32(s) => s.len() * 4,
                    flowrt::ops::Scales::Bf16(s) => s.len() * 2,
                    flowrt::ops::Scales::Mini { codes, .. } => 1 + codes.len(),
                }
        }
    }
}

/// `n` with thousands separators and a short unit: `8512`, `1.23 M`, `4.56 G`.
pub fn short(n: u64) -> String {
    match n {
        0..=99_999 => n.to_string(),
        100_000..=99_999_999 => format!("{:.2} M", n as f64 / 1e6),
        _ => format!("{:.2} G", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_cover_every_op_kind() {
        assert_eq!(family_of(&NodeOp::Dense), "matmul");
        assert_eq!(family_of(&NodeOp::Unary(Unary::Silu)), "activation");
        assert_eq!(family_of(&NodeOp::Unary(Unary::Rsqrt)), "elementwise");
        assert_eq!(
            family_of(&NodeOp::Binary(flowrt::ops::Binary::Mul)),
            "elementwise"
        );
        assert_eq!(family_of(&NodeOp::Reshape), "shape");
        assert_eq!(family_of(&NodeOp::Gather), "gather");
        assert_eq!(short(8512), "8512");
        assert_eq!(short(1_234_567), "1.23 M");
        assert_eq!(short(4_560_000_000), "4.56 G");
    }
}
