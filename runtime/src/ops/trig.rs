//! `sin` and `cos` of an f32 in f32 and integer arithmetic only, the same bits on every target.
//!
//! libm's `sinf` / `cosf` (musl's) reduce and evaluate in f64: on the Cortex-M4F, whose FPU is
//! single precision, that is software double arithmetic (about 5 KB of code with the
//! large-argument reduction and its table, and hundreds of instructions per call). Here:
//!
//! * **Reduction** `x = k·π/2 + r`, `|r| ≤ π/4`, exact for every f32 (Payne–Hanek in integers):
//!   `x = m·2^e` with a 24-bit integer `m`, and `x·2/π mod 4` is `m` times a 128-bit window
//!   of the bits of 2/π starting at bit `e − 1` (the bits before it only add multiples of 4),
//!   one wrapping `u128` product. The window's cut-off changes the result by less than
//!   2^-102, so `r` keeps 64 significant bits even next to a multiple of π/2; it is turned
//!   into a pair of f32 (`r = rh + rl`) times π/2 in double-f32 arithmetic (Dekker's exact
//!   product, no fused multiply-add).
//! * **Kernels** on `[−π/4, π/4]`: musl's minimax polynomials (`k_sinf`, `k_cosf`, error
//!   below 2^-37 relative), evaluated in f32 with the low part `rl` as a first-order
//!   correction.
//!
//! Error: at most 1 ulp against the exact value (`tests` sweeps the f32 range against f64).
//! NaN and ±∞ give NaN; `sin(−0) = −0`.

use super::exact::two_prod;

/// Bits 1..=256 of the binary fraction of 2/π (2/π = 0.A2F9836E… in hexadecimal), with a
/// zero word in front (bits −63..=0) and one behind, for [`window`].
const TWO_OVER_PI: [u64; 6] = [
    0,
    0xA2F9_836E_4E44_1529,
    0xFC27_57D1_F534_DDC0,
    0xDB62_9599_3C43_9041,
    0xFE51_63AB_DEBB_C561,
    0,
];

/// π/2 as the nearest f32 and the f32 nearest to the rest.
const PIO2_HI: f32 = 1.570_796_4; // 0x3FC90FDB
const PIO2_LO: f32 = -4.371_139e-8;

/// musl's `k_sinf` coefficients: `sin(x) ≈ x + x³·(S1 + x²·(S2 + x²·(S3 + x²·S4)))`.
const S1: f32 = -0.166_666_67;
const S2: f32 = 0.008_333_329;
const S3: f32 = -0.000_198_393_35;
const S4: f32 = 2.718_311_5e-6;
/// musl's `k_cosf` coefficients: `cos(x) ≈ 1 − x²/2 + x⁴·(C1 + x²·(C2 + x²·C3))`.
const C1: f32 = 0.041_666_623;
const C2: f32 = -0.001_388_676_4;
const C3: f32 = 2.439_045e-5;

/// `sin(x)`, within 1 ulp; NaN for NaN and ±∞.
#[inline]
pub fn sin(x: f32) -> f32 {
    let Some((n, rh, rl)) = reduce(x) else {
        return f32::NAN;
    };
    let s = match n {
        0 => sin_kernel(rh, rl),
        1 => cos_kernel(rh, rl),
        2 => -sin_kernel(rh, rl),
        _ => -cos_kernel(rh, rl),
    };
    if x.is_sign_negative() {
        -s
    } else {
        s
    }
}

/// `cos(x)`, within 1 ulp; NaN for NaN and ±∞.
#[inline]
pub fn cos(x: f32) -> f32 {
    let Some((n, rh, rl)) = reduce(x) else {
        return f32::NAN;
    };
    match n {
        0 => cos_kernel(rh, rl),
        1 => -sin_kernel(rh, rl),
        2 => -cos_kernel(rh, rl),
        _ => sin_kernel(rh, rl),
    }
}

/// `|x| = n·π/2 + rh + rl` with `n` in 0..4 and `|rh + rl| ≤ π/4`; `None` for NaN and ±∞.
#[inline(never)]
fn reduce(x: f32) -> Option<(u32, f32, f32)> {
    let bits = x.to_bits() & 0x7FFF_FFFF;
    if bits >= 0x7F80_0000 {
        return None;
    }
    let ax = f32::from_bits(bits);
    if ax <= core::f32::consts::FRAC_PI_4 {
        return Some((0, ax, 0.0));
    }
    // ax = m · 2^e, m < 2^24 (ax ≥ π/4 is normal).
    let biased = (bits >> 23) as i32;
    let m = (bits & 0x007F_FFFF) | 0x0080_0000;
    let e = biased - 150;
    // m · W = x·2/π · 2^126 mod 2^128, W = bits e−1 ..= e+126 of 2/π.
    let w = window(e - 1);
    let p = u128::from(m).wrapping_mul(w);
    // Nearest multiple: n = round(x·2/π) mod 4, f = the rest in [−2^125, 2^125).
    let n = (p.wrapping_add(1 << 125) >> 126) as u32;
    let f = p.wrapping_sub(u128::from(n) << 126) as i128;
    let neg = f < 0;
    let a = f.unsigned_abs();
    if a == 0 {
        return Some((n & 3, 0.0, 0.0));
    }
    // 64 significant bits of |f|: a ≈ top · 2^(64 − lz); r/(π/2) = a · 2^-126.
    let lz = a.leading_zeros() as i32;
    let top = ((a << lz) >> 64) as u64;
    let hi = (top >> 40) as u32; // 24 bits
    let lo = ((top >> 16) & 0x00FF_FFFF) as u32;
    let vh = hi as f32 * pow2(-22 - lz);
    let vl = lo as f32 * pow2(-46 - lz);
    // r = (vh + vl) · π/2 in double-f32.
    let (ph, pe) = two_prod(vh, PIO2_HI);
    let rl0 = pe + (vh * PIO2_LO + vl * PIO2_HI);
    let rh = ph + rl0;
    let rl = rl0 - (rh - ph);
    Some(if neg {
        (n & 3, -rh, -rl)
    } else {
        (n & 3, rh, rl)
    })
}

