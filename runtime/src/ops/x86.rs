//! x86_64 AVX-512 tiles of the f32 Dense (feature `std`; chosen at run time when the CPU has
//! AVX-512F): 4 rows × 32 columns in eight zmm accumulators for the whole reduction, each
//! step one broadcast per row, two weight loads and one fused multiply-add per accumulator.
//! Every output element keeps the order of the module docs of `dense.rs`, `fma(a1, w1,
//! fma(a0, w0, init))...` with one rounding per multiply-add, so the bits are those of every
//! other path and target. Also the instruction-set checks of the x86 kernels. Written with intrinsics: the compiler's own vectorization of the
//! generic tile loops at this width shuffled the weight rows through xmm inserts and ran no
//! faster than AVX2.
//!
//! The AVX-512 intrinsics are stable since Rust 1.89: this module (feature `std`, which the
//! host crates enable, MSRV 1.92) needs it; the no_std runtime keeps its 1.87.

use core::arch::x86_64::{
    __m256, __m512, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_storeu_ps,
    _mm512_fmadd_ps, _mm512_i32gather_ps, _mm512_loadu_ps, _mm512_mullo_epi32, _mm512_set1_epi32,
    _mm512_set1_ps, _mm512_setr_epi32, _mm512_storeu_ps,
};

use super::weights::{load_bias, Weights};
use super::SIZE_ERR;
use crate::Error;

/// Whether the CPU has AVX-512F (and FMA, which every AVX-512F core has): the kernels
/// compiled with `#[target_feature(enable = "avx512f,fma")]` may run.
pub(super) fn has_avx512() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma")
}

/// Whether the CPU has AVX2 and FMA: the kernels compiled with
/// `#[target_feature(enable = "avx2,fma")]` may run.
pub(super) fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// A vector register of f32 lanes that the Dense tiles accumulate in: the zmm registers of
/// AVX-512F or the ymm registers of AVX2 (with FMA). Each method is one instruction; they
/// are inlined into the `#[target_feature]` callers ([`tiles`], [`tiles_avx2`]).
pub(super) trait Lanes: Copy {
    /// Lanes per register.
    const N: usize;
    /// Register tiles of up to this many registers a row (more would not fit the register
    /// file with six rows).
    const WIDE: usize;
    /// Loads `N` values from `p`.
    ///
    /// # Safety
    /// `p .. p + N` must be readable and the CPU must have the instruction set.
    unsafe fn load(p: *const f32) -> Self;
    /// `v` in every lane. (Safety: the CPU must have the instruction set.)
    unsafe fn splat(v: f32) -> Self;
    /// `a · b + c`, rounded once. (Safety: the CPU must have the instruction set.)
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
    /// Stores the lanes at `p`.
    ///
    /// # Safety
    /// `p .. p + N` must be writable and the CPU must have the instruction set.
    unsafe fn store(p: *mut f32, v: Self);
}

/// `impl Lanes for $reg`, each method the one intrinsic named.
macro_rules! impl_lanes {
    ($reg:ty, $n:literal, $wide:literal, $load:ident, $splat:ident, $fmadd:ident, $store:ident) => {
        impl Lanes for $reg {
            const N: usize = $n;
            const WIDE: usize = $wide;
            #[inline(always)]
            unsafe fn load(p: *const f32) -> Self {
                // SAFETY: the caller's contract.
                unsafe { $load(p) }
            }
            #[inline(always)]
            unsafe fn splat(v: f32) -> Self {
                // SAFETY: the caller's contract.
                unsafe { $splat(v) }
            }
            #[inline(always)]
            unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
                // SAFETY: the caller's contract.
                unsafe { $fmadd(a, b, c) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut f32, v: Self) {
                // SAFETY: the caller's contract.
                unsafe { $store(p, v) }
            }
        }
    };
}

impl_lanes!(
    __m512,
    16,
    4,
    _mm512_loadu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_storeu_ps
);
impl_lanes!(
    __m256,
    8,
    2,
    _mm256_loadu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_storeu_ps
);

/// Columns of one AVX-512 tile ([`tiles`]; 64 where they fit).
pub(super) const TILE: usize = 32;

/// Columns of one AVX2 tile ([`tiles_avx2`]).
pub(super) const TILE_AVX2: usize = 16;

