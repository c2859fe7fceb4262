//! Rewrites of the finished model description: bias fusion and tensor compaction.

use std::collections::HashMap;

use flowrt::ir::{BinaryOp, Dim, ModelDesc, Op, TensorDesc};

/// Appends a tensor to `desc`; returns its id.
pub(crate) fn push_tensor(
    desc: &mut ModelDesc,
    name: String,
    shape: Vec<Dim>,
    data: Option<Vec<f32>>,
) -> u32 {
    desc.tensors.push(TensorDesc {
        name,
        shape,
        data,
        stored: Default::default(),
        int8_scales: None,
    });
    (desc.tensors.len() - 1) as u32
}

/// Keeps the items of `items` whose flag in `keep` is set.
fn retain_flagged<T>(items: &mut Vec<T>, keep: &[bool]) {
    let mut flags = keep.iter();
    items.retain(|_| flags.next().copied().unwrap_or(false));
}

/// The values of constant `bias` and the column count `N` of Dense node `dense` when the
/// constant can be that Dense's bias: shape `[N]` or `[1, ..., 1, N]`, no longer than the
/// Dense output's rank (so it broadcasts along the output's last axis only).
fn dense_bias(desc: &ModelDesc, dense: usize, bias: u32) -> Option<(Vec<f32>, Dim)> {
    let w = *desc.nodes[dense].inputs.get(1)?;
    let n_cols = *desc.tensors[w as usize].shape.get(1)?;
    let b = &desc.tensors[bias as usize];
    let out_rank = desc.tensors[desc.nodes[dense].output as usize].shape.len();
    let (last, rest) = b.shape.split_last()?;
    (*last == n_cols && rest.iter().all(|d| *d == Dim::Fixed(1)) && b.shape.len() <= out_rank)
        .then(|| b.data.clone())
        .flatten()
        .map(|data| (data, n_cols))
}

/// Peephole: `Dense(x, W)` whose only consumer is `Add(dense, const b)` with `b` of shape
/// `[N]` or `[1, ..., 1, N]` becomes `Dense(x, W, b)`.
pub(super) fn fuse_dense_bias(desc: &mut ModelDesc) {
    let mut uses: HashMap<u32, usize> = HashMap::new();
    for n in &desc.nodes {
        for i in &n.inputs {
            *uses.entry(*i).or_default() += 1;
        }
    }
    let mut keep = vec![true; desc.nodes.len()];
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
        let Some((data, n_cols)) = dense_bias(desc, i, other) else {
            continue;
        };
        let name = format!("{}.bias", desc.nodes[i].name);
        let b_id = push_tensor(desc, name, vec![n_cols], Some(data));
        let add_out = desc.nodes[j].output;
        desc.nodes[i].inputs.push(b_id);
        desc.nodes[i].output = add_out;
        keep[j] = false;
    }
    retain_flagged(&mut desc.nodes, &keep);
}

/// Peephole after [`fuse_dense_bias`]: a bias added to a sum of layers, `Add(Add(Dense(x,
/// W), y), const b)` (what a `Linear` over `cat([x, t])` becomes once tract splits the
/// `Gemm` over the concatenation), becomes `Add(Dense(x, W, b), y)`: the bias moves into the
/// first bias-less `Dense` of the sum that nothing else reads, under the same shape rule.
/// One node fewer, and the bias is stored as a bias (f16 / int8 in typed exports) instead
/// of an element-wise constant. The sum is rounded in another order, within the f32 error
/// the conformance tests allow.
pub(super) fn fuse_bias_into_sum(desc: &mut ModelDesc) {
    let uses = |desc: &ModelDesc, t: u32| {
        desc.nodes
            .iter()
            .flat_map(|n| n.inputs.iter())
            .filter(|i| **i == t)
            .count()
    };
    let producer = |desc: &ModelDesc, t: u32| desc.nodes.iter().position(|n| n.output == t);
    let mut keep = vec![true; desc.nodes.len()];
    for j in 0..desc.nodes.len() {
        let outer = &desc.nodes[j];
        if outer.op != Op::Binary(BinaryOp::Add) || outer.inputs.len() != 2 {
            continue;
        }
        // (sum, bias): one input a constant, the other an Add read only here.
        let (sum, bias) = match outer.inputs.as_slice() {
            [a, b] if desc.tensors[*b as usize].data.is_some() => (*a, *b),
            [a, b] if desc.tensors[*a as usize].data.is_some() => (*b, *a),
            _ => continue,
        };
        let Some(s) = producer(desc, sum) else {
            continue;
        };
        if desc.nodes[s].op != Op::Binary(BinaryOp::Add)
            || uses(desc, sum) != 1
            || sum == desc.output
            || !keep[s]
        {
            continue;
        }
        // The first term of the sum that is a bias-less Dense read only by the sum.
        let dense = desc.nodes[s].inputs.iter().find_map(|t| {
            let d = producer(desc, *t)?;
            let node = &desc.nodes[d];
            (node.op == Op::Dense
                && node.inputs.len() == 2
                && uses(desc, *t) == 1
                && *t != desc.output
                && keep[d])
                .then_some(d)
        });
        let Some(d) = dense else {
            continue;
        };
        // The sum has the Dense output's shape, so adding the bias earlier changes no shape.
        let d_out = desc.nodes[d].output;
        if desc.tensors[sum as usize].shape != desc.tensors[d_out as usize].shape {
            continue;
        }
        let Some((data, n_cols)) = dense_bias(desc, d, bias) else {
            continue;
        };
        let name = format!("{}.bias", desc.nodes[d].name);
        let b_id = push_tensor(desc, name, vec![n_cols], Some(data));
        desc.nodes[d].inputs.push(b_id);
        desc.nodes[s].output = desc.nodes[j].output;
        keep[j] = false;
    }
    retain_flagged(&mut desc.nodes, &keep);
}

/// Drops tensors no node, input or output refers to, and renumbers the rest in order.
pub(crate) fn compact_tensors(desc: &mut ModelDesc) {
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
    retain_flagged(&mut desc.tensors, &used);
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
