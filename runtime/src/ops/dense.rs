//! Dense (`a x w + bias`) and batched MatMul.
//!
//! Per output element the order is fixed: `acc = bias[n]` (or `0.0`), then for `k = 0, 1, ..`
//! `acc = acc + a[r, k] * w[k, n]` — one rounding for the product, one for the sum. The
//! kernel computes 4 rows × a tile of columns at a time with the accumulators in registers
//! (vectorizable over the columns), and single rows with a row-update loop; both only reorder
//! work *between* output elements, so a row's result is the same whether it is computed in a
//! block of 4, alone, or at any position.

use super::weights::{load_bias, WeightRuns, Weights};
use super::{check_len, Dims, SIZE_ERR};
use crate::Error;

/// `out[rows, n] = a[rows, k] x w[k, n] (+ bias[n])`, `rows = out.len() / n`, with `w` and
/// `bias` in their stored types ([`Weights`]: f16, bf16 and int8 values are dequantized on
/// the fly, so the result equals that of the dequantized f32 values bit for bit).
///
/// On x86_64 hosts with AVX2 (feature `std`, detected at run time) the same loops run with
/// 16-column register tiles compiled for AVX2 — separate multiplies and adds, no FMA, the
/// same per-element order — so the results are bit-identical to every other target.
///
/// Errors: sizes that do not fit ([`Error::Invalid`]).
pub fn dense(
    a: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    match w.as_f32() {
        Some(w) => dense_f32(a, w, bias, k, n, out),
        None => dense_tiled::<TILE_COLS, _>(a, w, bias, k, n, out),
    }
}

/// [`dense`] with f32 weights.
fn dense_f32(
    a: &[f32],
    w: &[f32],
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: `dense_avx2` only needs the AVX2 instruction set, which the CPU has
        // (checked just above); its body is safe code.
        return unsafe { dense_avx2(a, w, bias, k, n, out) };
    }
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    {
        check_sizes(a, w.len(), bias, k, n, out)?;
        super::arm::dense(a, w, bias, k, n, out)
    }
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    dense_tiled::<TILE_COLS, _>(a, w, bias, k, n, out)
}

/// Checks `a [rows, k] x w [k, n] (+ bias [n]) -> out [rows, n]` (`w_len` weights, `k` and
/// `n` non-zero).
fn check_sizes(
    a: &[f32],
    w_len: usize,
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
    out: &[f32],
) -> Result<(), Error> {
    if k == 0 || n == 0 {
        return Err(SIZE_ERR);
    }
    let rows = out.len() / n;
    let ok = rows.checked_mul(n) == Some(out.len())
        && rows.checked_mul(k) == Some(a.len())
        && k.checked_mul(n) == Some(w_len)
        && bias.is_none_or(|b| b.len() == n);
    if ok {
        Ok(())
    } else {
        Err(SIZE_ERR)
    }
}

/// [`dense`] compiled for AVX2 (no FMA) with 16-column tiles.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2")]
fn dense_avx2(
    a: &[f32],
    w: &[f32],
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    dense_tiled::<16, _>(a, w, bias, k, n, out)
}

/// The Dense loops with `T`-column register tiles (see the module docs for the order).
#[inline(always)]
fn dense_tiled<const T: usize, W: WeightRuns>(
    a: &[f32],
    w: W,
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    check_sizes(a, w.total(), bias, k, n, out)?;
    let block_out = n.checked_mul(4).ok_or(SIZE_ERR)?;
    let block_a = k.checked_mul(4).ok_or(SIZE_ERR)?;
    let mut o_blocks = out.chunks_exact_mut(block_out);
    let mut a_blocks = a.chunks_exact(block_a);
    for (ob, ab) in (&mut o_blocks).zip(&mut a_blocks) {
        let mut orows = ob.chunks_exact_mut(n);
        let mut arows = ab.chunks_exact(k);
        if let (Some(o0), Some(o1), Some(o2), Some(o3), Some(a0), Some(a1), Some(a2), Some(a3)) = (
            orows.next(),
            orows.next(),
            orows.next(),
            orows.next(),
            arows.next(),
            arows.next(),
            arows.next(),
            arows.next(),
        ) {
            block4::<T, W>([o0, o1, o2, o3], [a0, a1, a2, a3], w, bias, n)?;
        }
    }
    for (orow, arow) in o_blocks
        .into_remainder()
        .chunks_exact_mut(n)
        .zip(a_blocks.remainder().chunks_exact(k))
    {
        row1::<T, W>(orow, arow, w, bias, n)?;
    }
    Ok(())
}

