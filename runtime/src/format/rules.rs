//! Shape rules per operation, shared by the writer (on an `ir::ModelDesc`) and the reader
//! (on a file), so that a file the writer accepts is exactly a file the reader accepts.
//!
//! Shapes are symbolic: [`Dim::Batch`] stands for the batch size `B` chosen at run time.
//! A rule holds for *every* `B >= 1`, so kernels never see inconsistent sizes.

use super::{Dim, NodeOp, Shape, MAX_RANK};
use crate::linked::{has_node, node, Selection};
use crate::ops::Window;

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

/// The fixed size of dim `i` (`None` when missing or the batch dim).
fn fixed(s: &Shape, i: usize) -> Option<usize> {
    match s.dim(i)? {
        Dim::Fixed(n) => Some(n as usize),
        Dim::Batch => None,
    }
}

/// An NCHW activation: rank 3 or 4, batch (if any) first, channels and spatial dims fixed.
/// Returns `(C, [H, W])` with `H = 1` for rank 3.
fn nchw(x: &Shape, what: &'static str) -> Result<(usize, [usize; 2]), &'static str> {
    let r = x.rank();
    if !(3..=4).contains(&r) || x.batch_axis().is_some_and(|b| b != 0) {
        return Err(what);
    }
    let c = fixed(x, 1).ok_or(what)?;
    let h = if r == 4 { fixed(x, 2).ok_or(what)? } else { 1 };
    let w = fixed(x, r - 1).ok_or(what)?;
    Ok((c, [h, w]))
}

/// The output shape of an NCHW op: `x`'s batch dim, `channels`, spatial dims `hw`.
fn nchw_out(
    out: &Shape,
    x: &Shape,
    channels: usize,
    hw: [Option<usize>; 2],
) -> Result<(), &'static str> {
    let bad = "output shape does not match the window";
    if out.rank() != x.rank() || out.dim(0) != x.dim(0) || fixed(out, 1) != Some(channels) {
        return Err(bad);
    }
    let r = x.rank();
    let h_ok = r == 3 || fixed(out, 2) == hw[0];
    let w_ok = hw[1].is_some() && fixed(out, r - 1) == hw[1];
    if h_ok && w_ok && (r == 4 || hw[0] == Some(1)) {
        Ok(())
    } else {
        Err(bad)
    }
}

/// The 1-D form of a window (row axis unit) is the only one allowed on rank-3 inputs.
fn unit_rows(x: &Shape, w: &Window, kernel_rows: usize) -> bool {
    x.rank() == 4
        || (kernel_rows == 1
            && w.stride[0] == 1
            && w.dilation[0] == 1
            && w.pad_begin[0] == 0
            && w.pad_end[0] == 0)
}

/// Checks a contiguous axis range against a shape: in range and not over the batch dim.
fn axis_range_ok(x: &Shape, start: u8, end: u8) -> Result<(), &'static str> {
    if usize::from(end) > x.rank() {
        return Err("axis range past the rank");
    }
    if x.batch_axis()
        .is_some_and(|b| (usize::from(start)..usize::from(end)).contains(&b))
    {
        return Err("reductions over the batch dim are not supported");
    }
    Ok(())
}

/// The activation scale of a full-integer Dense or Conv (input 3) is `[1]`.
fn act_scale_shape(s: &Shape) -> Result<(), &'static str> {
    if s.rank() == 1 && fixed(s, 0) == Some(1) {
        Ok(())
    } else {
        Err("int8 activation scale (input 3) must have shape [1]")
    }
}

/// Checks one node: number of inputs, and that the output shape is exactly what the op
/// produces from the input shapes. `input(i)` returns the shape of input `i`.
#[cfg(any(feature = "alloc", test))]
pub(crate) fn check_node(
    op: &NodeOp,
    n_inputs: usize,
    input: impl Fn(usize) -> Option<Shape>,
    out: &Shape,
) -> Result<(), &'static str> {
    check_node_linked::<crate::linked::All>(op, n_inputs, input, out)
}

