//! Dense (`a x w + bias`) and batched MatMul.
//!
//! Per output element the order is fixed: `acc = bias[n]` (or `0.0`), then for `k = 0, 1, ..`
//! `acc = fma(a[r, k], w[k, n], acc)` — a fused multiply-add, rounded once
//! ([`super::exact::mul_add`], the same bits on every target). The
//! kernel computes 4 rows × a tile of columns at a time with the accumulators in registers
//! (vectorizable over the columns), and single rows with a row-update loop; both only reorder
//! work *between* output elements, so a row's result is the same whether it is computed in a
//! block of 4, alone, or at any position.

use super::exact::mul_add;
use super::weights::{load_bias, WeightRuns, Weights};
use super::{check_len, Dims, SIZE_ERR};
use crate::Error;

/// `out[rows, n] = a[rows, k] x w[k, n] (+ bias[n])`, `rows = out.len() / n`, with `w` and
/// `bias` in their stored types ([`Weights`]: f16, bf16 and int8 values are dequantized on
/// the fly, so the result equals that of the dequantized f32 values bit for bit).
///
/// On x86_64 hosts with AVX2 and FMA or AVX-512F (feature `std`, detected at run time) the
/// same loops run with register tiles compiled for those instruction sets — one `vfmadd`
/// per multiply-add, the same per-element order — so the results are bit-identical to
/// every other target.
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
        None => dense_typed(a, w, bias, k, n, out),
    }
}

/// Weights dequantized at a time by [`dense_typed`]: 4 KB of stack on bare-metal targets,
/// 32 KB elsewhere.
const PANEL: usize = if cfg!(target_os = "none") { 1024 } else { 8192 };

/// The widest strip of columns [`dense_typed`] dequantizes at once (its bias buffer).
const MAX_STRIP: usize = 64;

/// [`dense`] with stored (f16, bf16, int8) weights: the weights of a strip of columns and a
/// range of `k` (at most [`PANEL`] values; all of `k` where it fits) are dequantized once
/// into a stack panel, and every row of `a` then runs the f32 kernel on it, continuing from
/// the sums the previous range left in `out`. Dequantizing costs once per weight instead of
/// once per weight and block of rows (on the Cortex-M4F, int8 weights took about 11
/// instructions per multiply-add that way, against 1.8 for f32). Each output element keeps
/// its order (`bias + a0·w0 + a1·w1 + ..`, a stored f32 sum reloaded exactly), so the bits
/// are those of the f32 kernel on the dequantized weights.
fn dense_typed(
    a: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    check_sizes(a, w.len(), bias, k, n, out)?;
    let fit = (PANEL / k).min(MAX_STRIP);
    // Strips of whole 8-column tiles where the panel holds them; one column (and ranges of
    // `k`) where it does not hold one.
    let strip = match fit {
        0 => 1,
        1..8 => fit,
        _ => fit - fit % 8,
    };
    let mut panel = [0f32; PANEL];
    let mut init = [0f32; MAX_STRIP];
    let mut c0 = 0;
    while c0 < n {
        let cw = strip.min(n - c0);
        let span = PANEL / cw;
        let mut k0 = 0;
        while k0 < k {
            let kc = span.min(k - k0);
            let p = panel.get_mut(..kc * cw).ok_or(SIZE_ERR)?;
            w.load_runs(k0 * n + c0, n, cw, p).ok_or(SIZE_ERR)?;
            let part = Part {
                k,
                k0,
                kc,
                n,
                c0,
                cw,
            };
            if k0 == 0 {
                let b = match bias {
                    Some(_) => {
                        let bb = init.get_mut(..cw).ok_or(SIZE_ERR)?;
                        load_bias(bias, c0, bb).ok_or(SIZE_ERR)?;
                        Some(&*bb)
                    }
                    None => None,
                };
                strip_rows(a, p, b, out, &part)?;
            } else {
                continue_rows(a, p, &mut init, out, &part)?;
            }
            k0 += kc;
        }
        c0 += cw;
    }
    Ok(())
}

