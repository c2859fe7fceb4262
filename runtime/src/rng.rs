//! Deterministic noise: counter-based Philox4x32-10 plus Box–Muller, the same bits on every
//! platform from the same seed.
//!
//! # The exact algorithm (stable: changing it changes every seeded sample)
//!
//! Normal number `n` (a `u64` index) of stream `stream` for seed `seed`:
//!
//! 1. **Block.** `block = n / 4`, `lane = n % 4`. Philox4x32-10 (Salmon et al., SC'11 —
//!    Random123's `philox4x32` with 10 rounds, see [`philox4x32_10`]) is applied to
//!    counter `[block as u32, (block >> 32) as u32, stream as u32, (stream >> 32) as u32]`
//!    with key `[seed as u32, (seed >> 32) as u32]`, giving four words `w0, w1, w2, w3`.
//! 2. **Uniforms.** Each word becomes a uniform in the open interval (0, 1) from its top 23
//!    bits: `u(w) = ((w >> 9) + 0.5) * 2^-23`, computed in f64 (exact; the smallest value is
//!    `2^-24`, so the logarithm below is finite and the tail reaches ≈ 5.8σ).
//! 3. **Box–Muller** on the pairs `(w0, w1)` and `(w2, w3)`, in f64 with `libm`:
//!    `r = sqrt(-2 ln u(w_even))`, `θ = 2π · u(w_odd)` (`2π` = `core::f64::consts::TAU`),
//!    `z_even = r cos θ`, `z_odd = r sin θ`, each rounded to f32 at the end.
//! 4. Normal `n` is `[z0, z1, z2, z3][lane]` of its block.
//!
//! `libm` is pure software (its only hardware paths are correctly rounded operations such as
//! `sqrt`), so the f64 arithmetic — and hence the f32 results — are the same on x86_64,
//! aarch64, Cortex-M (soft f64), RISC-V and wasm32. Because f64 is rounded to f32 only at
//! the end, a NumPy/Python re-implementation of these steps (e.g. for fixtures) produces the
//! same f32 values except in astronomically rare double-rounding cases.
//!
//! [`fill_normal`] writes normals `0, 1, 2, ...` of stream 0, so a batch's noise is a
//! prefix of a larger batch's noise for the same seed; [`fill_normal_at`] and
//! [`fill_normal_stream`] address any window of the sequence.

/// Philox4x32 multipliers `(M0, M1)` (Random123 `PHILOX_M4x32_0/1`).
pub const PHILOX_M4X32: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];

/// Philox4x32 Weyl key increments `(W0, W1)` (Random123 `PHILOX_W32_0/1`: golden ratio and
/// √3 − 1 in 0.32 fixed point).
pub const PHILOX_W32: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];

/// One Philox4x32 round: two 32×32→64 multiplications, a swap and xor with the key.
#[inline]
fn philox_round(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [c0, c1, c2, c3] = ctr;
    let [k0, k1] = key;
    let [m0, m1] = PHILOX_M4X32;
    let p0 = u64::from(m0) * u64::from(c0);
    let p1 = u64::from(m1) * u64::from(c2);
    [
        (p1 >> 32) as u32 ^ c1 ^ k0,
        p1 as u32,
        (p0 >> 32) as u32 ^ c3 ^ k1,
        p0 as u32,
    ]
}

/// The Philox4x32-10 block function: encrypts the 128-bit `counter` under the 64-bit `key`
/// and returns four pseudo-random words.
///
/// Ten rounds; round `r` (0-based) uses the key `key + r·(W0, W1)` (wrapping, see
/// [`PHILOX_W32`]); the round function maps `(c0, c1, c2, c3)` to
/// `(hi(M1·c2) ^ c1 ^ k0, lo(M1·c2), hi(M0·c0) ^ c3 ^ k1, lo(M0·c0))`. Matches Random123's
/// `philox4x32_R(10, ctr, key)` word for word (checked against its `kat_vectors`).
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [w0, w1] = PHILOX_W32;
    let mut ctr = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(w0), k[1].wrapping_add(w1)];
        }
        ctr = philox_round(ctr, k);
    }
    ctr
}