/// [`check_node`] with the rules of the op kinds `S` links only (a build does not contain
/// the others'); an op of another kind is an error ([`crate::Model`]'s loader refuses such
/// ops before, with [`crate::Error::NotLinked`]).
pub(crate) fn check_node_linked<S: Selection + ?Sized>(
    op: &NodeOp,
    n_inputs: usize,
    input: impl Fn(usize) -> Option<Shape>,
    out: &Shape,
) -> Result<(), &'static str> {
    let has = has_node::<S>;
    let (lo, hi) = op.arity();
    if n_inputs < lo || n_inputs > hi {
        return Err("wrong number of inputs for this op");
    }
    let inp = |i: usize| input(i).ok_or("input tensor missing");
    match *op {
        NodeOp::Dense if has(node::DENSE) || has(node::DENSE_Q8) => {
            let a = inp(0)?;
            let w = inp(1)?;
            if w.rank() != 2 || w.has_batch() {
                return Err("Dense weight must have a fixed 2-D shape [K, N]");
            }
            // Full-integer Dense (4 inputs) stores its weight output channel first, [N, K].
            let (k, n) = match (w.dim(0), w.dim(1), n_inputs == 4) {
                (Some(k), Some(n), false) => (k, n),
                (Some(n), Some(k), true) => (k, n),
                _ => return Err("Dense weight must have a fixed 2-D shape [K, N]"),
            };
            if a.rank() == 0 || a.dim(a.rank() - 1) != Some(k) {
                return Err("Dense input's last dim differs from the weight's K");
            }
            if n_inputs == 4 {
                act_scale_shape(&inp(3)?)?;
            }
            if n_inputs >= 3 {
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
        NodeOp::MatMul if has(node::MATMUL) => {
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
        NodeOp::Binary(_) | NodeOp::Where if has(node::BINARY) || has(node::WHERE) => {
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
        NodeOp::Unary(_) if has(node::UNARY) => {
            if inp(0)? != *out {
                return Err("output shape differs from the input shape");
            }
        }
        NodeOp::Concat { axis } if has(node::CONCAT) => {
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
        NodeOp::Lut { .. } if has(node::LUT) => {
            if inp(0)? != *out {
                return Err("output shape differs from the input shape");
            }
            let t = inp(1)?;
            if t.rank() != 1 || fixed(&t, 0) != Some(crate::ops::LUT_ENTRIES) {
                return Err("Lut table (input 1) must have shape [255]");
            }
            let s = inp(2)?;
            if s.rank() != 1 || fixed(&s, 0) != Some(1) {
                return Err("Lut scale (input 2) must have shape [1]");
            }
        }
        NodeOp::Widen if has(node::WIDEN) => {
            let x = inp(0)?;
            if x.has_batch() || x != *out {
                return Err("Widen output shape differs from its constant's");
            }
        }
        NodeOp::Reshape if has(node::RESHAPE) => {
            let x = inp(0)?;
            if x.has_batch() != out.has_batch() || x.row_elements() != out.row_elements() {
                return Err("Reshape changes the element count");
            }
        }
        NodeOp::Expand if has(node::EXPAND) => {
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
        NodeOp::Transpose { rank, .. } if has(node::TRANSPOSE) => {
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
        NodeOp::Gather if has(node::GATHER) => {
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
        } if has(node::SLICE) => {
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
        NodeOp::Conv { groups, window } | NodeOp::ConvTranspose { groups, window, .. }
            if has(node::CONV) || has(node::CONV_TRANSPOSE) || has(node::CONV_Q8) =>
        {
            let transposed = matches!(op, NodeOp::ConvTranspose { .. });
            let x = inp(0)?;
            let w = inp(1)?;
            let (c, [h, wi]) = nchw(&x, "Conv input must be [B, C, (H,) W] with fixed C, H, W")?;
            if w.rank() != x.rank() || w.has_batch() {
                return Err("Conv weight must be a constant of the input's rank");
            }
            let r = w.rank();
            let dim = |i: usize| fixed(&w, i).unwrap_or(0);
            // Conv: [C/g, (KH,) KW, M] (channel-last); ConvTranspose and full-integer Conv
            // (4 inputs): [M, C/g, (KH,) KW].
            let (w0, w1, kh, kw) = if transposed || n_inputs == 4 {
                (dim(0), dim(1), if r == 4 { dim(2) } else { 1 }, dim(r - 1))
            } else {
                (
                    dim(r - 1),
                    dim(0),
                    if r == 4 { dim(1) } else { 1 },
                    dim(r - 2),
                )
            };
            let g = groups as usize;
            if !unit_rows(&x, &window, kh) {
                return Err("1-D Conv with a 2-D window");
            }
            let (m, hw) = if transposed {
                let NodeOp::ConvTranspose { out_pad, .. } = *op else {
                    return Err("internal");
                };
                if g == 0 || w0 % g != 0 || w1 * g != c {
                    return Err("ConvTranspose weight must be [M, C/groups, ...] with groups dividing C and M");
                }
                let hw = [
                    window.transposed_len(0, h, kh, usize::from(out_pad[0])),
                    window.transposed_len(1, wi, kw, usize::from(out_pad[1])),
                ];
                (w0, hw)
            } else {
                if g == 0 || c % g != 0 || w0 % g != 0 || w1 * g != c {
                    return Err(
                        "Conv weight must be [M, C/groups, ...] with groups dividing C and M",
                    );
                }
                let hw = [
                    window.out_len(0, h, kh, false),
                    window.out_len(1, wi, kw, false),
                ];
                (w0, hw)
            };
            if n_inputs == 4 {
                act_scale_shape(&inp(3)?)?;
            }
            if n_inputs >= 3 {
                let b = inp(2)?;
                if b.rank() != 1 || fixed(&b, 0) != Some(m) {
                    return Err("Conv bias must have shape [M]");
                }
            }
            nchw_out(out, &x, m, hw)?;
        }
        NodeOp::Pool { kernel, window, .. } if has(node::POOL) => {
            let x = inp(0)?;
            let (c, [h, wi]) = nchw(&x, "Pool input must be [B, C, (H,) W] with fixed C, H, W")?;
            let (kh, kw) = (usize::from(kernel[0]), usize::from(kernel[1]));
            if !unit_rows(&x, &window, kh) {
                return Err("1-D pool with a 2-D window");
            }
            let mut ok = false;
            for ceil in [false, true] {
                let hw = [
                    window.out_len(0, h, kh, ceil),
                    window.out_len(1, wi, kw, ceil),
                ];
                ok |= nchw_out(out, &x, c, hw).is_ok();
            }
            if !ok {
                return Err("Pool output shape does not match the window");
            }
        }
        NodeOp::Reduce { start, end, .. } if has(node::REDUCE) => {
            let x = inp(0)?;
            axis_range_ok(&x, start, end)?;
            let dims = x.dims().enumerate().map(|(i, d)| {
                if (usize::from(start)..usize::from(end)).contains(&i) {
                    Dim::Fixed(1)
                } else {
                    d
                }
            });
            if !same_dims(out, x.rank(), dims) {
                return Err("Reduce output must be the input with the reduced axes set to 1");
            }
        }
        NodeOp::Softmax { start, end, .. } if has(node::SOFTMAX) => {
            let x = inp(0)?;
            axis_range_ok(&x, start, end)?;
            if x != *out {
                return Err("output shape differs from the input shape");
            }
        }
        NodeOp::Norm { start, end, .. } if has(node::NORM) => {
            let x = inp(0)?;
            axis_range_ok(&x, start, end)?;
            if x != *out {
                return Err("output shape differs from the input shape");
            }
        }
        NodeOp::Resize { .. } if has(node::RESIZE) => {
            let x = inp(0)?;
            let r = x.rank();
            if r < 2 || out.rank() != r {
                return Err("Resize input must have rank >= 2");
            }
            let spatial_fixed =
                (r - 2..r).all(|i| fixed(&x, i).is_some() && fixed(out, i).is_some());
            if !spatial_fixed {
                return Err("Resize of the batch dim is not supported");
            }
            if (0..r - 2).any(|i| x.dim(i) != out.dim(i)) {
                return Err("Resize may only change the last two dims");
            }
        }
        NodeOp::Pad { begin, end, .. } if has(node::PAD) => {
            let x = inp(0)?;
            let r = x.rank();
            let past = |v: &[u16]| v.get(r..).unwrap_or(&[]).iter().any(|p| *p != 0);
            if out.rank() != r || past(&begin) || past(&end) {
                return Err("Pad has pads past the input rank");
            }
            for (i, (b, e)) in begin.iter().zip(&end).enumerate().take(r) {
                let (b, e) = (u32::from(*b), u32::from(*e));
                let want = match x.dim(i) {
                    Some(Dim::Batch) if b == 0 && e == 0 => Dim::Batch,
                    Some(Dim::Batch) => return Err("Pad of the batch dim is not supported"),
                    Some(Dim::Fixed(n)) => {
                        Dim::Fixed(n.checked_add(b + e).ok_or("Pad output dim is too large")?)
                    }
                    None => return Err("Pad rank"),
                };
                if out.dim(i) != Some(want) {
                    return Err("Pad output shape is not the padded input shape");
                }
            }
        }
        // Not linked: decoding such a node already failed.
        _ => return Err("op kind not linked"),
    }
    Ok(())
}
