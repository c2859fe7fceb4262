//! `erf` and `erfc` in f32 from IEEE basic operations and flowrt's own [`exp`], so every
//! target computes the same bits and host loops over them vectorize (libm's `erff` /
//! `erfcf`, used before, branch per element and call `expf`).
//!
//! The approximations are Sun's (fdlibm `s_erff.c`, as in musl and the `libm` crate), region
//! by region on `a = |x|`:
//! - `a < 0.84375`: `erf(x) = x + x · P(x²)/Q(x²)`;
//! - `0.84375 <= a < 1.25`: `erfc(a) = 1 − erx − P(a − 1)/Q(a − 1)`;
//! - `1.25 <= a < 28`: `erfc(a) = e^(−z² − 0.5625) · e^((z − a)(z + a) + R(1/a²)/S(1/a²)) / a`
//!   with `z` = `a` cut to 11 significant bits (so `z²` and `−z² − 0.5625` are exact), `R/S`
//!   one of two rational functions split at `a = 1/0.35`;
//! - `a >= 28`: `erfc(a) = 0` (the value is below the smallest subnormal).
//!
//! Each function has two forms with the same bits (`tests`): the branch-free one evaluates
//! every region and selects (loops vectorize), the lazy one ([`SCALAR_MATH`] cores: the
//! microcontrollers) evaluates only the region it returns.

use super::{abs, copysign, exp, SCALAR_MATH};

const ERX: f32 = f32::from_bits(0x3f58_560b); // 8.4506291151e-01
const EFX8: f32 = f32::from_bits(0x3f83_75d4); // 1.0270333290e+00
const PP: [f32; 5] = [
    f32::from_bits(0x3e03_75d4),
    f32::from_bits(0xbea6_6beb),
    f32::from_bits(0xbce9_528f),
    f32::from_bits(0xbbbd_1489),
    f32::from_bits(0xb7c7_56b1),
];
const QQ: [f32; 5] = [
    f32::from_bits(0x3ecb_bbce),
    f32::from_bits(0x3d85_2a63),
    f32::from_bits(0x3ba6_8116),
    f32::from_bits(0x390a_ee49),
    f32::from_bits(0xb684_e21a),
];
const PA: [f32; 7] = [
    f32::from_bits(0xbb1a_cdc6),
    f32::from_bits(0x3ed4_6805),
    f32::from_bits(0xbebe_9208),
    f32::from_bits(0x3ea2_fe54),
    f32::from_bits(0xbde3_1cc2),
    f32::from_bits(0x3d11_51b3),
    f32::from_bits(0xbb0d_f9c0),
];
const QA: [f32; 6] = [
    f32::from_bits(0x3dd9_f331),
    f32::from_bits(0x3f0a_5785),
    f32::from_bits(0x3d93_1ae7),
    f32::from_bits(0x3e01_3307),
    f32::from_bits(0x3c5f_6e13),
    f32::from_bits(0x3c44_5aa3),
];
const RA: [f32; 8] = [
    f32::from_bits(0xbc21_a093),
    f32::from_bits(0xbf31_a0b7),
    f32::from_bits(0xc128_f022),
    f32::from_bits(0xc279_8057),
    f32::from_bits(0xc322_658c),
    f32::from_bits(0xc338_9ae7),
    f32::from_bits(0xc2a2_932b),
    f32::from_bits(0xc11d_077e),
];
const SA: [f32; 8] = [
    f32::from_bits(0x419d_35ce),
    f32::from_bits(0x4309_a863),
    f32::from_bits(0x43d9_486f),
    f32::from_bits(0x4421_58c9),
    f32::from_bits(0x43d6_810b),
    f32::from_bits(0x42d9_451f),
    f32::from_bits(0x40d2_3f7c),
    f32::from_bits(0xbd77_7f97),
];
const RB: [f32; 7] = [
    f32::from_bits(0xbc21_a092),
    f32::from_bits(0xbf4c_9dd4),
    f32::from_bits(0xc18e_104b),
    f32::from_bits(0xc320_a2ea),
    f32::from_bits(0xc41f_6441),
    f32::from_bits(0xc480_230b),
    f32::from_bits(0xc3f1_c275),
];
const SB: [f32; 7] = [
    f32::from_bits(0x41f2_b459),
    f32::from_bits(0x43a2_e571),
    f32::from_bits(0x44c0_1759),
    f32::from_bits(0x4547_fdbb),
    f32::from_bits(0x451f_90ce),
    f32::from_bits(0x43ed_43a7),
    f32::from_bits(0xc1b3_8712),
];

