//! Error-free transformations of f32 arithmetic (Dekker, Knuth): a sum or product returned as
//! its rounded value and the exact rounding error, from IEEE basic operations only (no fused
//! multiply-add), so every target computes the same pair. The double-f32 arithmetic of
//! [`super::trig`] and [`super::pow`] is built from them.
//!
//! [`mul_add`] is the one fused operation: the multiply-accumulate of every matrix product
//! (Dense, MatMul, Conv, ConvTranspose), `a·b + c` rounded once, which every target computes
//! exactly (x86 `vfmadd`, Arm `vfma.f32`, a correctly rounded software `fmaf` elsewhere).

/// `a·b = p + e` exactly (Dekker with Veltkamp's split; no fused multiply-add), for products
/// that neither overflow nor underflow and `|a|, |b| < 2^115` (the split scales by 4097).
#[inline(always)]
pub(super) fn two_prod(a: f32, b: f32) -> (f32, f32) {
    let p = a * b;
    let (ah, al) = split(a);
    let (bh, bl) = split(b);
    let e = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
    (p, e)
}

/// `a = h + l` with `h` of at most 12 significant bits.
#[inline(always)]
pub(super) fn split(a: f32) -> (f32, f32) {
    let c = 4097.0 * a;
    let h = c - (c - a);
    (h, a - h)
}

/// `a + b = s + e` exactly (Knuth's two-sum: no condition on the magnitudes).
#[inline(always)]
pub(super) fn two_sum(a: f32, b: f32) -> (f32, f32) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

/// `a + b = s + e` exactly when `|a| >= |b|` or `a` is 0 (Dekker's fast two-sum).
#[inline(always)]
pub(super) fn fast_two_sum(a: f32, b: f32) -> (f32, f32) {
    let s = a + b;
    (s, b - (s - a))
}

/// `a·b + c` rounded once (IEEE 754 `fusedMultiplyAdd`), the same bits on every target:
/// std's `f32::mul_add` on hosts (an `fmadd` instruction where the caller is compiled with
/// FMA — the x86 kernels enable it — else the C library's correctly rounded `fmaf`), one
/// `vfma.f32` on Arm hard-float cores without std (Cortex-M4F/M7/M33: VFPv4 and later), and
/// `libm`'s correctly rounded `fmaf` elsewhere (riscv32imac, thumbv6m: software).
#[inline(always)]
pub(crate) fn mul_add(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(feature = "std")]
    {
        a.mul_add(b, c)
    }
    #[cfg(all(not(feature = "std"), target_arch = "arm", target_abi = "eabihf"))]
    {
        // Through core registers: Rust's `sreg` operands need double-precision VFP, which
        // single-precision FPUs (Cortex-M4F) lack. The hot loops (Dense, Conv) are
        // `ops::arm`'s assembly tiles, which keep their operands in FPU registers.
        let mut acc = c.to_bits();
        // SAFETY: register-only FPU arithmetic (`acc += a · b`, rounded once).
        unsafe {
            core::arch::asm!(
                "vmov s0, {a}",
                "vmov s1, {b}",
                "vmov s2, {acc}",
                "vfma.f32 s2, s0, s1",
                "vmov {acc}, s2",
                acc = inout(reg) acc,
                a = in(reg) a.to_bits(),
                b = in(reg) b.to_bits(),
                out("s0") _,
                out("s1") _,
                out("s2") _,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        f32::from_bits(acc)
    }
    #[cfg(all(
        not(feature = "std"),
        not(all(target_arch = "arm", target_abi = "eabihf"))
    ))]
    {
        libm::fmaf(a, b, c)
    }
}