/// Columns `0 .. full` (a multiple of [`TILE`], at most `n`) of every row (a multiple of 4
/// rows) of `out [rows, n] = a [rows, k] x w [k, n] (+ bias)`: `o[r][c] = bias[c] + Σ_k
/// a[r][k] · w[k · n + c]` in ascending `k`, for `w` row-major. Column tiles outside, row
/// blocks inside: a tile's weights (`k` × 64 values) stay in the L1 cache while every block
/// of rows passes over them (row blocks outside re-read them from L2 for every block).
///
/// Errors: [`Error::Invalid`] when a length does not fit those shapes.
#[target_feature(enable = "avx512f,fma")]
pub(super) fn tiles(
    a: &[f32],
    out: &mut [f32],
    w: &[f32],
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
    full: usize,
) -> Result<(), Error> {
    tiles_of::<__m512>(a, out, w, bias, k, n, full)
}

/// [`tiles`] in the ymm registers of AVX2 and FMA: tiles of 6 or 4 rows × 16 columns (12
/// or 8 accumulators of the 16 registers), `full` a multiple of [`TILE_AVX2`]. The same
/// order of every sum, so the same bits. (The compiler's own vectorization of the generic
/// 4-row tiles kept 8 accumulators, too few to cover the FMA latency on two pipes.)
///
/// Errors: as [`tiles`].
#[target_feature(enable = "avx2,fma")]
pub(super) fn tiles_avx2(
    a: &[f32],
    out: &mut [f32],
    w: &[f32],
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
    full: usize,
) -> Result<(), Error> {
    tiles_of::<__m256>(a, out, w, bias, k, n, full)
}

/// The body of [`tiles`] and [`tiles_avx2`], for registers `L`: tiles of `L::WIDE`
/// registers a row where they fit, else 2.
#[inline(always)]
fn tiles_of<L: Lanes>(
    a: &[f32],
    out: &mut [f32],
    w: &[f32],
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
    full: usize,
) -> Result<(), Error> {
    let rows = out.len().checked_div(n).unwrap_or(0);
    let fits = k > 0
        && rows.is_multiple_of(4)
        && full.is_multiple_of(2 * L::N)
        && full <= n
        && k.checked_mul(n) == Some(w.len())
        && rows.checked_mul(n) == Some(out.len())
        && rows.checked_mul(k) == Some(a.len());
    if !fits {
        return Err(SIZE_ERR);
    }
    let mut c0 = 0;
    while c0 < full {
        // Four registers a row where the set has them and they fit (each broadcast feeds
        // four multiply-adds, and the FMA latency is hidden); else 2.
        let v = if L::WIDE == 4 && c0 + 4 * L::N <= full {
            4
        } else {
            2
        };
        let mut init = [0f32; 64];
        load_bias(bias, c0, init.get_mut(..L::N * v).ok_or(SIZE_ERR)?).ok_or(SIZE_ERR)?;
        // Blocks of 6 rows (each weight load feeds 6 multiply-adds), and of 4 where 6 do
        // not fit (6 only where it leaves 0 or at least 4 rows: `rows` is a multiple of 4).
        let mut r = 0;
        while r < rows {
            let six = rows - r == 6 || rows - r >= 10;
            let h = if six { 6 } else { 4 };
            let ob = out.get_mut(r * n..(r + h) * n).ok_or(SIZE_ERR)?;
            let ab = a.get(r * k..(r + h) * k).ok_or(SIZE_ERR)?;
            match (six, v == 4) {
                (true, true) => tile::<L, 6, 4>(ob, ab, w, &init, n, c0)?,
                (true, false) => tile::<L, 6, 2>(ob, ab, w, &init, n, c0)?,
                (false, true) => tile::<L, 4, 4>(ob, ab, w, &init, n, c0)?,
                (false, false) => tile::<L, 4, 2>(ob, ab, w, &init, n, c0)?,
            }
            r += h;
        }
        c0 += L::N * v;
    }
    Ok(())
}