/// Maps a random word to a uniform in the open interval (0, 1): `((w >> 9) + 0.5) · 2^-23`,
/// exact in f64 (and in f32). Values lie in `[2^-24, 1 − 2^-24]`.
pub fn uniform_open01(w: u32) -> f64 {
    (f64::from(w >> 9) + 0.5) * (1.0 / 8_388_608.0)
}

/// Box–Muller: two random words to two independent standard normals (see the module docs).
fn box_muller(a: u32, b: u32) -> (f32, f32) {
    let u1 = uniform_open01(a);
    let u2 = uniform_open01(b);
    let r = libm::sqrt(-2.0 * libm::log(u1));
    let theta = core::f64::consts::TAU * u2;
    ((r * libm::cos(theta)) as f32, (r * libm::sin(theta)) as f32)
}

/// The four standard normals of block `block` (normals `4·block .. 4·block + 3`) of `stream`
/// for `seed`.
pub fn normal_block(seed: u64, stream: u64, block: u64) -> [f32; 4] {
    let counter = [
        block as u32,
        (block >> 32) as u32,
        stream as u32,
        (stream >> 32) as u32,
    ];
    let key = [seed as u32, (seed >> 32) as u32];
    let [w0, w1, w2, w3] = philox4x32_10(counter, key);
    let (z0, z1) = box_muller(w0, w1);
    let (z2, z3) = box_muller(w2, w3);
    [z0, z1, z2, z3]
}

/// Fills `out` with standard normals `offset, offset + 1, ...` of `stream` for `seed`
/// (indices wrap modulo 2^64). Never fails.
pub fn fill_normal_stream(seed: u64, stream: u64, offset: u64, out: &mut [f32]) {
    let mut index = offset;
    let mut cached_block = index / 4;
    let mut block = normal_block(seed, stream, cached_block);
    for o in out.iter_mut() {
        let b = index / 4;
        if b != cached_block {
            cached_block = b;
            block = normal_block(seed, stream, b);
        }
        // index % 4 < 4, so this always finds a value.
        if let Some(z) = block.get((index % 4) as usize) {
            *o = *z;
        }
        index = index.wrapping_add(1);
    }
}

/// Fills `out` with standard normals `offset, offset + 1, ...` of stream 0 for `seed`, e.g.
/// `offset = row * row_len` to regenerate one row of a batch's noise. Never fails.
pub fn fill_normal_at(seed: u64, offset: u64, out: &mut [f32]) {
    fill_normal_stream(seed, 0, offset, out);
}