/// Where the small-argument form ends (0x3f58_0000).
const SMALL: f32 = 0.843_75;
/// Where the `a − 1` form ends and the tail form begins (0x3fa0_0000).
const MID: f32 = 1.25;
/// Where the tail's first rational function ends (`1/0.35`, 0x4036_db6d).
const TAIL_SPLIT: f32 = f32::from_bits(0x4036_db6d);
/// From here on `erfc(a)` is 0 in f32.
const ZERO_FROM: f32 = 28.0;

/// `c[0] + s·(c[1] + s·(...))` (Horner, highest coefficient innermost).
#[inline(always)]
fn horner<const N: usize>(c: &[f32; N], s: f32) -> f32 {
    let (last, rest) = match c.split_last() {
        Some(split) => split,
        None => return 0.0,
    };
    rest.iter().rev().fold(*last, |acc, &k| k + s * acc)
}

/// `1 + s·(c[0] + s·(c[1] + ...))`: the denominators, whose constant term is 1.
#[inline(always)]
fn one_plus<const N: usize>(c: &[f32; N], s: f32) -> f32 {
    1.0 + s * horner(c, s)
}

/// `$then` if `$cond`, else `$other`: both evaluated and selected (`$lazy` false: loops
/// vectorize), or only the one returned (`$lazy` true). The same bits either way. A macro,
/// not a function of two closures: LLVM kept a large closure out of line, one call per
/// element, which stopped the loops vectorizing.
macro_rules! pick {
    ($lazy:expr, $cond:expr, $then:expr, $other:expr) => {{
        if $lazy {
            if $cond {
                $then
            } else {
                $other
            }
        } else {
            let (t, o) = ($then, $other);
            if $cond {
                t
            } else {
                o
            }
        }
    }};
}

/// `P(x²)/Q(x²)` of the small-argument form: `erf(x) = x + x · small_ratio(x)` for
/// `|x| < 0.84375`.
#[inline(always)]
fn small_ratio(x: f32) -> f32 {
    let z = x * x;
    horner(&PP, z) / one_plus(&QQ, z)
}

/// `erfc(a)` for `a = |x| >= 0.84375` (or NaN): the `a − 1` form below 1.25, the tail form
/// below 28, 0 from there (`+∞` included).
#[inline(always)]
fn erfc_large<const LAZY: bool>(a: f32) -> f32 {
    pick!(LAZY, a < MID, erfc_mid(a), erfc_tail::<LAZY>(a))
}

/// `erfc(a)` for `0.84375 <= a < 1.25`: `1 − erx − P(a − 1)/Q(a − 1)`.
#[inline(always)]
fn erfc_mid(a: f32) -> f32 {
    let s = a - 1.0;
    1.0 - ERX - horner(&PA, s) / one_plus(&QA, s)
}

/// `erfc(a)` for `a >= 1.25` (module docs), 0 from 28 on.
#[inline(always)]
fn erfc_tail<const LAZY: bool>(a: f32) -> f32 {
    let s = 1.0 / (a * a);
    let ratio = pick!(
        LAZY,
        a < TAIL_SPLIT,
        horner(&RA, s) / one_plus(&SA, s),
        horner(&RB, s) / one_plus(&SB, s)
    );
    let z = f32::from_bits(a.to_bits() & 0xffff_e000);
    let v = exp(-z * z - 0.5625) * exp((z - a) * (z + a) + ratio) / a;
    if a >= ZERO_FROM {
        0.0
    } else {
        v
    }
}