/// Columns `c0 .. c0 + N V` of the `R` output rows `o` (`R × n`) from the input rows `a`
/// (`R × k`) ([`tiles`]), starting from `init` (the bias of those columns, or zeros).
#[inline(always)]
fn tile<L: Lanes, const R: usize, const V: usize>(
    o: &mut [f32],
    a: &[f32],
    w: &[f32],
    init: &[f32; 64],
    n: usize,
    c0: usize,
) -> Result<(), Error> {
    let k = a.len() / R;
    let width = L::N * V;
    if width > 64
        || c0 + width > n
        || k.checked_mul(n) != Some(w.len())
        || k * R != a.len()
        || R.checked_mul(n) != Some(o.len())
    {
        return Err(SIZE_ERR);
    }
    // SAFETY: `init` holds 64 >= N V values; the caller runs with `L`'s instruction set.
    let start: [L; V] = core::array::from_fn(|v| unsafe { L::load(init.as_ptr().add(L::N * v)) });
    let mut acc: [[L; V]; R] = [start; R];
    // SAFETY: for `kk < k` the steps read `w[kk · n + c0 ..][.. N V]`, within `w` since
    // `c0 + N V <= n` and `w.len() == k · n` (checked above), and `a[i · k + kk]` (through
    // `rows[i]`, which is `a + i · k`) for `i < R`, within `a` (`R · k` values, checked).
    // The weight pointer advances with `wrapping_add`, so its value past the last row is
    // never used to load.
    unsafe {
        let mut wp = w.as_ptr().add(c0);
        let ap = a.as_ptr();
        // One pointer per input row, and two steps per loop pass: the row addresses
        // stayed in registers and the loop's own work halved (64 × 128 × 128: 61 → 68 G
        // multiply-adds a second; the order of every sum is unchanged).
        let rows: [*const f32; R] = core::array::from_fn(|i| ap.add(i * k));
        let mut kk = 0;
        while kk + 2 <= k {
            step(&mut acc, &rows, kk, wp);
            step(&mut acc, &rows, kk + 1, wp.wrapping_add(n));
            wp = wp.wrapping_add(2 * n);
            kk += 2;
        }
        if kk < k {
            step(&mut acc, &rows, kk, wp);
        }
    }
    for (dst, row) in o.chunks_exact_mut(n).zip(&acc) {
        let d = dst.get_mut(c0..c0 + width).ok_or(SIZE_ERR)?;
        for (v, r) in row.iter().enumerate() {
            // SAFETY: `d` holds N V values.
            unsafe { L::store(d.as_mut_ptr().add(L::N * v), *r) };
        }
    }
    Ok(())
}

/// One step of [`tile`]: `acc[i][v] += a[i][kk] · w[kk][c0 + N v ..]` (fused), with
/// `rows[i]` pointing at input row `i` and `wp` at the tile's weights of row `kk`. A
/// function (inlined into the `#[target_feature]` caller), not a closure: a closure's
/// intrinsics were not inlined and ran 50× slower.
///
/// # Safety
/// `rows[i].add(kk)` for `i < R` and `wp .. wp + N V` must be readable.
#[inline(always)]
unsafe fn step<L: Lanes, const R: usize, const V: usize>(
    acc: &mut [[L; V]; R],
    rows: &[*const f32; R],
    kk: usize,
    wp: *const f32,
) {
    // SAFETY: the caller's contract.
    unsafe {
        let wv: [L; V] = core::array::from_fn(|v| L::load(wp.add(L::N * v)));
        for (acc_row, p) in acc.iter_mut().zip(rows) {
            let x = L::splat(*p.add(kk));
            for (r, wv) in acc_row.iter_mut().zip(&wv) {
                *r = L::fmadd(x, *wv, *r);
            }
        }
    }
}

/// The most output columns [`narrow`] handles.
pub(super) const NARROW_COLS: usize = 8;

/// Rows of one [`narrow`] block: the lanes of a zmm register.
pub(super) const NARROW_ROWS: usize = 16;

/// A Dense with few output columns (`1 ..= 8`, e.g. a 2-D model's velocity layer) over the
/// first `rows / 16 · 16` rows of `out [rows, n] = a [rows, k] x w [k, n] (+ bias)`: one zmm
/// accumulator per column holds 16 rows in its lanes, each step gathering `a[r][kk]` of the
/// 16 rows and multiply-adding one broadcast weight per column. Each element keeps the
/// order of every path (`bias`, then `k` ascending, fused). Returns the rows done. (The
/// row-wise path has only `n` short chains of dependent multiply-adds to overlap.)
///
/// Errors: [`Error::Invalid`] when a length does not fit those shapes or `n` is not in
/// `1 ..= 8`.
#[target_feature(enable = "avx512f,fma")]
pub(super) fn narrow(
    a: &[f32],
    out: &mut [f32],
    w: &[f32],
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
) -> Result<usize, Error> {
    match n {
        1 => narrow_n::<1>(a, out, w, bias, k),
        2 => narrow_n::<2>(a, out, w, bias, k),
        3 => narrow_n::<3>(a, out, w, bias, k),
        4 => narrow_n::<4>(a, out, w, bias, k),
        5 => narrow_n::<5>(a, out, w, bias, k),
        6 => narrow_n::<6>(a, out, w, bias, k),
        7 => narrow_n::<7>(a, out, w, bias, k),
        8 => narrow_n::<8>(a, out, w, bias, k),
        _ => Err(SIZE_ERR),
    }
}