/// Output columns per register tile: 4 rows × `TILE_COLS` accumulators stay in registers
/// for the whole `k` loop (8 fills two SSE/NEON vectors per row; 4 fits the 32 single-
/// precision registers of a Cortex-M FPU next to the operands).
#[cfg(target_arch = "arm")]
const TILE_COLS: usize = 4;
#[cfg(not(target_arch = "arm"))]
const TILE_COLS: usize = 8;

/// Columns of a tail (the columns after the last full tile) dequantized at once.
const TAIL_CHUNK: usize = 16;

/// Four rows at once. Full tiles of `T` columns accumulate in registers over all of `k` and
/// are stored once; the remaining columns take the row-update path. Both keep the
/// per-element order `((init + a0*w0) + a1*w1) + ...`.
#[inline(always)]
fn block4<const T: usize, W: WeightRuns>(
    o: [&mut [f32]; 4],
    a: [&[f32]; 4],
    w: W,
    bias: Option<Weights<'_>>,
    n: usize,
) -> Result<(), Error> {
    let [o0, o1, o2, o3] = o;
    let full = n - n % T;
    let mut buf = [0f32; T];
    let mut c0 = 0;
    while c0 < full {
        let c1 = c0 + T;
        let mut init = [0f32; T];
        load_bias(bias, c0, &mut init).ok_or(SIZE_ERR)?;
        let mut acc = [init; 4];
        let step = |acc: &mut [[f32; T]; 4], xs: [f32; 4], wt: &[f32]| {
            for (row, x) in acc.iter_mut().zip(xs) {
                for (y, wv) in row.iter_mut().zip(wt) {
                    *y += x * *wv;
                }
            }
        };
        let avals = a[0].iter().zip(a[1]).zip(a[2]).zip(a[3]);
        if let Some(wf) = w.as_f32_slice() {
            // f32 weights: walk the rows (the column range is checked once per tile).
            for ((((x0, x1), x2), x3), wrow) in avals.zip(wf.chunks_exact(n)) {
                let wt = wrow.get(c0..c1).ok_or(SIZE_ERR)?;
                step(&mut acc, [*x0, *x1, *x2, *x3], wt);
            }
        } else {
            for (kk, (((x0, x1), x2), x3)) in avals.enumerate() {
                let wt = w.run(kk * n + c0, T, &mut buf).ok_or(SIZE_ERR)?;
                step(&mut acc, [*x0, *x1, *x2, *x3], wt);
            }
        }
        for (orow, row) in [&mut *o0, &mut *o1, &mut *o2, &mut *o3]
            .into_iter()
            .zip(&acc)
        {
            if let Some(dst) = orow.get_mut(c0..c1) {
                dst.copy_from_slice(row);
            }
        }
        c0 = c1;
    }
    if full < n {
        let (Some(t0), Some(t1), Some(t2), Some(t3)) = (
            o0.get_mut(full..),
            o1.get_mut(full..),
            o2.get_mut(full..),
            o3.get_mut(full..),
        ) else {
            return Err(SIZE_ERR);
        };
        for oi in [&mut *t0, &mut *t1, &mut *t2, &mut *t3] {
            load_bias(bias, full, oi).ok_or(SIZE_ERR)?;
        }
        let mut tail = [0f32; TAIL_CHUNK];
        let avals = a[0].iter().zip(a[1]).zip(a[2]).zip(a[3]);
        for (kk, (((x0, x1), x2), x3)) in avals.enumerate() {
            let (x0, x1, x2, x3) = (*x0, *x1, *x2, *x3);
            // The tail is shorter than a tile (< 16 columns), so one chunk covers it.
            let wt = w.run(kk * n + full, n - full, &mut tail).ok_or(SIZE_ERR)?;
            let ys = t0
                .iter_mut()
                .zip(t1.iter_mut())
                .zip(t2.iter_mut())
                .zip(t3.iter_mut());
            for ((((y0, y1), y2), y3), wv) in ys.zip(wt) {
                let wv = *wv;
                *y0 += x0 * wv;
                *y1 += x1 * wv;
                *y2 += x2 * wv;
                *y3 += x3 * wv;
            }
        }
    }
    Ok(())
}