/// The error function, within 1 ulp (module docs; 0.90 worst measured against f64 in
/// `tests`):
/// `erf(±0) = ±0`, `erf(±∞) = ±1`, NaN stays NaN. Branch-free where loops vectorize.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    erf_as::<SCALAR_MATH>(x)
}

/// [`erf`] lazy or branch-free.
#[inline(always)]
pub(crate) fn erf_as<const LAZY: bool>(x: f32) -> f32 {
    let a = abs(x);
    pick!(
        LAZY,
        a < SMALL,
        {
            // Below 2^-28, x · (1 + efx) as fdlibm writes it (no underflow of x · ratio).
            let tiny = 0.125 * (8.0 * x + EFX8 * x);
            let v = x + x * small_ratio(x);
            if a < f32::from_bits(0x3180_0000) {
                tiny
            } else {
                v
            }
        },
        copysign(1.0 - erfc_large::<LAZY>(a), x)
    )
}

/// The complementary error function `1 − erf(x)` without cancellation (module docs), within
/// 3 ulp where the result is normal (2.83 worst measured, as libm's `erfcf`: the tail's two
/// `exp` roundings): `erfc(−∞) = 2`, `erfc(+∞) = 0`, NaN stays NaN. ONNX has no `Erfc`:
/// test-only, the reference that [`gelu_erf`]'s negative half is checked against.
#[cfg(test)]
#[inline(always)]
pub(crate) fn erfc(x: f32) -> f32 {
    erfc_as::<SCALAR_MATH>(x)
}

/// [`erfc`] lazy or branch-free.
#[cfg(test)]
#[inline(always)]
pub(crate) fn erfc_as<const LAZY: bool>(x: f32) -> f32 {
    let a = abs(x);
    pick!(
        LAZY,
        a < SMALL,
        {
            let y = small_ratio(x);
            let near = 1.0 - (x + x * y);
            let far = 0.5 - (x - 0.5 + x * y);
            if x < 0.25 {
                near
            } else {
                far
            }
        },
        {
            let e = erfc_large::<LAZY>(a);
            if x < 0.0 {
                2.0 - e
            } else {
                e
            }
        }
    )
}

/// ONNX `Gelu` (exact form): `0.5 x (1 + erf(x / √2))` for `x >= 0`, `0.5 x erfc(−x / √2)`
/// below (no cancellation); the bits of [`erf`] and [`erfc`] composed so, from one
/// evaluation of the shared parts. NaN stays NaN. Branch-free where loops vectorize.
#[inline(always)]
pub(crate) fn gelu_erf(x: f32) -> f32 {
    gelu_erf_as::<SCALAR_MATH>(x)
}

/// [`gelu_erf`] lazy or branch-free.
#[inline(always)]
pub(crate) fn gelu_erf_as<const LAZY: bool>(x: f32) -> f32 {
    let a = abs(x / core::f32::consts::SQRT_2);
    let positive = x >= 0.0;
    // `1 + erf(a)` for x >= 0, `erfc(a)` below. (Below 2^-28, `1 + erf(a)` is 1 whether or
    // not erf takes its tiny-argument form.)
    let factor = pick!(
        LAZY,
        a < SMALL,
        {
            let y = small_ratio(a);
            let plus = 1.0 + (a + a * y);
            let near = 1.0 - (a + a * y);
            let far = 0.5 - (a - 0.5 + a * y);
            if positive {
                plus
            } else if a < 0.25 {
                near
            } else {
                far
            }
        },
        {
            let e = erfc_large::<LAZY>(a);
            if positive {
                1.0 + (1.0 - e)
            } else {
                e
            }
        }
    );
    0.5 * x * factor
}

#[cfg(test)]
mod tests {
    use super::super::exact::ulps;
    use super::*;

    /// Every `stride`-th f32 bit pattern (both signs), plus the region boundaries and their
    /// neighbours.
    fn sweep(stride: usize) -> impl Iterator<Item = f32> {
        let edges = [
            SMALL, MID, TAIL_SPLIT, 6.0, ZERO_FROM, 0.25, 2e-9, 1e-30, 1e-40,
        ];
        let near = edges.into_iter().flat_map(|e| {
            let b = e.to_bits();
            [b - 1, b, b + 1].map(|b| [f32::from_bits(b), -f32::from_bits(b)])
        });
        (0..=u32::MAX)
            .step_by(stride)
            .map(f32::from_bits)
            .chain(near.flatten())
    }

