//! x86_64 AVX-512 tiles of the f32 Dense (feature `std`; chosen at run time when the CPU has
//! AVX-512F): 4 rows × 32 columns in eight zmm accumulators for the whole reduction, each
//! step one broadcast per row, two weight loads and separate multiplies and adds (no FMA).
//! Every output element keeps the order of the module docs of `dense.rs`, `((init + a0·w0)
//! + a1·w1) + ...` with one rounding per product and per sum, so the bits are those of every
//! other path and target. Written with intrinsics: the compiler's own vectorization of the
//! generic tile loops at this width shuffled the weight rows through xmm inserts and ran no
//! faster than AVX2.
//!
//! The AVX-512 intrinsics are stable since Rust 1.89: this module (feature `std`, which the
//! host crates enable, MSRV 1.92) needs it; the no_std runtime keeps its 1.87.

use core::arch::x86_64::{
    __m512, _mm512_add_ps, _mm512_loadu_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_storeu_ps,
};

use super::weights::{load_bias, Weights};
use super::SIZE_ERR;
use crate::Error;

/// Columns of one tile.
pub(super) const TILE: usize = 32;

/// Columns `0 .. full` (a multiple of [`TILE`], at most `n`) of four output rows:
/// `o[i][c] = bias[c] + Σ_k a[i][k] · w[k · n + c]` in ascending `k`, for `w [k, n]`
/// row-major and `a[i]` of `k` values.
///
/// Errors: [`Error::Invalid`] when a length does not fit those shapes.
#[target_feature(enable = "avx512f")]
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
    let [a0, a1, a2, a3] = a;
    let mut c0 = 0;
    while c0 < full {
        let mut init = [0f32; TILE];
        load_bias(bias, c0, &mut init).ok_or(SIZE_ERR)?;
        // SAFETY: `init` holds 32 values (two loads of 16).
        let start = unsafe {
            [
                _mm512_loadu_ps(init.as_ptr()),
                _mm512_loadu_ps(init.as_ptr().add(16)),
            ]
        };
        let mut acc: [[__m512; 2]; 4] = [start; 4];
        // SAFETY: for `kk < k` the loads read `w[kk · n + c0 ..][.. 32]`, within `w` since
        // `c0 + 32 <= full <= n` and `w.len() == k · n` (checked above); `a0 .. a3` hold `k`
        // values each (checked), read at `kk < k`. The weight pointer advances with
        // `wrapping_add`, so its value past the last row is never used to load.
        unsafe {
            let mut wp = w.as_ptr().add(c0);
            for kk in 0..k {
                let w0 = _mm512_loadu_ps(wp);
                let w1 = _mm512_loadu_ps(wp.add(16));
                let xs = [
                    *a0.get_unchecked(kk),
                    *a1.get_unchecked(kk),
                    *a2.get_unchecked(kk),
                    *a3.get_unchecked(kk),
                ];
                for (row, x) in acc.iter_mut().zip(xs) {
                    let x = _mm512_set1_ps(x);
                    row[0] = _mm512_add_ps(row[0], _mm512_mul_ps(x, w0));
                    row[1] = _mm512_add_ps(row[1], _mm512_mul_ps(x, w1));
                }
                wp = wp.wrapping_add(n);
            }
        }
        for (dst, row) in [&mut *o0, &mut *o1, &mut *o2, &mut *o3]
            .into_iter()
            .zip(&acc)
        {
            let d = dst.get_mut(c0..c0 + TILE).ok_or(SIZE_ERR)?;
            // SAFETY: `d` holds 32 values (two stores of 16).
            unsafe {
                _mm512_storeu_ps(d.as_mut_ptr(), row[0]);
                _mm512_storeu_ps(d.as_mut_ptr().add(16), row[1]);
            }
        }
        c0 += TILE;
    }
    Ok(())
}

/// Pixels of a convolution tile (`conv_gemm`'s `TILE_PX`): one zmm register.
pub(super) const CONV_PX: usize = 16;
/// Output channels of a convolution tile (`conv_gemm`'s `TILE_CH`).
pub(super) const CONV_CH: usize = 6;

/// One register tile of the convolution GEMM (`conv_gemm::multiply`): `acc[r][p] = start[r] +
/// Σ_k panel[k · 16 + p] · w[k · 6 + r]`, `k` ascending over `panel.len() / 16` steps, one
/// rounding per product and per sum (the bits of the portable tile loops).
///
/// Errors: [`Error::Invalid`] when `w` does not hold 6 values per step of `panel`.
#[target_feature(enable = "avx512f")]
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
                *a = _mm512_add_ps(*a, _mm512_mul_ps(xs, wv));
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