/// Fills `out` with standard normal f32 noise, deterministically from `seed`: normals
/// `0 .. out.len()` of stream 0 (see the module docs for the exact algorithm). Never fails.
pub fn fill_normal(seed: u64, out: &mut [f32]) {
    fill_normal_stream(seed, 0, 0, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    /// Random123 `tests/kat_vectors`, the three `philox4x32 10` lines:
    /// counter (4 words), key (2 words), expected output (4 words).
    const KAT: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        (
            [0, 0, 0, 0],
            [0, 0],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
            [0xffffffff, 0xffffffff],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];

    #[test]
    fn philox_known_answers() {
        for (ctr, key, want) in KAT {
            assert_eq!(
                philox4x32_10(ctr, key),
                want,
                "ctr={ctr:08x?} key={key:08x?}"
            );
        }
    }

    /// First normals for seed 0 / seed 42, cross-checked against an independent pure-Python
    /// implementation of the documented algorithm (Python floats are IEEE f64, math.log /
    /// math.cos / math.sin from the C library, struct-packed to f32).
    #[test]
    fn normal_golden_values() {
        let mut z = [0f32; 8];
        fill_normal(0, &mut z);
        let bits: std::vec::Vec<u32> = z.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, GOLDEN_SEED0);
        fill_normal(42, &mut z);
        let bits: std::vec::Vec<u32> = z.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, GOLDEN_SEED42);
    }

    const GOLDEN_SEED0: [u32; 8] = [
        0x3f7dbb30, 0xbf6cb6b3, 0xbf1e1ba1, 0xbef6d1aa, 0xbe1d5354, 0x3e392a67, 0x3f54ec98,
        0x3e4a2d9b,
    ];
    const GOLDEN_SEED42: [u32; 8] = [
        0xbf785e5a, 0x3e46acec, 0xbf9e28cc, 0x3ff6433e, 0xbd95e034, 0x3e0e7a13, 0xbf8da733,
        0x3ea742fc,
    ];

    #[test]
    fn uniform_range_and_exactness() {
        // 2^-24 as a literal: Miri gives `powi` a deliberate rounding error (Rust does not
        // promise it exact).
        let half_step = 1.0 / 16_777_216.0;
        assert_eq!(uniform_open01(0), half_step);
        assert_eq!(uniform_open01(u32::MAX), 1.0 - half_step);
        assert_eq!(uniform_open01(0x8000_0000), 0.5 + half_step);
        // exact in f32 as well
        for w in [0u32, 1 << 9, 12345 << 9, u32::MAX] {
            let u = uniform_open01(w);
            assert_eq!(u as f32 as f64, u);
        }
    }

    #[test]
    fn moments() {
        // Under Miri (scripts/miri.sh, ~10^5 times slower) 5000 normals, with every bound
        // widened by sqrt(100000 / n), the growth of the standard errors.
        let n = if cfg!(miri) { 5_000 } else { 100_000 };
        let wide = (100_000.0 / n as f64).sqrt();
        let mut z = vec![0f32; n];
        fill_normal(7, &mut z);
        assert!(z.iter().all(|v| v.is_finite()));
        let mean = z.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let skew = z.iter().map(|&v| (v as f64 - mean).powi(3)).sum::<f64>() / n as f64;
        let kurt = z.iter().map(|&v| (v as f64 - mean).powi(4)).sum::<f64>() / n as f64;
        // standard errors: mean 0.0032, var 0.0045, skew 0.0077, kurt 0.025
        assert!(mean.abs() < 0.015 * wide, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02 * wide, "var {var}");
        assert!(skew.abs() < 0.04 * wide, "skew {skew}");
        assert!((kurt - 3.0).abs() < 0.12 * wide, "kurtosis {kurt}");
        // tail mass beyond 2 sigma ≈ 4.55%
        let tail = z.iter().filter(|v| v.abs() > 2.0).count() as f64 / n as f64;
        assert!((tail - 0.0455).abs() < 0.004 * wide, "tail {tail}");
    }

    #[test]
    fn windows_streams_and_seeds() {
        let mut all = vec![0f32; 103];
        fill_normal(3, &mut all);
        // Any window equals the corresponding slice of the full sequence.
        for off in [0usize, 1, 2, 3, 4, 5, 17, 50] {
            for len in [0usize, 1, 3, 4, 7, 40] {
                let mut w = vec![0f32; len];
                fill_normal_at(3, off as u64, &mut w);
                assert_eq!(&w[..], &all[off..off + len], "off={off} len={len}");
            }
        }
        // Prefix property: a smaller batch is a prefix of a larger one.
        let mut small = vec![0f32; 10];
        fill_normal(3, &mut small);
        assert_eq!(&small[..], &all[..10]);
        // Different seeds / streams differ.
        let mut other = vec![0f32; 103];
        fill_normal(4, &mut other);
        assert_ne!(all, other);
        fill_normal_stream(3, 1, 0, &mut other);
        assert_ne!(all, other);
        // Seeds differing only in the high word differ.
        fill_normal(3 | (1 << 32), &mut other);
        assert_ne!(all, other);
        // Blocks are what fill uses.
        assert_eq!(normal_block(3, 0, 1), [all[4], all[5], all[6], all[7]]);
    }

    #[test]
    fn wraps_at_end_of_index_space() {
        let mut z = [0f32; 6];
        fill_normal_at(9, u64::MAX - 1, &mut z);
        let mut start = [0f32; 4];
        fill_normal(9, &mut start);
        assert_eq!(&z[2..], &start[..]);
        assert!(z.iter().all(|v| v.is_finite()));
    }
}