    #[test]
    fn erf_is_within_one_ulp() {
        let stride = if cfg!(miri) { 97 * 1009 } else { 97 };
        let mut worst = 0f64;
        for x in sweep(stride).filter(|x| !x.is_nan()) {
            let u = ulps(erf(x), libm::erf(f64::from(x)));
            assert!(u <= 1.0, "erf({x:e}) = {:e}: {u} ulp", erf(x));
            worst = worst.max(u);
        }
        std::println!("erf: worst {worst:.3} ulp");
    }

    #[test]
    fn erfc_is_within_three_ulp_where_normal() {
        let stride = if cfg!(miri) { 97 * 1009 } else { 97 };
        let mut worst = 0f64;
        for x in sweep(stride).filter(|x| !x.is_nan()) {
            let exact = libm::erfc(f64::from(x));
            let got = erfc(x);
            if exact < f64::from(f32::MIN_POSITIVE) {
                // Subnormal results: within a few subnormal steps of the exact value.
                assert!(
                    (f64::from(got) - exact).abs() <= 4.0 * 1.4e-45,
                    "erfc({x:e})"
                );
                continue;
            }
            let u = ulps(got, exact);
            assert!(u <= 3.0, "erfc({x:e}) = {got:e}: {u} ulp");
            worst = worst.max(u);
        }
        std::println!("erfc: worst {worst:.3} ulp");
    }

    #[test]
    fn special_values() {
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits();
        assert!(same(erf(0.0), 0.0) && same(erf(-0.0), -0.0));
        assert!(same(erf(f32::INFINITY), 1.0) && same(erf(f32::NEG_INFINITY), -1.0));
        assert!(same(erfc(f32::INFINITY), 0.0) && same(erfc(f32::NEG_INFINITY), 2.0));
        assert!(same(erfc(0.0), 1.0) && same(erfc(-0.0), 1.0));
        assert!(erf(f32::NAN).is_nan() && erfc(f32::NAN).is_nan());
        assert!(erf(-f32::NAN).is_nan() && erfc(-f32::NAN).is_nan());
        assert!(same(erf(1e-40), libm::erf(1e-40f32 as f64) as f32));
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erfc(-10.0), 2.0);
        assert_eq!(erfc(30.0), 0.0);
    }

    #[test]
    fn gelu_is_erf_and_erfc_composed() {
        let stride = if cfg!(miri) { 4_194_301 } else { 61 };
        for x in sweep(stride).chain([f32::INFINITY, f32::NEG_INFINITY]) {
            let z = x / core::f32::consts::SQRT_2;
            let want = if x >= 0.0 {
                0.5 * x * (1.0 + erf(z))
            } else {
                0.5 * x * erfc(-z)
            };
            let (got, lazy) = (gelu_erf_as::<false>(x), gelu_erf_as::<true>(x));
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            assert!(
                same(got, want) && same(lazy, want),
                "gelu({x}) = {got}, want {want}"
            );
        }
        assert!(gelu_erf(f32::NAN).is_nan());
    }

    #[test]
    fn lazy_and_branch_free_forms_agree_bitwise() {
        let stride = if cfg!(miri) { 4_194_301 } else { 61 };
        for x in sweep(stride).chain([f32::NAN, f32::INFINITY, f32::NEG_INFINITY]) {
            let (l, e) = (erf_as::<true>(x), erf_as::<false>(x));
            assert!(
                l.to_bits() == e.to_bits() || (l.is_nan() && e.is_nan()),
                "erf({x})"
            );
            let (l, e) = (erfc_as::<true>(x), erfc_as::<false>(x));
            assert!(
                l.to_bits() == e.to_bits() || (l.is_nan() && e.is_nan()),
                "erfc({x})"
            );
        }
    }
}