/// Where a dequantized panel sits in a [`dense_typed`] product: rows `k0 .. k0 + kc` of
/// the `k × n` weights, columns `c0 .. c0 + cw`.
struct Part {
    k: usize,
    k0: usize,
    kc: usize,
    n: usize,
    c0: usize,
    cw: usize,
}

impl Part {
    /// Row `r`'s inputs for this part (`a` is `rows × k`).
    fn ins<'o>(&self, a: &'o [f32], r: usize) -> Option<&'o [f32]> {
        let a0 = r.checked_mul(self.k)?.checked_add(self.k0)?;
        a.get(a0..a0.checked_add(self.kc)?)
    }

    /// Row `r`'s inputs and outputs for this part (`out` is `rows × n`).
    fn row<'o>(
        &self,
        a: &'o [f32],
        out: &'o mut [f32],
        r: usize,
    ) -> Option<(&'o [f32], &'o mut [f32])> {
        let [o] = self.outs::<1>(out, r)?;
        Some((self.ins(a, r)?, o))
    }

    /// The outputs of rows `r .. r + R` for this part: disjoint runs of `out`.
    fn outs<'o, const R: usize>(&self, out: &'o mut [f32], r: usize) -> Option<[&'o mut [f32]; R]> {
        let start = r.checked_mul(self.n)?;
        let mut rest = out.get_mut(start..start.checked_add(R.checked_mul(self.n)?)?)?;
        let mut runs: [&'o mut [f32]; R] = core::array::from_fn(|_| Default::default());
        for run in &mut runs {
            let (row, next) = core::mem::take(&mut rest).split_at_mut_checked(self.n)?;
            *run = row.get_mut(self.c0..self.c0.checked_add(self.cw)?)?;
            rest = next;
        }
        Some(runs)
    }
}

/// The first range of `k` of a strip: `out[r, c0 + c] = init[c] + Σ a[r, k0 + i] · w[i, c]`
/// for every row (`w` is the `kc × cw` panel, `init` the bias strip or zeros): the f32
/// kernels, AVX2 where detected, the Cortex-M4F assembly tiles on Arm hard-float.
fn strip_rows(
    a: &[f32],
    w: &[f32],
    init: Option<&[f32]>,
    out: &mut [f32],
    part: &Part,
) -> Result<(), Error> {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if super::x86::has_avx2() {
        // SAFETY: `strip_rows_avx2` only needs AVX2 and FMA, which the CPU has (checked just
        // above); its body is safe code.
        return unsafe { strip_rows_avx2(a, w, init, out, part) };
    }
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    {
        let rows = out.len() / part.n;
        let bias = init.map(Weights::F32);
        let (kc, cw) = (part.kc, part.cw);
        let mut r = 0;
        while r + 1 < rows {
            let [o0, o1] = part.outs::<2>(out, r).ok_or(SIZE_ERR)?;
            let (a0, a1) = (part.ins(a, r), part.ins(a, r + 1));
            let (Some(a0), Some(a1)) = (a0, a1) else {
                return Err(SIZE_ERR);
            };
            super::arm::rows::<2>([o0, o1], [a0, a1], w, bias, kc, cw)?;
            r += 2;
        }
        if r < rows {
            let (a0, o0) = part.row(a, out, r).ok_or(SIZE_ERR)?;
            super::arm::rows::<1>([o0, &mut []], [a0, &[]], w, bias, kc, cw)?;
        }
        Ok(())
    }
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    strip_rows_tiled::<TILE_COLS>(a, w, init, out, part)
}

