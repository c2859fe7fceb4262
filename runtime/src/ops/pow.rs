//! ONNX `Pow` (`x^y`, C's `powf`) in f32 and integer arithmetic only: the same bits on every
//! target, within 1 ulp, and branch-free, so loops over it vectorize on hosts.
//!
//! libm's `powf` (musl's, used before) evaluates in f64 through tables: on the Cortex-M4F,
//! whose FPU is single precision, that is software double arithmetic (~200 instructions a
//! call), and on hosts a scalar call with branches per element. Here `|x|^y = 2^(y·log2|x|)`
//! in double-f32 arithmetic ([`super::exact`]):
//!
//! * **log2|x|** as a pair `lh + ll` (relative error below 2^-40): `|x| = 2^k·m`, `m` in
//!   [√2/2, √2), `m` near the centre `c` of one of 16 intervals (a table of `c` and `log2 c`
//!   as a pair; `c = 1` for the interval around 1, so `log2 x` keeps its relative accuracy
//!   next to 1), `log2(m/c) = (2/ln 2)·atanh(s)`, `s = (m − c)/(m + c)` (`|s| < 2^-5.7`) with
//!   `2s` in double-f32 and the tail `(2/3)s³ + (2/5)s⁵ + (2/7)s⁷` in f32.
//! * **y·log2|x|** as an exact product pair `ph + pl`.
//! * **2^(ph + pl)**: `ph = n + f` (`n` integer, `|f| ≤ 1/2`), `u = (f + pl)·ln 2` as a pair,
//!   `e^u = 1 + u + u²/2 + … + u⁸/8!` with `1 + u_hi` exact, times `2^n` in two normal powers
//!   of two (one rounding in the subnormal range, as in [`super::exp`]).
//!
//! Within 1 ulp of the exact value: `tests` measures it against f64 over sweeps of both
//! arguments (worst 0.76 ulp). Special values
//! follow C99 / IEEE 754 `pow` (what ONNX Runtime and PyTorch return): `x^0 = 1` and `1^y = 1`
//! even for NaN, `(−1)^±∞ = 1`, a negative `x` to a non-integer finite `y` is NaN, odd integer
//! exponents keep the sign of `x` (and of zero).

use super::exact::{fast_two_sum, two_prod, two_sum};
use super::{abs, exp_scale};

/// Centres `c` of the 16 intervals of `m` (9 significant bits; 1 for the interval around 1).
const CENTRE: [f32; 16] = [
    0.722_656_25,
    0.753_906_25,
    0.785_156_25,
    0.816_406_25,
    0.847_656_25,
    0.878_906_25,
    0.910_156_25,
    0.941_406_25,
    0.972_656_25,
    1.0,
    1.070_312_5,
    1.132_812_5,
    1.195_312_5,
    1.257_812_5,
    1.320_312_5,
    1.382_812_5,
];

/// `log2(CENTRE[i])` rounded to f32.
const LOG2_HI: [f32; 16] = [
    f32::from_bits(0xbeef_eec5),
    f32::from_bits(0xbed0_a979),
    f32::from_bits(0xbeb2_a95a),
    f32::from_bits(0xbe95_d506),
    f32::from_bits(0xbe74_2bea),
    f32::from_bits(0xbe3e_b025),
    f32::from_bits(0xbe0b_12ca),
    f32::from_bits(0xbdb2_6713),
    f32::from_bits(0xbd23_d504),
    0.0,
    f32::from_bits(0x3dc8_c50b),
    f32::from_bits(0x3e38_3a17),
    f32::from_bits(0x3e83_c857),
    f32::from_bits(0x3ea9_6df0),
    f32::from_bits(0x3ecd_4012),
    f32::from_bits(0x3eef_69ff),
];

/// `log2(CENTRE[i]) − LOG2_HI[i]` rounded to f32.
const LOG2_LO: [f32; 16] = [
    f32::from_bits(0x3129_e475),
    f32::from_bits(0x323d_67e5),
    f32::from_bits(0xb219_8627),
    f32::from_bits(0xb152_f87b),
    f32::from_bits(0x30b2_7b26),
    f32::from_bits(0x3193_044b),
    f32::from_bits(0x31e7_9259),
    f32::from_bits(0xb140_6715),
    f32::from_bits(0x30ca_88fb),
    0.0,
    f32::from_bits(0x3164_6336),
    f32::from_bits(0xb1b1_0fd8),
    f32::from_bits(0xb189_f9ff),
    f32::from_bits(0xb16c_da53),
    f32::from_bits(0xb1dc_3b9a),
    f32::from_bits(0xb23b_dc9b),
];