/// [`narrow`] with `N` columns.
#[target_feature(enable = "avx512f,fma")]
fn narrow_n<const N: usize>(
    a: &[f32],
    out: &mut [f32],
    w: &[f32],
    bias: Option<Weights<'_>>,
    k: usize,
) -> Result<usize, Error> {
    let rows = out.len() / N;
    let blocks = rows / NARROW_ROWS;
    let stride = i32::try_from(k).map_err(|_| SIZE_ERR)?;
    let fits = k > 0
        && rows * N == out.len()
        && rows.checked_mul(k) == Some(a.len())
        && k.checked_mul(N) == Some(w.len())
        && stride.checked_mul(NARROW_ROWS as i32).is_some();
    if !fits {
        return Err(SIZE_ERR);
    }
    let mut init = [0f32; N];
    load_bias(bias, 0, &mut init).ok_or(SIZE_ERR)?;
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let offsets = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(stride));
    let mut lanes_out = [[0f32; NARROW_ROWS]; N];
    for (ob, ab) in out
        .chunks_exact_mut(NARROW_ROWS * N)
        .zip(a.chunks_exact(NARROW_ROWS * k))
    {
        let mut acc: [__m512; N] = init.map(|v| _mm512_set1_ps(v));
        // SAFETY: step `kk < k` gathers `ab[lane · k + kk]` for the 16 lanes, within `ab`
        // (16 rows of `k`: checked by the chunking and `rows · k == a.len()`), and reads
        // `w[kk · N ..][.. N]`, within `w` (`w.len() == k · N`, checked above).
        unsafe {
            for kk in 0..k {
                let x = _mm512_i32gather_ps::<4>(offsets, ab.as_ptr().add(kk));
                let wr = w.as_ptr().add(kk * N);
                for (c, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(x, _mm512_set1_ps(*wr.add(c)), *acc);
                }
            }
        }
        for (dst, v) in lanes_out.iter_mut().zip(&acc) {
            // SAFETY: `dst` holds 16 values.
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), *v) };
        }
        for (lane, orow) in ob.chunks_exact_mut(N).enumerate() {
            for (c, o) in orow.iter_mut().enumerate() {
                *o = lanes_out
                    .get(c)
                    .and_then(|l| l.get(lane))
                    .copied()
                    .ok_or(SIZE_ERR)?;
            }
        }
    }
    Ok(blocks * NARROW_ROWS)
}

/// Pixels of a convolution tile (`conv_gemm`'s `TILE_PX`): one zmm register.
pub(super) const CONV_PX: usize = 16;
/// Output channels of a convolution tile (`conv_gemm`'s `TILE_CH`).
pub(super) const CONV_CH: usize = 6;

/// One register tile of the convolution GEMM (`conv_gemm::multiply`): `acc[r][p] = start[r] +
/// Σ_k panel[k · 16 + p] · w[k · 6 + r]`, `k` ascending over `panel.len() / 16` steps, one
/// rounding per multiply-add (the bits of the portable tile loops).
///
/// Errors: [`Error::Invalid`] when `w` does not hold 6 values per step of `panel`.
#[target_feature(enable = "avx512f,fma")]
pub(super) fn conv_tile(
    panel: &[f32],
    w: &[f32],
    start: &[f32; CONV_CH],
) -> Result<[[f32; CONV_PX]; CONV_CH], Error> {
    let steps = panel.len() / CONV_PX;
    if !panel.len().is_multiple_of(CONV_PX) || w.len() != steps * CONV_CH {
        return Err(SIZE_ERR);
    }
    let mut acc: [__m512; CONV_CH] = start.map(|v| _mm512_set1_ps(v));
    // SAFETY: step `s < steps` loads `panel[16 s ..][.. 16]` and reads `w[6 s ..][.. 6]`,
    // within both slices (lengths checked above).
    unsafe {
        let (mut xp, mut wp) = (panel.as_ptr(), w.as_ptr());
        for _ in 0..steps {
            let xs = _mm512_loadu_ps(xp);
            for (j, a) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(*wp.add(j));
                *a = _mm512_fmadd_ps(xs, wv, *a);
            }
            xp = xp.wrapping_add(CONV_PX);
            wp = wp.wrapping_add(CONV_CH);
        }
    }
    let mut out = [[0f32; CONV_PX]; CONV_CH];
    for (o, a) in out.iter_mut().zip(&acc) {
        // SAFETY: `o` holds 16 values.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *a) };
    }
    Ok(out)
}