/// A later range of `k`: every row continues from the sums in `out` (copied into `buf`,
/// the row's own init), one row at a time.
fn continue_rows(
    a: &[f32],
    w: &[f32],
    buf: &mut [f32; MAX_STRIP],
    out: &mut [f32],
    part: &Part,
) -> Result<(), Error> {
    for r in 0..out.len() / part.n {
        let (ar, or) = part.row(a, out, r).ok_or(SIZE_ERR)?;
        let b = buf.get_mut(..part.cw).ok_or(SIZE_ERR)?;
        b.copy_from_slice(or);
        #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
        super::arm::rows::<1>(
            [or, &mut []],
            [ar, &[]],
            w,
            Some(Weights::F32(b)),
            part.kc,
            part.cw,
        )?;
        #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
        row1::<TILE_COLS, &[f32]>(or, ar, w, Some(Weights::F32(b)), part.cw)?;
    }
    Ok(())
}

/// [`strip_rows`] compiled for AVX2 and FMA with 16-column tiles.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2,fma")]
fn strip_rows_avx2(
    a: &[f32],
    w: &[f32],
    init: Option<&[f32]>,
    out: &mut [f32],
    part: &Part,
) -> Result<(), Error> {
    strip_rows_tiled::<16>(a, w, init, out, part)
}

/// [`strip_rows`] with the portable `T`-column tiles ([`block4`], [`row1`]).
#[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
#[inline(always)]
fn strip_rows_tiled<const T: usize>(
    a: &[f32],
    w: &[f32],
    init: Option<&[f32]>,
    out: &mut [f32],
    part: &Part,
) -> Result<(), Error> {
    let bias = init.map(Weights::F32);
    let cw = part.cw;
    let rows = out.len() / part.n;
    let mut r = 0;
    while r + 4 <= rows {
        let [o0, o1, o2, o3] = part.outs::<4>(out, r).ok_or(SIZE_ERR)?;
        let ar = |i: usize| part.ins(a, r + i);
        let (Some(a0), Some(a1), Some(a2), Some(a3)) = (ar(0), ar(1), ar(2), ar(3)) else {
            return Err(SIZE_ERR);
        };
        block4::<T, &[f32]>([o0, o1, o2, o3], [a0, a1, a2, a3], w, bias, cw, 0)?;
        r += 4;
    }
    while r < rows {
        let (ar, or) = part.row(a, out, r).ok_or(SIZE_ERR)?;
        row1::<T, &[f32]>(or, ar, w, bias, cw)?;
        r += 1;
    }
    Ok(())
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
    // Fewer than 4 rows have no 4-row block: they take rows of wide tiles, four
    // independent vector sums per step.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        type Kernel = unsafe fn(
            &[f32],
            &[f32],
            Option<Weights<'_>>,
            usize,
            usize,
            &mut [f32],
        ) -> Result<(), Error>;
        let blocks = out.len() / n.max(1) >= 4;
        let kernel: Option<Kernel> = if super::x86::has_avx512() {
            Some(if blocks {
                dense_avx512
            } else if n >= 128 {
                dense_rows_avx512_wide
            } else {
                dense_rows_avx512
            })
        } else if super::x86::has_avx2() {
            Some(if blocks { dense_avx2 } else { dense_rows_avx2 })
        } else {
            None
        };
        if let Some(kernel) = kernel {
            // SAFETY: the kernel was chosen for instruction sets the CPU has (AVX-512F, or
            // AVX2 and FMA, detected just above), the only requirement of these functions; their
            // bodies are safe code.
            return unsafe { kernel(a, w, bias, k, n, out) };
        }
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