/// 2/ln 2 as the nearest f32 and the f32 nearest to the rest.
const K_HI: f32 = f32::from_bits(0x4038_aa3b);
const K_LO: f32 = f32::from_bits(0x3325_7060);
/// ln 2 as the nearest f32 and the f32 nearest to the rest.
const LN2_HI: f32 = f32::from_bits(0x3f31_7218);
const LN2_LO: f32 = f32::from_bits(0xb102_e308);
/// The exponent bits of √2/2: `m` is reduced into [√2/2, √2).
const SQRT_HALF_BITS: i32 = 0x3f35_04f3;
/// `|y·log2|x||` from which the result is 0 or ∞ whatever the low part.
const P_LIMIT: f32 = 160.0;

/// `x^y` (C's `powf`), within 1 ulp; see the module docs.
#[inline(always)]
pub(crate) fn pow(x: f32, y: f32) -> f32 {
    let ax = abs(x);
    let (lh, ll) = log2_pair(ax);
    let (ph, pe) = two_prod(y, lh);
    // The low part only where it is exact and matters: beyond P_LIMIT (∞ and NaN products
    // included) and for log2|x| = 0 (where the split of a huge y may overflow) it is 0.
    let keep = abs(ph) < P_LIMIT && lh != 0.0;
    let pl = if keep { pe + y * ll } else { 0.0 };
    let r = exp2_pair(ph, pl);
    // Signs and the special cases, as selects.
    let ay = abs(y);
    let y_int = ay >= 8_388_608.0 || round_half_even(ay) == ay; // ±∞ counts as even
    let y_odd = ay < 16_777_216.0 && y_int && (ay as i32) & 1 == 1;
    let neg = x.is_sign_negative();
    let r = if neg && y_odd { -r } else { r };
    let r = if x < 0.0 && x > f32::NEG_INFINITY && !y_int {
        f32::NAN
    } else {
        r
    };
    let r = if ax == 1.0 && ay == f32::INFINITY {
        1.0
    } else {
        r
    };
    if x == 1.0 || y == 0.0 {
        1.0
    } else {
        r
    }
}

/// `a` rounded to the nearest integer (ties to even) for `0 <= a < 2^23`; NaN stays NaN.
#[inline(always)]
fn round_half_even(a: f32) -> f32 {
    const MAGIC: f32 = 8_388_608.0; // 2^23
    (a + MAGIC) - MAGIC
}

/// `log2(ax) = hi + lo` for `ax >= 0` (or NaN), relative error below 2^-40; `log2 0 = −∞`,
/// `log2 ∞ = ∞` (low part 0), NaN stays NaN.
#[inline(always)]
fn log2_pair(ax: f32) -> (f32, f32) {
    // Subnormals scaled into the normal range first.
    let sub = ax < f32::MIN_POSITIVE;
    let xs = if sub { ax * 16_777_216.0 } else { ax }; // 2^24
    let k0: i32 = if sub { -24 } else { 0 };
    let ix = (xs.to_bits() as i32).wrapping_sub(SQRT_HALF_BITS);
    let e = ix >> 23;
    let k = e.wrapping_add(k0) as f32;
    let m = f32::from_bits((xs.to_bits() as i32).wrapping_sub(e.wrapping_shl(23)) as u32);
    let i = ((ix >> 19) & 15) as usize;
    // (`i < 16`: the lookups never miss.)
    let at = |t: &[f32; 16]| t.get(i).copied().unwrap_or(0.0);
    let (c, lch, lcl) = (at(&CENTRE), at(&LOG2_HI), at(&LOG2_LO));
    // s = (m − c)/(m + c) as sh + sl: m − c is exact (Sterbenz), m + c a pair.
    let num = m - c;
    let (dh, dl) = two_sum(m, c);
    let sh = num / dh;
    let (p, pe) = two_prod(sh, dh);
    let sl = (((num - p) - pe) - sh * dl) / dh;
    // log2(m/c) = K·(s + s³/3 + s⁵/5 + s⁷/7), K = 2/ln 2: K·s as a pair, the rest in f32.
    let z = sh * sh;
    let tail = sh * z * (1.0 / 3.0 + z * (1.0 / 5.0 + z * (1.0 / 7.0)));
    let (qh, qe) = two_prod(sh, K_HI);
    let ql = qe + ((sh * K_LO + sl * K_HI) + tail * K_HI);
    // k + log2 c + log2(m/c), summed as pairs.
    let (a, ae) = two_sum(k, lch);
    let (b, be) = two_sum(a, qh);
    let lo = ((be + ae) + lcl) + ql;
    let (hi, lo) = fast_two_sum(b, lo);
    let hi = if ax == 0.0 { f32::NEG_INFINITY } else { hi };
    let hi = if ax == f32::INFINITY { ax } else { hi };
    let hi = if ax.is_nan() { ax } else { hi };
    let lo = if ax == 0.0 || ax == f32::INFINITY || ax.is_nan() {
        0.0
    } else {
        lo
    };
    (hi, lo)
}

