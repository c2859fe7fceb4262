//! Rewrites of the finished model description: bias fusion and tensor compaction.

use std::collections::HashMap;

use flowrt::ir::{BinaryOp, Dim, ModelDesc, NodeDesc, Op, ReduceKind, TensorDesc, UnaryOp};

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
    let uses = use_counts(desc);
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

/// How many nodes read each tensor (a node reading it twice counts twice).
fn use_counts(desc: &ModelDesc) -> HashMap<u32, usize> {
    let mut uses: HashMap<u32, usize> = HashMap::new();
    for n in &desc.nodes {
        for i in &n.inputs {
            *uses.entry(*i).or_default() += 1;
        }
    }
    uses
}

/// A bias-free `Dense(a, W)` node producing `t`, read once and not the model's output: its
/// input `a` and its constant `W` (`[K, N]`, rows then columns).
fn lone_dense(desc: &ModelDesc, uses: &HashMap<u32, usize>, t: u32) -> Option<(usize, u32, u32)> {
    if t == desc.output || uses.get(&t) != Some(&1) {
        return None;
    }
    let i = desc.nodes.iter().position(|n| n.output == t)?;
    let node = &desc.nodes[i];
    match (node.op == Op::Dense, node.inputs.as_slice()) {
        (true, &[a, w]) if desc.tensors[w as usize].data.is_some() => Some((i, a, w)),
        _ => None,
    }
}

/// Peephole: `Add(Dense(a, Wa), Dense(b, Wb))` becomes `Dense(Concat(a, b), [Wa; Wb])`.
///
/// tract splits a `Linear` over `cat([x, t])` (the usual first layer of a velocity MLP)
/// into one bias-free product per concatenated part plus their sum; this undoes it. The
/// merged node is one product accumulated in `k` order, as PyTorch computes the layer,
/// instead of two sums added; it has one weight tensor (one set of int8 channel scales)
/// and takes the bias the following `Add` carries ([`fuse_dense_bias`] runs after it).
/// Applies when both products are read only by the `Add`, their inputs agree on every
/// axis but the last, and both weights are constants `[Ka, N]`, `[Kb, N]` of the same `N`.
pub(super) fn merge_split_dense(desc: &mut ModelDesc) {
    loop {
        let uses = use_counts(desc);
        let Some((add, left, right)) = desc.nodes.iter().enumerate().find_map(|(j, n)| {
            let &[p, q] = n.inputs.as_slice() else {
                return None;
            };
            if n.op != Op::Binary(BinaryOp::Add) || p == q {
                return None;
            }
            let l = lone_dense(desc, &uses, p)?;
            let r = lone_dense(desc, &uses, q)?;
            mergeable(desc, l, r).then_some((j, l, r))
        }) else {
            return;
        };
        let ((il, a, wa), (ir, b, wb)) = (left, right);
        let cat_shape = {
            let (sa, sb) = (
                &desc.tensors[a as usize].shape,
                &desc.tensors[b as usize].shape,
            );
            let mut s = sa.clone();
            if let (Some(Dim::Fixed(ka)), Some(Dim::Fixed(kb))) = (sa.last(), sb.last()) {
                *s.last_mut().expect("rank >= 1") = Dim::Fixed(ka + kb);
            }
            s
        };
        let axis = (cat_shape.len() - 1) as u32;
        let n_cols = desc.tensors[wa as usize].shape[1];
        let mut w = desc.tensors[wa as usize].data.clone().unwrap_or_default();
        w.extend(desc.tensors[wb as usize].data.iter().flatten());
        let rows = (w.len() / n_cols_usize(n_cols)) as u32;
        let dense_name = desc.nodes[il].name.clone();
        let add_name = desc.nodes[add].name.clone();
        let out = desc.nodes[add].output;
        let w_id = push_tensor(
            desc,
            format!("{dense_name}.merged"),
            vec![Dim::Fixed(rows), n_cols],
            Some(w),
        );
        let cat = push_tensor(desc, format!("{add_name}.concat"), cat_shape, None);
        let concat = NodeDesc {
            name: format!("{add_name}.concat"),
            op: Op::Concat { axis },
            inputs: vec![a, b],
            output: cat,
        };
        let dense = NodeDesc {
            name: dense_name,
            op: Op::Dense,
            inputs: vec![cat, w_id],
            output: out,
        };
        let old = std::mem::take(&mut desc.nodes);
        for (k, n) in old.into_iter().enumerate() {
            if k == add {
                desc.nodes.push(concat.clone());
                desc.nodes.push(dense.clone());
            } else if k != il && k != ir {
                desc.nodes.push(n);
            }
        }
    }
}

/// `N` of a weight's column dim (0 when not fixed, which [`mergeable`] excludes).
fn n_cols_usize(d: Dim) -> usize {
    match d {
        Dim::Fixed(n) => n as usize,
        Dim::Batch => 0,
    }
    .max(1)
}

/// Whether two bias-free Dense nodes (`lone_dense`) can be merged by [`merge_split_dense`].
fn mergeable(
    desc: &ModelDesc,
    (_, a, wa): (usize, u32, u32),
    (_, b, wb): (usize, u32, u32),
) -> bool {
    let t = |i: u32| &desc.tensors[i as usize];
    let (sa, sb) = (&t(a).shape, &t(b).shape);
    let (swa, swb) = (&t(wa).shape, &t(wb).shape);
    let fixed_cols = matches!(swa.get(1), Some(Dim::Fixed(_)));
    sa.len() == sb.len()
        && !sa.is_empty()
        && sa[..sa.len() - 1] == sb[..sb.len() - 1]
        && matches!(
            (sa.last(), sb.last()),
            (Some(Dim::Fixed(_)), Some(Dim::Fixed(_)))
        )
        && swa.len() == 2
        && swb.len() == 2
        && fixed_cols
        && swa[1] == swb[1]
        && Some(&swa[0]) == sa.last()
        && Some(&swb[0]) == sb.last()
}