/// Defines `$name`: [`dense_tiled`] with `$cols`-column tiles (f32 weights), compiled for
/// the x86 instruction set `$feature`.
macro_rules! dense_tiled_for {
    ($(#[$doc:meta])* $name:ident, $feature:literal, $cols:literal) => {
        $(#[$doc])*
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        #[target_feature(enable = $feature)]
        fn $name(
            a: &[f32],
            w: &[f32],
            bias: Option<Weights<'_>>,
            k: usize,
            n: usize,
            out: &mut [f32],
        ) -> Result<(), Error> {
            dense_tiled::<$cols, _>(a, w, bias, k, n, out)
        }
    };
}

dense_tiled_for!(
    /// [`dense`] for fewer than 4 rows compiled for AVX2 and FMA: rows of 32-column
    /// tiles, four independent ymm sums per step ([`dense_rows_avx512`]).
    dense_rows_avx2,
    "avx2,fma",
    32
);
dense_tiled_for!(
    /// [`dense`] for fewer than 4 rows (batch 1 to 3) compiled for AVX-512F: rows of
    /// 64-column tiles, whose four zmm sums are independent chains (with 16 columns, a
    /// matrix-vector product waits on one chain of multiply-adds per step).
    dense_rows_avx512,
    "avx512f,fma",
    64
);
dense_tiled_for!(
    /// [`dense_rows_avx512`] with 128-column tiles for 128 columns or more: eight
    /// independent chains of multiply-adds per step, which fill both FMA pipes over their
    /// latency (four chains leave them half idle).
    dense_rows_avx512_wide,
    "avx512f,fma",
    128
);

/// In a `#[target_feature]` Dense: columns `0 .. $full` of the rows in whole 4-row blocks
/// by `$tiles(input rows, output rows)`, then the columns past `$full` of those rows and
/// every column of the rows left over by the generic 16-column loops. A macro, not a
/// function: closures take the target features of the function they are written in, and
/// written in a helper without them, the generic loops called the software `fmaf` for
/// every multiply-add.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
macro_rules! tiles_then_rest {
    ($a:expr, $w:expr, $bias:expr, $k:expr, $n:expr, $out:expr, $full:expr, $tiles:expr) => {{
        let (a, w, bias, k, n, out, full) = ($a, $w, $bias, $k, $n, $out, $full);
        let blocks = out.len() / n / 4 * 4;
        let (a_blocks, o_blocks) = (a.get(..blocks * k), out.get_mut(..blocks * n));
        let (Some(a_blocks), Some(o_blocks)) = (a_blocks, o_blocks) else {
            return Err(SIZE_ERR);
        };
        $tiles(a_blocks, o_blocks)?;
        each_block(
            a,
            out,
            k,
            n,
            |o, ar| block4::<16, &[f32]>(o, ar, w, bias, n, full),
            |orow, arow| row1::<16, &[f32]>(orow, arow, w, bias, n),
        )
    }};
}

/// [`dense`] compiled for AVX-512F with 64- and 32-column tiles of 4 rows ([`super::x86::tiles`]), one
/// fused multiply-add each per step (one rounding, as everywhere), so the bits are those
/// of every other path.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx512f,fma")]
fn dense_avx512(
    a: &[f32],
    w: &[f32],
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    check_sizes(a, w.len(), bias, k, n, out)?;
    // Few output columns over many rows: 16 rows in the lanes of each accumulator; the
    // rows left over (and every row otherwise) take the tiles below, which for so few
    // columns leave all of them to the AVX2-width loops.
    let done = if n <= super::x86::NARROW_COLS && out.len() / n >= super::x86::NARROW_ROWS {
        super::x86::narrow(a, out, w, bias, k, n)?
    } else {
        0
    };
    let (Some(a), Some(out)) = (a.get(done * k..), out.get_mut(done * n..)) else {
        return Err(SIZE_ERR);
    };
    let full = n - n % super::x86::TILE;
    tiles_then_rest!(a, w, bias, k, n, out, full, |ab, ob| {
        super::x86::tiles(ab, ob, w, bias, k, n, full)
    })
}

/// [`dense`] compiled for AVX2 and FMA: for 128 columns or more the 4-row blocks in tiles
/// of 6 or 4 rows × 16 columns ([`super::x86::tiles_avx2`]), else the generic 4 × 16
/// tiles; the same bits either way. (Zen 3, one evaluation at 4096 rows: checker_fm's
/// 128-wide layers 5 % faster with the intrinsic tiles, moons_icfm's 64-wide ones 10 %
/// slower — the column tiles outside re-read the inputs from L3 once per tile.)
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2,fma")]
fn dense_avx2(
    a: &[f32],
    w: &[f32],
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    if n < 128 {
        // (Checks the sizes itself.)
        return dense_tiled::<16, _>(a, w, bias, k, n, out);
    }
    check_sizes(a, w.len(), bias, k, n, out)?;
    let full = n - n % super::x86::TILE_AVX2;
    tiles_then_rest!(a, w, bias, k, n, out, full, |ab, ob| {
        super::x86::tiles_avx2(ab, ob, w, bias, k, n, full)
    })
}

/// The Dense loops with `T`-column register tiles (see the module docs for the order).
#[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
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
    each_block(
        a,
        out,
        k,
        n,
        |o, ar| block4::<T, W>(o, ar, w, bias, n, 0),
        |orow, arow| row1::<T, W>(orow, arow, w, bias, n),
    )
}

/// `block` on every 4-row block of `a [rows, k]` and `out [rows, n]` (the four output rows
/// and the four input rows), then `row` on each remaining row.
#[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
#[inline(always)]
fn each_block(
    a: &[f32],
    out: &mut [f32],
    k: usize,
    n: usize,
    mut block: impl FnMut([&mut [f32]; 4], [&[f32]; 4]) -> Result<(), Error>,
    mut row: impl FnMut(&mut [f32], &[f32]) -> Result<(), Error>,
) -> Result<(), Error> {
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
            block([o0, o1, o2, o3], [a0, a1, a2, a3])?;
        }
    }
    for (orow, arow) in o_blocks
        .into_remainder()
        .chunks_exact_mut(n)
        .zip(a_blocks.remainder().chunks_exact(k))
    {
        row(orow, arow)?;
    }
    Ok(())
}

