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
