//! Shape rules per operation, shared by the writer (on an `ir::ModelDesc`) and the reader
//! (on a file), so that a file the writer accepts is exactly a file the reader accepts.
//!
//! Shapes are symbolic: [`Dim::Batch`] stands for the batch size `B` chosen at run time.
//! A rule holds for *every* `B >= 1`, so kernels never see inconsistent sizes.

use super::{Dim, NodeOp, Shape, MAX_RANK};

/// numpy broadcast of two dims: equal dims, or one of them is 1.
fn broadcast_dim(a: Dim, b: Dim) -> Option<Dim> {
    if a == b {
        Some(a)
    } else if a == Dim::Fixed(1) {
        Some(b)
    } else if b == Dim::Fixed(1) {
        Some(a)
    } else {
        None
    }
}

/// Dim `i` of `s` when `s` is right-aligned to rank `rank` (leading dims are 1).
fn aligned_dim(s: &Shape, rank: usize, i: usize) -> Dim {
    let lead = rank.saturating_sub(s.rank());
    if i < lead {
        Dim::Fixed(1)
    } else {
        s.dim(i - lead).unwrap_or(Dim::Fixed(1))
    }
}

/// `true` when `out` has exactly the dims produced by `dims`.
fn same_dims(out: &Shape, rank: usize, dims: impl Iterator<Item = Dim>) -> bool {
    out.rank() == rank && out.dims().zip(dims).filter(|(a, b)| a == b).count() == rank
}