/// `2^(ph + pl)` for `|pl|` at most an ulp of `ph` (0 outside ±[`P_LIMIT`]): overflows to
/// `+∞`, is `+0` far below the subnormal range; NaN stays NaN.
#[inline(always)]
fn exp2_pair(ph: f32, pl: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let ph = if ph > P_LIMIT { P_LIMIT } else { ph };
    let ph = if ph < -P_LIMIT { -P_LIMIT } else { ph };
    let shifted = ph + MAGIC;
    let n = shifted - MAGIC;
    let ni = (shifted.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let f = ph - n; // exact, |f| <= 1/2
                    // u = (f + pl)·ln 2 = uh + ul.
    let (uh, ue) = two_prod(f, LN2_HI);
    let ul = ue + (f * LN2_LO + pl * LN2_HI);
    // e^u − 1 − uh = poly + ul·e^uh, poly = e^uh − 1 − uh = uh²/2 + uh³/6 + … (degree 8:
    // truncation < 2^-31); |ul| reaches 2^-17 (an ulp of |ph| near P_LIMIT), so its factor
    // e^uh is taken whole (to f32 accuracy).
    let poly = uh
        * uh
        * (0.5
            + uh * (1.0 / 6.0
                + uh * (1.0 / 24.0
                    + uh * (1.0 / 120.0
                        + uh * (1.0 / 720.0 + uh * (1.0 / 5040.0 + uh * (1.0 / 40320.0)))))));
    let tail = poly + ul * ((1.0 + uh) + poly);
    let (sh, sl) = fast_two_sum(1.0, uh);
    let e = sh + (sl + tail);
    exp_scale(e, ni)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::exact::ulps;
    use super::*;

    /// The table is `log2 c` to the last bit of the pair (checked against f64's `log2`).
    #[test]
    fn table_is_log2_of_the_centres() {
        for i in 0..16 {
            let l = f64::from(CENTRE[i]).log2();
            assert_eq!(LOG2_HI[i], l as f32, "{i}");
            assert_eq!(LOG2_LO[i], (l - f64::from(LOG2_HI[i])) as f32, "{i}");
        }
        let k = 2.0 / core::f64::consts::LN_2;
        assert_eq!((K_HI, K_LO), (k as f32, (k - f64::from(K_HI)) as f32));
        let l = core::f64::consts::LN_2;
        assert_eq!((LN2_HI, LN2_LO), (l as f32, (l - f64::from(LN2_HI)) as f32));
    }

    fn check(x: f32, y: f32, worst: &mut f64) {
        let got = pow(x, y);
        let exact = f64::from(x).powf(f64::from(y));
        if exact.is_nan() {
            assert!(got.is_nan(), "pow({x:e}, {y:e}) = {got:e}, want NaN");
            return;
        }
        let u = ulps(got, exact);
        assert!(
            u <= 1.0,
            "pow({x:e}, {y:e}) = {got:e} ({u} ulp), exact {exact:e}"
        );
        *worst = worst.max(u);
    }

    /// Every 127th positive f32 as `x` against exponents of every scale, and exponents on a
    /// sweep against bases near 1 (where `log2 x` is small and `y` large): within 1 ulp of
    /// f64's `powf` (whose error, ~2^-52 relative, is far below).
    #[test]
    fn within_one_ulp() {
        let stride = if cfg!(miri) { 127 * 50_021 } else { 127 };
        let ys = [
            2.0f32,
            0.5,
            -0.75,
            3.0,
            -1.0,
            1.0 / 3.0,
            0.123_456_79,
            -7.25,
            31.0,
            100.5,
            -150.0,
        ];
        let mut worst = 0f64;
        let mut b = 1u32;
        while b < 0x7F80_0000 {
            let x = f32::from_bits(b);
            for y in ys {
                check(x, y, &mut worst);
            }
            b += stride;
        }
        // Bases next to 1 with large exponents: y·log2 x up to ±150.
        let step = if cfg!(miri) { 977 } else { 1 };
        for d in (1..20_000u32).step_by(step) {
            for x in [
                f32::from_bits(0x3F80_0000 + d),
                f32::from_bits(0x3F80_0000 - d),
            ] {
                let l = f64::from(x).log2().abs();
                for frac in [0.1, 0.5, 0.99, 1.0] {
                    let y = (frac * 140.0 / l) as f32;
                    check(x, y, &mut worst);
                    check(x, -y, &mut worst);
                }
            }
        }
        // Negative bases with integer exponents (the sign follows the parity).
        for x in [-0.3f32, -1.5, -7.0, -1e-20, -3e12] {
            for y in [2.0f32, 3.0, -1.0, -2.0, 5.0, 31.0, -3.0] {
                check(x, y, &mut worst);
            }
        }
        // Results near overflow and in the subnormal range.
        for d in (0..4_000u32).step_by(step) {
            let y = 127.0 + d as f32 / 4000.0;
            check(2.0, y, &mut worst);
            check(0.5, y + 22.0, &mut worst);
            check(1.999_999_9, y * 0.5, &mut worst);
        }
        std::println!("pow: worst {worst:.3} ulp");
    }

    /// C99's special cases (F.9.4.4), what ONNX Runtime's `std::pow` returns.
    #[test]
    fn specials() {
        let (inf, nan) = (f32::INFINITY, f32::NAN);
        let is = |got: f32, want: f32| {
            if want.is_nan() {
                got.is_nan()
            } else {
                got.to_bits() == want.to_bits()
            }
        };
        let cases: &[(f32, f32, f32)] = &[
            (nan, 0.0, 1.0),
            (nan, -0.0, 1.0),
            (1.0, nan, 1.0),
            (1.0, inf, 1.0),
            (-1.0, inf, 1.0),
            (-1.0, -inf, 1.0),
            (-1.0, nan, nan),
            (nan, 1.0, nan),
            (2.0, nan, nan),
            (0.0, -3.0, inf),
            (-0.0, -3.0, -inf),
            (-0.0, -2.0, inf),
            (-0.0, -0.5, inf),
            (0.0, 3.0, 0.0),
            (-0.0, 3.0, -0.0),
            (-0.0, 2.0, 0.0),
            (-0.0, 0.5, 0.0),
            (0.5, -inf, inf),
            (2.0, -inf, 0.0),
            (0.5, inf, 0.0),
            (2.0, inf, inf),
            (-inf, -3.0, -0.0),
            (-inf, -2.0, 0.0),
            (-inf, -0.5, 0.0),
            (-inf, 3.0, -inf),
            (-inf, 2.0, inf),
            (-inf, 0.5, inf),
            (inf, -1.0, 0.0),
            (inf, 0.5, inf),
            (-2.0, 0.5, nan),
            (-2.0, 3.0, -8.0),
            (-2.0, 2.0, 4.0),
            (-2.0, -1.0, -0.5),
            (-1.0, 16_777_217.0, 1.0),
            (-1.0, 1e30, 1.0),
            (1.000_000_1, 1e30, inf),
            (0.999_999_9, 1e30, 0.0),
            (-1.000_000_1, 1e30, inf),
            (3.0, 1e-40, 1.0),
            (f32::from_bits(1), 0.5, f32::from_bits(0x1a35_04f3)),
            (f32::from_bits(1), -1.0, inf),
            (10.0, 39.0, inf),
            (2.0, 10.0, 1024.0),
            (2.0, -149.0, f32::from_bits(1)),
            (2.0, -150.0, 0.0),
            (0.5, 149.0, f32::from_bits(1)),
            (2.0, 127.0, f32::from_bits(0x7f00_0000)),
            (2.0, 128.0, inf),
        ];
        for &(x, y, want) in cases {
            let got = pow(x, y);
            assert!(is(got, want), "pow({x:e}, {y:e}) = {got:e}, want {want:e}");
        }
    }
}