/// `|got − exact|` in ulps of the f32 nearest the exact value (the subnormal ulp below
/// 2^-126; 0 or infinity where the nearest f32 is infinite), for the accuracy tests.
#[cfg(test)]
pub(super) fn ulps(got: f32, exact: f64) -> f64 {
    let e32 = exact as f32;
    if e32.is_infinite() {
        return if got == e32 { 0.0 } else { f64::INFINITY };
    }
    let ulp = if e32 == 0.0 {
        f64::from(f32::from_bits(1))
    } else {
        let b = e32.abs().to_bits();
        f64::from(f32::from_bits(b + 1)) - f64::from(f32::from_bits(b))
    };
    (f64::from(got) - exact).abs() / ulp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pairs are exact: checked in f64, where the sums and products of two f32 are exact.
    #[test]
    fn pairs_are_exact() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Exponents within ±40: no overflow or underflow in the products.
            let m = f32::from_bits(0x3F80_0000 | (seed as u32 & 0x007F_FFFF));
            let e = ((seed >> 32) % 81) as i32 - 40;
            let s = if seed >> 63 == 1 { -1.0 } else { 1.0 };
            s * m * f32::from_bits(((e + 127) as u32) << 23)
        };
        for _ in 0..if cfg!(miri) { 200 } else { 200_000 } {
            let (a, b) = (next(), next());
            let (p, e) = two_prod(a, b);
            assert_eq!(f64::from(p) + f64::from(e), f64::from(a) * f64::from(b));
            let (s, e) = two_sum(a, b);
            assert_eq!(f64::from(s) + f64::from(e), f64::from(a) + f64::from(b));
            let (hi, lo) = if a.abs() >= b.abs() { (a, b) } else { (b, a) };
            let (s, e) = fast_two_sum(hi, lo);
            assert_eq!(f64::from(s) + f64::from(e), f64::from(a) + f64::from(b));
        }
    }

    /// [`mul_add`] rounds once: a case worked by hand where the unfused result differs,
    /// then agreement with `libm`'s software `fmaf` (an implementation independent of the
    /// hardware instruction the host path uses) on random operands, cancellations, ties,
    /// subnormal results, overflow and the special values.
    #[test]
    fn mul_add_rounds_once() {
        // (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24 exactly; minus 1 leaves 2^-11 + 2^-24, an f32.
        // Unfused, the product rounds to 1 + 2^-11 (a tie, to even) and the sum is 2^-11.
        let a = 1.0 + f32::powi(2.0, -12);
        assert_eq!(
            mul_add(a, a, -1.0),
            f32::powi(2.0, -11) + f32::powi(2.0, -24)
        );
        assert_eq!(core::hint::black_box(a) * a - 1.0, f32::powi(2.0, -11));
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut bits = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let specials = [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            1.0,
            -1.0,
        ];
        for i in 0..if cfg!(miri) { 300 } else { 300_000 } {
            let r = bits();
            let (mut a, mut b, mut c) = (
                f32::from_bits(r as u32),
                f32::from_bits((r >> 32) as u32),
                f32::from_bits(bits() as u32),
            );
            match i % 4 {
                // Moderate exponents: products and sums of comparable size.
                0 => {
                    let m = |x: f32| f32::from_bits((x.to_bits() & 0x807F_FFFF) | 0x3F00_0000);
                    (a, b, c) = (m(a), m(b), m(c));
                }
                // c = -(a·b rounded): the sum cancels to the product's rounding error.
                1 => c = -(a * b),
                // Products near the subnormal range.
                2 => {
                    let tiny = |x: f32| f32::from_bits(x.to_bits() & 0x87FF_FFFF);
                    (a, b) = (tiny(a), tiny(b) * 1e20);
                }
                _ => {
                    if let Some(s) = specials.get((r % 16) as usize) {
                        c = *s;
                    }
                }
            }
            let want = libm::fmaf(a, b, c);
            for got in [mul_add(a, b, c), mul_add_compiled_with_fma(a, b, c)] {
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "fma({a:e}, {b:e}, {c:e}) = {got:e}, libm {want:e}"
                );
            }
        }
    }

    /// [`mul_add`] inlined where the x86 kernels use it, compiled with FMA: the `vfmadd`
    /// instruction (without the instruction set, the plain path again).
    fn mul_add_compiled_with_fma(a: f32, b: f32, c: f32) -> f32 {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if std::is_x86_feature_detected!("fma") {
            #[target_feature(enable = "fma")]
            fn fused(a: f32, b: f32, c: f32) -> f32 {
                mul_add(a, b, c)
            }
            // SAFETY: the CPU has FMA (checked just above), `fused`'s only requirement.
            return unsafe { fused(a, b, c) };
        }
        mul_add(a, b, c)
    }
}