/// Output columns per register tile: 4 rows × `TILE_COLS` accumulators stay in registers
/// for the whole `k` loop (8 fills two SSE/NEON vectors per row; 4 fits the 32 single-
/// precision registers of a Cortex-M FPU next to the operands).
#[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
#[cfg(target_arch = "arm")]
const TILE_COLS: usize = 4;
#[cfg(not(target_arch = "arm"))]
const TILE_COLS: usize = 8;

/// Columns of a tail (the columns after the last full tile) dequantized at once.
#[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
const TAIL_CHUNK: usize = 16;

/// Four rows at once, columns `from ..`. Full tiles of `T` columns accumulate in registers
/// over all of `k` and are stored once; the remaining columns take the row-update path.
/// Both keep the per-element order `((init + a0*w0) + a1*w1) + ...`.
#[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
#[inline(always)]
fn block4<const T: usize, W: WeightRuns>(
    o: [&mut [f32]; 4],
    a: [&[f32]; 4],
    w: W,
    bias: Option<Weights<'_>>,
    n: usize,
    from: usize,
) -> Result<(), Error> {
    let [o0, o1, o2, o3] = o;
    let full = n - n.saturating_sub(from) % T;
    let mut buf = [0f32; T];
    let mut c0 = from;
    while c0 < full {
        let c1 = c0 + T;
        let mut init = [0f32; T];
        load_bias(bias, c0, &mut init).ok_or(SIZE_ERR)?;
        let mut acc = [init; 4];
        let step = |acc: &mut [[f32; T]; 4], xs: [f32; 4], wt: &[f32]| {
            for (row, x) in acc.iter_mut().zip(xs) {
                for (y, wv) in row.iter_mut().zip(wt) {
                    *y = mul_add(x, *wv, *y);
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
                *y0 = mul_add(x0, wv, *y0);
                *y1 = mul_add(x1, wv, *y1);
                *y2 = mul_add(x2, wv, *y2);
                *y3 = mul_add(x3, wv, *y3);
            }
        }
    }
    Ok(())
}

/// Whether a single row's tail columns of an f32 Dense (fewer than a tile) accumulate in a
/// full tile of registers ([`tail_in_registers`]) rather than in the output slice. Where
/// loops vectorize: there the slice's unknown length made them masked loads and stores
/// through memory, each step waiting on the last (a 2-column output layer took a third of a
/// batch-1 MLP's Dense time); scalar cores would only compute the extra lanes. (The 4-row
/// blocks keep their loop: four rows in flight hide the wait, and the register form
/// measured no faster at 64 rows.)
const WIDE_TAIL: bool = !super::SCALAR_MATH;

/// The tail columns `full .. n` (fewer than `T`) of one row: `T`-lane accumulators in
/// registers, each step reading the `T` weights from the tail's start in row `kk` of `w`
/// (the columns past the tail are the next weights: their lanes are computed and dropped),
/// the last rows of `w`, where `T` values would run past its end, lane by lane. Each used
/// lane is the bias, then `+ x · w` for `k` ascending: the order of every other path.
#[inline(always)]
fn tail_in_registers<const T: usize>(
    out: &mut [f32],
    a: &[f32],
    wf: &[f32],
    bias: Option<Weights<'_>>,
    n: usize,
    full: usize,
) -> Result<(), Error> {
    let rem = n - full;
    let k = a.len();
    let mut acc = [0f32; T];
    load_bias(bias, full, acc.get_mut(..rem).ok_or(SIZE_ERR)?).ok_or(SIZE_ERR)?;
    // Rows kk < wide have T weights from kk·n + full inside `wf`.
    let wide = match wf.len().checked_sub(full + T) {
        Some(room) => (room / n + 1).min(k),
        None => 0,
    };
    let (head, rest) = a.split_at(wide);
    for (kk, x) in head.iter().enumerate() {
        let s = kk * n + full;
        let wv: &[f32; T] = wf
            .get(s..s + T)
            .and_then(|v| v.try_into().ok())
            .ok_or(SIZE_ERR)?;
        for (y, wv) in acc.iter_mut().zip(wv) {
            *y = mul_add(*x, *wv, *y);
        }
    }
    for (kk, x) in (wide..).zip(rest) {
        let s = kk * n + full;
        let wv = wf.get(s..s + rem).ok_or(SIZE_ERR)?;
        for (y, wv) in acc.iter_mut().zip(wv) {
            *y = mul_add(*x, *wv, *y);
        }
    }
    out.copy_from_slice(acc.get(..rem).ok_or(SIZE_ERR)?);
    Ok(())
}

/// How many weight rows ahead [`row1`] asks for with 128-column tiles or wider.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
const PREFETCH_ROWS: usize = 6;

/// Asks the cache for the `T` values from `p` (64-byte lines): a batch-1 product with 128
/// columns or more reads its weights (64 KB and up per layer) from L2 faster so (measured
/// ~10 % faster on checker_fm's batch-1 loop; the hardware prefetchers alone left the FMA
/// chains waiting on loads). A prefetch never faults, whatever the address.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[inline(always)]
fn prefetch_run<const T: usize>(p: *const f32) {
    use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    for line in 0..T / 16 {
        // SAFETY: prefetching is a hint that never faults or reads into the program, so any
        // address is sound (the pointer is only offset, with `wrapping_add`).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(16 * line).cast::<i8>()) };
    }
}

/// One row (same per-element order as [`block4`]): register tiles, then the tail columns.
#[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
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
                *y = mul_add(x, *wv, *y);
            }
        };
        if let Some(wf) = w.as_f32_slice() {
            for (x, wrow) in a.iter().zip(wf.chunks_exact(n)) {
                #[cfg(all(feature = "std", target_arch = "x86_64"))]
                if T >= 128 {
                    prefetch_run::<T>(wrow.as_ptr().wrapping_add(PREFETCH_ROWS * n + c0));
                }
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
    if let (true, Some(wf)) = (WIDE_TAIL, w.as_f32_slice()) {
        if full < n {
            return tail_in_registers::<T>(t, a, wf, bias, n, full);
        }
    }
    load_bias(bias, full, t).ok_or(SIZE_ERR)?;
    let mut tail = [0f32; TAIL_CHUNK];
    for (kk, x) in a.iter().enumerate() {
        let wt = w.run(kk * n + full, n - full, &mut tail).ok_or(SIZE_ERR)?;
        for (y, wv) in t.iter_mut().zip(wt) {
            *y = mul_add(*x, *wv, *y);
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