/// Peephole: the eight nodes tract's decomposition of a normalization lowers to —
/// `s = ReduceSum(a)`, `μ = s · (1/n)`, `c = a − μ`, `ReduceMean(c²) + eps`, `Rsqrt`,
/// `c · rsqrt(..)`, all over the same axes — become one `Norm` node, which computes the
/// same operations in the same order (bit for bit: `flowrt::ops::norm`) in two passes over
/// the data instead of eight, with no intermediate tensors. Applies when every intermediate
/// is read only inside the pattern, `1/n` is the f32 `1 / n` of the group size `n` and
/// `eps` a scalar constant `>= 0`. The scale and shift that follow stay separate nodes.
pub(super) fn fuse_norm(desc: &mut ModelDesc) {
    loop {
        let uses = use_counts(desc);
        let Some((root, dead, a, start, end, eps)) =
            (0..desc.nodes.len()).find_map(|i| norm_pattern(desc, &uses, i))
        else {
            return;
        };
        desc.nodes[root].op = Op::Norm { start, end, eps };
        desc.nodes[root].inputs = vec![a];
        let mut keep = vec![true; desc.nodes.len()];
        for d in dead {
            keep[d] = false;
        }
        retain_flagged(&mut desc.nodes, &keep);
    }
}

/// The node producing tensor `t`, when it is read `reads` times and is not the output.
fn producer(desc: &ModelDesc, uses: &HashMap<u32, usize>, t: u32, reads: usize) -> Option<usize> {
    if t == desc.output || uses.get(&t) != Some(&reads) {
        return None;
    }
    desc.nodes.iter().position(|n| n.output == t)
}

/// The value of a one-element constant.
fn scalar(desc: &ModelDesc, t: u32) -> Option<f32> {
    match desc.tensors[t as usize].data.as_deref() {
        Some(&[v]) => Some(v),
        _ => None,
    }
}

/// The non-constant operand of a binary node whose other operand is a scalar constant.
fn with_scalar(desc: &ModelDesc, node: &NodeDesc) -> Option<(u32, f32)> {
    let &[p, q] = node.inputs.as_slice() else {
        return None;
    };
    match (scalar(desc, p), scalar(desc, q)) {
        (None, Some(k)) => Some((p, k)),
        (Some(k), None) => Some((q, k)),
        _ => None,
    }
}

/// [`fuse_norm`]'s pattern ending at node `root` (the final `Mul`): the node, the seven
/// nodes it replaces, the normalized tensor, the axis range and `eps`.
#[allow(clippy::type_complexity)]
fn norm_pattern(
    desc: &ModelDesc,
    uses: &HashMap<u32, usize>,
    root: usize,
) -> Option<(usize, [usize; 7], u32, u8, u8, f32)> {
    let node = |i: usize| &desc.nodes[i];
    let op_of = |i: usize| node(i).op;
    let only = |i: usize| match node(i).inputs.as_slice() {
        &[x] => Some(x),
        _ => None,
    };
    if op_of(root) != Op::Binary(BinaryOp::Mul) {
        return None;
    }
    let &[p, q] = node(root).inputs.as_slice() else {
        return None;
    };
    // One operand is the centred value c (read twice: here and by Square), the other the
    // reciprocal standard deviation.
    let (c, r) = [(p, q), (q, p)].into_iter().find(|(_, r)| {
        producer(desc, uses, *r, 1).is_some_and(|i| op_of(i) == Op::Unary(UnaryOp::Rsqrt))
    })?;
    let rsqrt = producer(desc, uses, r, 1)?;
    let add = producer(desc, uses, only(rsqrt)?, 1)?;
    if op_of(add) != Op::Binary(BinaryOp::Add) {
        return None;
    }
    let (var, eps) = with_scalar(desc, node(add))?;
    let mean = producer(desc, uses, var, 1)?;
    let Op::Reduce {
        kind: ReduceKind::Mean,
        start,
        end,
    } = op_of(mean)
    else {
        return None;
    };
    let square = producer(desc, uses, only(mean)?, 1)?;
    if op_of(square) != Op::Unary(UnaryOp::Square) || only(square)? != c {
        return None;
    }
    let sub = producer(desc, uses, c, 2)?;
    let &[a, mu] = node(sub).inputs.as_slice() else {
        return None;
    };
    if op_of(sub) != Op::Binary(BinaryOp::Sub) {
        return None;
    }
    let scale = producer(desc, uses, mu, 1)?;
    if op_of(scale) != Op::Binary(BinaryOp::Mul) {
        return None;
    }
    let (sum_t, inv_n) = with_scalar(desc, node(scale))?;
    let sum = producer(desc, uses, sum_t, 1)?;
    if op_of(sum)
        != (Op::Reduce {
            kind: ReduceKind::Sum,
            start,
            end,
        })
        || only(sum)? != a
    {
        return None;
    }
    let shape = &desc.tensors[a as usize].shape;
    let mut n = 1u64;
    for d in shape.get(usize::from(start)..usize::from(end))? {
        match d {
            Dim::Fixed(v) => n *= u64::from(*v),
            Dim::Batch => return None,
        }
    }
    let exact = inv_n.to_bits() == (1.0 / n as f32).to_bits();
    let eps_ok = eps.is_finite() && eps >= 0.0 && eps.to_bits() != (-0.0f32).to_bits();
    let same_shape = desc.tensors[node(root).output as usize].shape == *shape;
    (exact && eps_ok && same_shape).then_some((
        root,
        [rsqrt, add, mean, square, sub, scale, sum],
        a,
        start,
        end,
        eps,
    ))
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