/// One row (same per-element order as [`block4`]): register tiles, then the tail columns.
#[inline(always)]
fn row1<const T: usize, W: WeightRuns>(
    o: &mut [f32],
    a: &[f32],
    w: W,
    bias: Option<Weights<'_>>,
    n: usize,
) -> Result<(), Error> {
    let full = n - n % T;
    let mut buf = [0f32; T];
    let mut c0 = 0;
    while c0 < full {
        let c1 = c0 + T;
        let mut acc = [0f32; T];
        load_bias(bias, c0, &mut acc).ok_or(SIZE_ERR)?;
        let step = |acc: &mut [f32; T], x: f32, wt: &[f32]| {
            for (y, wv) in acc.iter_mut().zip(wt) {
                *y += x * *wv;
            }
        };
        if let Some(wf) = w.as_f32_slice() {
            for (x, wrow) in a.iter().zip(wf.chunks_exact(n)) {
                step(&mut acc, *x, wrow.get(c0..c1).ok_or(SIZE_ERR)?);
            }
        } else {
            for (kk, x) in a.iter().enumerate() {
                step(
                    &mut acc,
                    *x,
                    w.run(kk * n + c0, T, &mut buf).ok_or(SIZE_ERR)?,
                );
            }
        }
        if let Some(dst) = o.get_mut(c0..c1) {
            dst.copy_from_slice(&acc);
        }
        c0 = c1;
    }
    let t = o.get_mut(full..).ok_or(SIZE_ERR)?;
    load_bias(bias, full, t).ok_or(SIZE_ERR)?;
    let mut tail = [0f32; TAIL_CHUNK];
    for (kk, x) in a.iter().enumerate() {
        let wt = w.run(kk * n + full, n - full, &mut tail).ok_or(SIZE_ERR)?;
        for (y, wv) in t.iter_mut().zip(wt) {
            *y += *x * *wv;
        }
    }
    Ok(())
}

/// numpy `matmul`: `a[.., M, K] x b[.., K, N] -> out[.., M, N]`, leading dims broadcast.
/// Each output element: `acc = 0.0; acc = acc + a[m, k] * b[k, n]` for `k` ascending.
pub fn matmul(
    a: &[f32],
    ad: &Dims,
    b: &[f32],
    bd: &Dims,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    check_len(a.len(), ad)?;
    check_len(b.len(), bd)?;
    check_len(out.len(), od)?;
    let (ra, rb, ro) = (ad.rank(), bd.rank(), od.rank());
    if ra < 2 || rb < 2 || ro != ra.max(rb) {
        return Err(SIZE_ERR);
    }
    let m = ad.get(ra - 2).ok_or(SIZE_ERR)?;
    let k = ad.get(ra - 1).ok_or(SIZE_ERR)?;
    let n = bd.get(rb - 1).ok_or(SIZE_ERR)?;
    if bd.get(rb - 2) != Some(k) || od.get(ro - 2) != Some(m) || od.get(ro - 1) != Some(n) {
        return Err(SIZE_ERR);
    }
    let (a_mat, b_mat, o_mat) = (m * k, k * n, m * n);
    if out.is_empty() {
        return Ok(());
    }
    if k == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let lead = ro - 2;
    // Matrix strides of a and b over the output's leading dims (0 where broadcast).
    let mut sa = [0usize; super::MAX_RANK];
    let mut sb = [0usize; super::MAX_RANK];
    for (src, strides, mat) in [(ad, &mut sa, a_mat), (bd, &mut sb, b_mat)] {
        let off = ro - src.rank();
        let mut acc = mat;
        for i in (0..lead).rev() {
            let od_i = od.get(i).ok_or(SIZE_ERR)?;
            let sd = if i >= off {
                src.get(i - off).ok_or(SIZE_ERR)?
            } else {
                1
            };
            let slot = strides.get_mut(i).ok_or(SIZE_ERR)?;
            *slot = if sd == od_i {
                acc
            } else if sd == 1 {
                0
            } else {
                return Err(SIZE_ERR);
            };
            acc = acc.checked_mul(sd).ok_or(SIZE_ERR)?;
        }
    }
    for (bi, o) in out.chunks_exact_mut(o_mat).enumerate() {
        // Decompose the batch index over the leading dims (outermost first).
        let (mut rem, mut oa, mut ob) = (bi, 0usize, 0usize);
        for i in (0..lead).rev() {
            let d = od.get(i).ok_or(SIZE_ERR)?;
            let idx = rem % d;
            rem /= d;
            oa += idx * sa.get(i).copied().ok_or(SIZE_ERR)?;
            ob += idx * sb.get(i).copied().ok_or(SIZE_ERR)?;
        }
        let am = a.get(oa..oa + a_mat).ok_or(SIZE_ERR)?;
        let bm = b.get(ob..ob + b_mat).ok_or(SIZE_ERR)?;
        dense_f32(am, bm, None, k, n, o)?;
    }
    Ok(())
}