/// Checks one node: number of inputs, and that the output shape is exactly what the op
/// produces from the input shapes. `input(i)` returns the shape of input `i`.
pub(crate) fn check_node(
    op: &NodeOp,
    n_inputs: usize,
    input: impl Fn(usize) -> Option<Shape>,
    out: &Shape,
) -> Result<(), &'static str> {
    let (lo, hi) = op.arity();
    if n_inputs < lo || n_inputs > hi {
        return Err("wrong number of inputs for this op");
    }
    let inp = |i: usize| input(i).ok_or("input tensor missing");
    match *op {
        NodeOp::Dense => {
            let a = inp(0)?;
            let w = inp(1)?;
            if w.rank() != 2 || w.has_batch() {
                return Err("Dense weight must have a fixed 2-D shape [K, N]");
            }
            let (k, n) = match (w.dim(0), w.dim(1)) {
                (Some(k), Some(n)) => (k, n),
                _ => return Err("Dense weight must have a fixed 2-D shape [K, N]"),
            };
            if a.rank() == 0 || a.dim(a.rank() - 1) != Some(k) {
                return Err("Dense input's last dim differs from the weight's K");
            }
            if n_inputs == 3 {
                let b = inp(2)?;
                if b.rank() != 1 || b.dim(0) != Some(n) {
                    return Err("Dense bias must have shape [N]");
                }
            }
            let dims = a.dims().take(a.rank() - 1).chain(core::iter::once(n));
            if !same_dims(out, a.rank(), dims) {
                return Err("Dense output shape is not [.., N]");
            }
        }
        NodeOp::MatMul => {
            let a = inp(0)?;
            let b = inp(1)?;
            if a.rank() < 2 || b.rank() < 2 {
                return Err("MatMul inputs must have rank >= 2");
            }
            if a.dim(a.rank() - 1) != b.dim(b.rank() - 2) {
                return Err("MatMul inner dims differ");
            }
            let rank = a.rank().max(b.rank());
            let lead = rank - 2;
            let mut dims = [Dim::Fixed(1); MAX_RANK];
            for (i, slot) in dims.iter_mut().enumerate().take(lead) {
                *slot = broadcast_dim(aligned_dim(&a, rank, i), aligned_dim(&b, rank, i))
                    .ok_or("MatMul leading dims do not broadcast")?;
            }
            let m = a.dim(a.rank() - 2).ok_or("MatMul rank")?;
            let n = b.dim(b.rank() - 1).ok_or("MatMul rank")?;
            let all = dims.iter().copied().take(lead).chain([m, n]);
            if !same_dims(out, rank, all) {
                return Err("MatMul output shape is not [.., M, N]");
            }
        }
        NodeOp::Binary(_) | NodeOp::Where => {
            // numpy broadcast of all inputs (2 for Binary, 3 for Where; arity checked above).
            let mut shapes = [Shape::SCALAR; 3];
            for (i, s) in shapes.iter_mut().enumerate().take(n_inputs) {
                *s = inp(i)?;
            }
            let shapes = shapes
                .get(..n_inputs)
                .ok_or("wrong number of inputs for this op")?;
            let rank = shapes.iter().map(Shape::rank).max().unwrap_or(0);
            let mut dims = [Dim::Fixed(1); MAX_RANK];
            for (i, slot) in dims.iter_mut().enumerate().take(rank) {
                for s in shapes {
                    *slot = broadcast_dim(*slot, aligned_dim(s, rank, i))
                        .ok_or("inputs do not broadcast")?;
                }
            }
            if !same_dims(out, rank, dims.iter().copied()) {
                return Err("output shape is not the broadcast of the input shapes");
            }
        }
        NodeOp::Unary(_) => {
            if inp(0)? != *out {
                return Err("output shape differs from the input shape");
            }
        }
        NodeOp::Concat { axis } => {
            let axis = axis as usize;
            if axis >= out.rank() {
                return Err("Concat axis out of range");
            }
            if out.dim(axis) == Some(Dim::Batch) {
                return Err("Concat along the batch dim is not supported");
            }
            let mut total: u64 = 0;
            for i in 0..n_inputs {
                let s = inp(i)?;
                if s.rank() != out.rank() {
                    return Err("Concat inputs differ in rank");
                }
                for (j, (d, o)) in s.dims().zip(out.dims()).enumerate() {
                    if j == axis {
                        match d {
                            Dim::Fixed(n) => total += u64::from(n),
                            Dim::Batch => {
                                return Err("Concat along the batch dim is not supported")
                            }
                        }
                    } else if d != o {
                        return Err("Concat inputs differ outside the concat axis");
                    }
                }
            }
            if out.dim(axis) != Some(Dim::Fixed(u32::try_from(total).unwrap_or(0))) {
                return Err("Concat output dim is not the sum of the input dims");
            }
        }
        NodeOp::Reshape => {
            let x = inp(0)?;
            if x.has_batch() != out.has_batch() || x.row_elements() != out.row_elements() {
                return Err("Reshape changes the element count");
            }
        }
        NodeOp::Expand => {
            let x = inp(0)?;
            if x.rank() > out.rank() {
                return Err("Expand input has a higher rank than the output");
            }
            for (i, o) in out.dims().enumerate() {
                let d = aligned_dim(&x, out.rank(), i);
                if d != o && d != Dim::Fixed(1) {
                    return Err("Expand input does not broadcast to the output shape");
                }
            }
        }
        NodeOp::Transpose { rank, .. } => {
            let x = inp(0)?;
            if x.rank() != usize::from(rank) {
                return Err("Transpose perm length differs from the input rank");
            }
            let dims = op
                .perm()
                .iter()
                .map(|p| x.dim(usize::from(*p)).unwrap_or(Dim::Fixed(0)));
            if !same_dims(out, x.rank(), dims) {
                return Err("Transpose output shape is not the permuted input shape");
            }
        }
        NodeOp::Gather => {
            let table = inp(0)?;
            let idx = inp(1)?;
            if table.rank() == 0 || table.has_batch() {
                return Err("Gather table must have a fixed shape [N, ...] (no batch dim)");
            }
            let rank = idx.rank() + table.rank() - 1;
            if rank > MAX_RANK {
                return Err("Gather output rank is larger than 6");
            }
            let dims = idx.dims().chain(table.dims().skip(1));
            if !same_dims(out, rank, dims) {
                return Err("Gather output shape is not idx.shape + table.shape[1..]");
            }
        }
        NodeOp::Slice {
            axis,
            start,
            end,
            step,
        } => {
            let x = inp(0)?;
            let axis = axis as usize;
            let d = match x.dim(axis) {
                Some(Dim::Fixed(d)) => d,
                Some(Dim::Batch) => return Err("Slice along the batch dim is not supported"),
                None => return Err("Slice axis out of range"),
            };
            if step == 0 {
                return Err("Slice step is 0");
            }
            if start >= end || end > d {
                return Err("Slice range must satisfy start < end <= dim");
            }
            let len = (end - start).div_ceil(step);
            let dims = x
                .dims()
                .enumerate()
                .map(|(i, v)| if i == axis { Dim::Fixed(len) } else { v });
            if !same_dims(out, x.rank(), dims) {
                return Err("Slice output shape is wrong");
            }
        }
    }
    Ok(())
}
