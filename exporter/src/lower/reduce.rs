//! Lowering of tract's reductions: Reduce, Softmax and RmsNorm (what tract makes of
//! InstanceNormalization, GroupNormalization and LayerNormalization).

use anyhow::{bail, Result};
use flowrt::ir::{BinaryOp, Dim, Op, ReduceKind, UnaryOp};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer, RmsNorm, Softmax, SoftmaxKind};

use super::Lowering;

impl Lowering<'_> {
    /// Lowers reductions and normalizations; `None` when `node` is none of them.
    pub(super) fn lower_reduce(&mut self, node: &TypedNode) -> Result<Option<u32>> {
        let out = if let Some(r) = node.op_as::<Reduce>() {
            let (kind, square) = match r.reducer {
                Reducer::Sum => (ReduceKind::Sum, false),
                Reducer::Max => (ReduceKind::Max, false),
                Reducer::Min => (ReduceKind::Min, false),
                Reducer::Prod => (ReduceKind::Prod, false),
                Reducer::MeanOfSquares => (ReduceKind::Mean, true),
                other => {
                    bail!("reduction {other:?} is not supported (it yields integers or booleans)")
                }
            };
            let mut x = self.tensor(node.inputs[0])?;
            if square {
                x = self.emit_like(node, "square", Op::Unary(UnaryOp::Square), vec![x]);
            }
            let axes = self.axes(node.inputs[0], &r.axes)?;
            self.reduce_axes(node, kind, x, &axes, true)?
        } else if let Some(sm) = node.op_as::<Softmax>() {
            if sm.quant_output_dt.is_some() {
                bail!("quantized Softmax is not supported");
            }
            let x = self.tensor(node.inputs[0])?;
            let axes = self.axes(node.inputs[0], &sm.axes)?;
            let (start, end) = contiguous(&axes)
                .ok_or_else(|| anyhow::anyhow!("Softmax over non-adjacent axes {:?}", sm.axes))?;
            let log = sm.kind == SoftmaxKind::LogSoftmax;
            self.emit(node, Op::Softmax { start, end, log }, vec![x])?
        } else if let Some(rms) = node.op_as::<RmsNorm>() {
            // x * rsqrt(mean(x^2, axis) + eps), as tract defines it.
            let x = self.tensor(node.inputs[0])?;
            let axis = self.axis(node.inputs[0], rms.axis)?;
            let sq = self.emit_like(node, "square", Op::Unary(UnaryOp::Square), vec![x]);
            let mean = self.reduce_axes(node, ReduceKind::Mean, sq, &[axis], false)?;
            let eps = rms.eps.cast_to_scalar::<f32>()?;
            let e = self.push_const(node, "eps", vec![Dim::Fixed(1)], vec![eps]);
            let var = self.emit_like(node, "var_eps", Op::Binary(BinaryOp::Add), vec![mean, e]);
            let inv = self.emit_like(node, "rsqrt", Op::Unary(UnaryOp::Rsqrt), vec![var]);
            self.emit(node, Op::Binary(BinaryOp::Mul), vec![x, inv])?
        } else {
            return Ok(None);
        };
        Ok(Some(out))
    }

    /// Reduces `x` over `axes` (flowrt axes, any order) with `kind`, as one Reduce per run
    /// of adjacent axes; the last step is named after `node` and shaped as its output when
    /// `last` (else it keeps the reduced axes as 1s).
    fn reduce_axes(
        &mut self,
        node: &TypedNode,
        kind: ReduceKind,
        x: u32,
        axes: &[usize],
        last: bool,
    ) -> Result<u32> {
        let mut axes = axes.to_vec();
        axes.sort_unstable();
        axes.dedup();
        if axes.is_empty() {
            bail!("a reduction over no axes");
        }
        // Runs of adjacent axes.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for a in axes {
            match runs.last_mut() {
                Some((_, e)) if *e == a => *e = a + 1,
                _ => runs.push((a, a + 1)),
            }
        }
        // Sum, Max, Min and Prod compose run by run; so does Mean (a mean of equal-sized
        // means is the mean).
        let mut cur = x;
        let n_runs = runs.len();
        for (i, (s, e)) in runs.into_iter().enumerate() {
            let mut shape = self.dims(cur).to_vec();
            for d in &mut shape[s..e] {
                if *d == Dim::Batch {
                    bail!("a reduction over the batch axis is not supported");
                }
                *d = Dim::Fixed(1);
            }
            let op = Op::Reduce {
                kind,
                start: s as u8,
                end: e as u8,
            };
            let out_shape = if last && i + 1 == n_runs {
                self.out_shape(node)?
            } else {
                shape.clone()
            };
            if last && i + 1 == n_runs && out_shape == shape {
                return self.emit(node, op, vec![cur]);
            }
            cur = self.emit_step(node, &format!("reduce{i}"), op, vec![cur], shape);
            if last && i + 1 == n_runs {
                return self.emit(node, Op::Reshape, vec![cur]);
            }
        }
        Ok(cur)
    }
}

/// `(start, end)` when `axes` (sorted or not) are one run of adjacent axes.
fn contiguous(axes: &[usize]) -> Option<(u8, u8)> {
    let lo = *axes.iter().min()?;
    let hi = *axes.iter().max()? + 1;
    (hi - lo == axes.len()).then_some((lo as u8, hi as u8))
}
