//! Lowering of tract's EinSum (what MatMul, Gemm and Einsum become): Dense for a constant
//! operand, MatMul for two run-time ones, a permutation for one operand; transposes,
//! reshapes and sums bring the operands and the result into order.

use std::collections::HashSet;

use anyhow::{anyhow, bail, Result};
use flowrt::ir::{Dim, Op, ReduceKind};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::einsum::EinSum;

use super::konst::{konst_f32, permute_const};
use super::{transpose_op, Lowering, Value};

/// The permutation taking the axes lettered `from` to the letter order `to`.
fn letter_perm(from: &str, to: &str) -> Vec<u32> {
    to.chars()
        .map(|c| from.find(c).unwrap_or(0) as u32)
        .collect()
}

/// A MatMul or Dense step of an einsum, before it is brought into the output order.
struct Product {
    op: Op,
    inputs: Vec<u32>,
    /// The step's name suffix (`matmul`, `dense`).
    tag: &'static str,
    /// Its letters, one per output axis once unmerged.
    letters: String,
    /// Its shape, several row (or column) letters merged into one axis.
    shape: Vec<Dim>,
    /// One axis per letter, where several row or column letters were merged.
    unmerged: Option<Vec<Dim>>,
}

impl Lowering<'_> {
    /// EinSum from MatMul / Gemm: `[..., K] x const[K, N]` becomes Dense (with transposes
    /// where the axes are ordered otherwise); two run-time operands in batched-matmul order
    /// become MatMul.
    pub(super) fn lower_einsum(&mut self, node: &TypedNode, ein: &EinSum) -> Result<u32> {
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
        let o_shape = self.out_shape(node)?;
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
                lw.dims(a)[p]
            } else if let Some(p) = b_str.find(c) {
                lw.dims(b)[p]
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
        // `[batch.., first, second]`, each of `first` and `second` merged into one axis.
        let batch_2d = |lw: &Self, first: &[char], second: &[char]| -> Vec<Dim> {
            let mut shape: Vec<Dim> = batch.iter().map(|c| dim_of(lw, *c)).collect();
            shape.push(merged(lw, first));
            shape.push(merged(lw, second));
            shape
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
                cur = lw.reorder(node, &format!("{tag}_order"), cur, s, &order)?;
            }
            let shape = batch_2d(lw, first, second);
            Ok(lw.reshape_step(node, &format!("{tag}_2d"), cur, shape))
        };
        let a2 = operand(self, a, a_str, &m, &k, "a")?;
        let b2 = operand(self, b, b_str, &k, &n, "b")?;
        let letters: String = batch.iter().chain(&m).chain(&n).collect();
        let single = m.len() == 1 && n.len() == 1;
        let product = Product {
            op: Op::MatMul,
            inputs: vec![a2, b2],
            tag: "matmul",
            shape: batch_2d(self, &m, &n),
            unmerged: (!single).then(|| letters.chars().map(|c| dim_of(self, c)).collect()),
            letters,
        };
        self.emit_product(node, product, o_str)
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
            return self.lower_outer(node, x_outlet, x_str, &w, w_str, o_str, expr);
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
        let o_shape = self.out_shape(node)?;
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
        let kn_shape = vec![Dim::Fixed(kk as u32), Dim::Fixed(nn as u32)];
        let w_id = self.push_const(node, "weight", kn_shape, w_kn);
        // x with the summed letters last (in the weight's order), merged into K.
        let mut x = x_pre;
        let rest: Vec<char> = x_str.chars().filter(|c| !summed.contains(c)).collect();
        let x_order: String = rest.iter().chain(&summed).collect();
        if x_order != x_str {
            x = self.reorder(node, "k_last", x, x_str, &x_order)?;
        }
        let rest_shape = self.dims(x)[..rest.len()].to_vec();
        let mut k_shape = rest_shape.clone();
        k_shape.push(Dim::Fixed(kk as u32));
        x = self.reshape_step(node, "k_merged", x, k_shape);
        let mut shape = rest_shape.clone();
        shape.push(Dim::Fixed(nn as u32));
        let mut unmerged = rest_shape;
        unmerged.extend(outs.iter().map(|c| Dim::Fixed(dim_w(*c) as u32)));
        let product = Product {
            op: Op::Dense,
            inputs: vec![x, w_id],
            tag: "dense",
            letters: rest.iter().chain(&outs).collect(),
            shape,
            unmerged: (outs.len() > 1).then_some(unmerged),
        };
        self.emit_product(node, product, o_str)
            .map_err(|_| unsupported())
    }

    /// `x[...] (outer) w[n] -> [..., n]`: a dense layer with K = 1 (tract splits Gemms over
    /// concatenated inputs into such pieces).
    #[allow(clippy::too_many_arguments)]
    fn lower_outer(
        &mut self,
        node: &TypedNode,
        x_outlet: OutletId,
        x_str: &str,
        w: &Tensor,
        w_str: &str,
        o_str: &str,
        expr: &str,
    ) -> Result<u32> {
        let bad = || anyhow!("einsum `{expr}` (an outer product) is not supported in this form");
        let [n] = w_str.chars().collect::<Vec<_>>()[..] else {
            return Err(bad());
        };
        let x = self.tensor(x_outlet)?;
        let x_shape = self.dims(x).to_vec();
        let o_shape = self.out_shape(node)?;
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
        let wd = konst_f32(w)?;
        let n_len = wd.len() as u32;
        let w_id = self.push_const(node, "weight", vec![Dim::Fixed(1), Dim::Fixed(n_len)], wd);
        let mut x1_shape = kept_shape.clone();
        x1_shape.push(Dim::Fixed(1));
        let x1 = self.emit_step(node, "k1", Op::Reshape, vec![x], x1_shape);
        let mut d_shape = kept_shape;
        d_shape.push(Dim::Fixed(n_len));
        if d_shape == o_shape {
            return self.emit(node, Op::Dense, vec![x1, w_id]);
        }
        let d = self.emit_step(node, "dense", Op::Dense, vec![x1, w_id], d_shape);
        self.emit(node, Op::Reshape, vec![d])
    }

    /// Emits a product: as the node itself when it already is the output, else as a step
    /// that is unmerged (several row / column letters back to their own axes) and arranged
    /// into the output order `o_str`.
    fn emit_product(&mut self, node: &TypedNode, p: Product, o_str: &str) -> Result<u32> {
        if p.unmerged.is_none() && p.letters == o_str {
            return self.emit(node, p.op, p.inputs);
        }
        let mut cur = self.emit_step(node, p.tag, p.op, p.inputs, p.shape);
        if let Some(shape) = p.unmerged.filter(|s| s != self.dims(cur)) {
            if p.letters == o_str {
                return self.emit(node, Op::Reshape, vec![cur]);
            }
            cur = self.emit_step(node, "unmerge", Op::Reshape, vec![cur], shape);
        }
        self.arrange(node, cur, &p.letters, o_str)
    }

    /// Transposes `t`, whose axes are the letters `from`, into the letter order `to`, as
    /// the step `<node>.<tag>`.
    fn reorder(
        &mut self,
        node: &TypedNode,
        tag: &str,
        t: u32,
        from: &str,
        to: &str,
    ) -> Result<u32> {
        let perm = letter_perm(from, to);
        let shape = perm.iter().map(|p| self.dims(t)[*p as usize]).collect();
        Ok(self.emit_step(node, tag, transpose_op(&perm)?, vec![t], shape))
    }

    /// `t` reshaped to `shape` as the step `<node>.<tag>`; `t` itself if it has that shape.
    fn reshape_step(&mut self, node: &TypedNode, tag: &str, t: u32, shape: Vec<Dim>) -> u32 {
        if shape == self.dims(t) {
            return t;
        }
        self.emit_step(node, tag, Op::Reshape, vec![t], shape)
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
        let shape = self.dims(t).to_vec();
        let mut cur = t;
        for &i in private.iter().rev() {
            let d = shape[i];
            if d == Dim::Batch {
                bail!("einsum sums over the batch axis");
            }
            if d != Dim::Fixed(1) {
                let mut reduced = self.dims(cur).to_vec();
                reduced[i] = Dim::Fixed(1);
                let op = Op::Reduce {
                    kind: ReduceKind::Sum,
                    start: i as u8,
                    end: i as u8 + 1,
                };
                cur = self.emit_step(node, &format!("{tag}_sum{i}"), op, vec![cur], reduced);
            }
        }
        let kept: Vec<Dim> = shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !private.contains(i))
            .map(|(_, d)| *d)
            .collect();
        let cur = self.emit_step(
            node,
            &format!("{tag}_squeeze"),
            Op::Reshape,
            vec![cur],
            kept,
        );
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
            if core == to {
                let perm = letter_perm(from, &core);
                return self.emit(node, transpose_op(&perm)?, vec![cur]);
            }
            cur = self.reorder(node, "order", cur, from, &core)?;
        }
        // Unit axes to add (or, when nothing moved, an identity that is still its own node).
        self.emit(node, Op::Reshape, vec![cur])
    }
}