/// Bits `s ..= s + 127` of 2/π (bit 1 is the first after the binary point; bits ≤ 0 are 0)
/// as a 128-bit integer, bit `s` the most significant. `s` is in `−25 ..= 103` for the
/// arguments [`reduce`] passes.
#[inline(always)]
fn window(s: i32) -> u128 {
    // Position of bit s in TWO_OVER_PI read as one big-endian bit string.
    let g = (s + 63).clamp(0, 64 * 4) as usize;
    let word = |i: usize| TWO_OVER_PI.get(i).copied().unwrap_or(0);
    let at = |g: usize| -> u64 {
        let (i, off) = (g / 64, g % 64);
        if off == 0 {
            word(i)
        } else {
            (word(i) << off) | (word(i + 1) >> (64 - off))
        }
    };
    (u128::from(at(g)) << 64) | u128::from(at(g + 64))
}

/// `2^e` for `e` in the normal range, else 0 (the values [`reduce`] scales never leave it).
#[inline(always)]
fn pow2(e: i32) -> f32 {
    if (-126..=127).contains(&e) {
        f32::from_bits(((e + 127) as u32) << 23)
    } else {
        0.0
    }
}

/// `sin(rh + rl)` for `|rh + rl| ≤ π/4`, `|rl|` below half an ulp of `rh`.
#[inline(always)]
fn sin_kernel(rh: f32, rl: f32) -> f32 {
    let z = rh * rh;
    let poly = S1 + z * (S2 + z * (S3 + z * S4));
    // Exactly `rh + rh·z·poly` when rl = 0 (keeps sin(−0) = −0).
    if rl == 0.0 {
        return rh + rh * z * poly;
    }
    rh + (rh * z * poly + rl * (1.0 - 0.5 * z))
}

/// `cos(rh + rl)` for `|rh + rl| ≤ π/4`.
#[inline(always)]
fn cos_kernel(rh: f32, rl: f32) -> f32 {
    let z = rh * rh;
    let hz = 0.5 * z;
    let w = 1.0 - hz;
    w + (((1.0 - w) - hz) + (z * z * (C1 + z * (C2 + z * C3)) - rh * rl))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::exact::ulps;
    use super::*;

    /// Every 251st f32 from 0 to the largest finite, both signs: sin and cos within 1 ulp of
    /// f64 (whose own error, ~2^-53 relative after its exact reduction, is far below).
    /// Under Miri (scripts/miri.sh, ~10^5 times slower) every 251 * 4001st.
    #[test]
    fn sin_and_cos_are_within_one_ulp_over_the_f32_range() {
        let (stride, min_n) = if cfg!(miri) {
            (251 * 4001, 3_000)
        } else {
            (251, 15_000_000)
        };
        let (mut worst_s, mut worst_c) = (0f64, 0f64);
        let mut n = 0u64;
        let mut b = 0u32;
        while b < 0x7F80_0000 {
            for x in [f32::from_bits(b), -f32::from_bits(b)] {
                let xd = f64::from(x);
                worst_s = worst_s.max(ulps(sin(x), xd.sin()));
                worst_c = worst_c.max(ulps(cos(x), xd.cos()));
                n += 1;
            }
            b += stride;
        }
        assert!(n > min_n);
        std::println!("{n} arguments: sin {worst_s:.3} ulp, cos {worst_c:.3} ulp");
        assert!(worst_s <= 1.0, "sin: {worst_s} ulp");
        assert!(worst_c <= 1.0, "cos: {worst_c} ulp");
    }

    /// Arguments next to multiples of π/2, where the reduction cancels the most bits, and
    /// the f32 known to lie closest to one (Payne–Hanek test values).
    #[test]
    fn near_multiples_of_half_pi() {
        let mut worst = 0f64;
        // Every 499th multiple under Miri.
        for k in (1..200_000u32).step_by(if cfg!(miri) { 499 } else { 1 }) {
            let c = (f64::from(k) * core::f64::consts::FRAC_PI_2) as f32;
            let mut x = c;
            for _ in 0..4 {
                let xd = f64::from(x);
                worst = worst.max(ulps(sin(x), xd.sin()));
                worst = worst.max(ulps(cos(x), xd.cos()));
                x = f32::from_bits(x.to_bits() + 1);
            }
        }
        for x in [
            1.662_200_4e8f32,
            7.330_746e9,
            1.0e22,
            3.402_823_5e38,
            16_777_216.0,
        ] {
            let xd = f64::from(x);
            worst = worst.max(ulps(sin(x), xd.sin()));
            worst = worst.max(ulps(cos(x), xd.cos()));
        }
        assert!(worst <= 1.0, "{worst} ulp");
    }

    #[test]
    fn specials() {
        assert!(sin(f32::NAN).is_nan() && cos(f32::NAN).is_nan());
        assert!(sin(f32::INFINITY).is_nan() && cos(f32::NEG_INFINITY).is_nan());
        assert_eq!(sin(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(sin(0.0).to_bits(), 0);
        assert_eq!(cos(0.0), 1.0);
        assert_eq!(cos(-0.0), 1.0);
        let tiny = f32::from_bits(1);
        assert_eq!(sin(tiny), tiny);
        assert_eq!(sin(-tiny), -tiny);
        assert_eq!(cos(tiny), 1.0);
    }
}
