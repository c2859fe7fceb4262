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
    __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_storeu_ps,
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

/// Columns of one tile.
pub(super) const TILE: usize = 32;

/// Columns `0 .. full` (a multiple of [`TILE`], at most `n`) of four output rows:
/// `o[i][c] = bias[c] + Σ_k a[i][k] · w[k · n + c]` in ascending `k`, for `w [k, n]`
/// row-major and `a[i]` of `k` values.
///
/// Errors: [`Error::Invalid`] when a length does not fit those shapes.
#[target_feature(enable = "avx512f,fma")]
pub(super) fn tiles4(
    o: [&mut [f32]; 4],
    a: [&[f32]; 4],
    w: &[f32],
    bias: Option<Weights<'_>>,
    n: usize,
    full: usize,
) -> Result<(), Error> {
    let k = a[0].len();
    let fits = full.is_multiple_of(TILE)
        && full <= n
        && k.checked_mul(n) == Some(w.len())
        && a.iter().all(|r| r.len() == k)
        && o.iter().all(|r| r.len() == n);
    if !fits {
        return Err(SIZE_ERR);
    }
    let [o0, o1, o2, o3] = o;
    let mut c0 = 0;
    while c0 < full {
        let rows = [&mut *o0, &mut *o1, &mut *o2, &mut *o3];
        // 64 columns (four zmm a row, 16 accumulators) where they fit: each broadcast
        // feeds four multiply-adds, and FMA latency is hidden; else 32.
        c0 = if c0 + 2 * TILE <= full {
            tile::<4>(rows, a, w, bias, n, c0)?
        } else {
            tile::<2>(rows, a, w, bias, n, c0)?
        };
    }
    Ok(())
}

/// Columns `c0 .. c0 + 16 V` of four output rows ([`tiles4`]); returns `c0 + 16 V`. The
/// caller checked `c0 + 16 V <= n`, `w.len() == k · n` and the row lengths.
#[inline(always)]
fn tile<const V: usize>(
    o: [&mut [f32]; 4],
    a: [&[f32]; 4],
    w: &[f32],
    bias: Option<Weights<'_>>,
    n: usize,
    c0: usize,
) -> Result<usize, Error> {
    let [a0, a1, a2, a3] = a;
    let k = a0.len();
    let width = 16 * V;
    if c0 + width > n || k.checked_mul(n) != Some(w.len()) || a.iter().any(|r| r.len() != k) {
        return Err(SIZE_ERR);
    }
    let mut init = [0f32; 64];
    load_bias(bias, c0, init.get_mut(..width).ok_or(SIZE_ERR)?).ok_or(SIZE_ERR)?;
    // SAFETY: `init` holds 64 >= 16 V values.
    let start: [__m512; V] =
        core::array::from_fn(|v| unsafe { _mm512_loadu_ps(init.as_ptr().add(16 * v)) });
    let mut acc: [[__m512; V]; 4] = [start; 4];
    // SAFETY: for `kk < k` the loads read `w[kk · n + c0 ..][.. 16 V]`, within `w` since
    // `c0 + 16 V <= n` and `w.len() == k · n` (checked above); `a0 .. a3` hold `k` values
    // each (checked), read at `kk < k`. The weight pointer advances with `wrapping_add`, so
    // its value past the last row is never used to load.
    unsafe {
        let mut wp = w.as_ptr().add(c0);
        for kk in 0..k {
            let wv: [__m512; V] = core::array::from_fn(|v| _mm512_loadu_ps(wp.add(16 * v)));
            let xs = [
                *a0.get_unchecked(kk),
                *a1.get_unchecked(kk),
                *a2.get_unchecked(kk),
                *a3.get_unchecked(kk),
            ];
            for (row, x) in acc.iter_mut().zip(xs) {
                let x = _mm512_set1_ps(x);
                for (r, wv) in row.iter_mut().zip(&wv) {
                    *r = _mm512_fmadd_ps(x, *wv, *r);
                }
            }
            wp = wp.wrapping_add(n);
        }
    }
    for (dst, row) in o.into_iter().zip(&acc) {
        let d = dst.get_mut(c0..c0 + width).ok_or(SIZE_ERR)?;
        for (v, r) in row.iter().enumerate() {
            // SAFETY: `d` holds 16 V values.
            unsafe { _mm512_storeu_ps(d.as_mut_ptr().add(16 * v), *r) };
        }
    }
    Ok(c0 + width)
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
