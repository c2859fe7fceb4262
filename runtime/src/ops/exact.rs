//! Error-free transformations of f32 arithmetic (Dekker, Knuth): a sum or product returned as
//! its rounded value and the exact rounding error, from IEEE basic operations only (no fused
//! multiply-add), so every target computes the same pair. The double-f32 arithmetic of
//! [`super::trig`] and [`super::pow`] is built from them.

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
}
