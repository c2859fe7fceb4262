//! Kernels against naive reference implementations.

use super::*;
use std::vec;
use std::vec::Vec;

/// Small deterministic generator (no dependencies).
struct Lcg(u64);
impl Lcg {
    fn next_f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next_f32()).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// Bit equality, except that under Miri any two NaNs match: Rust leaves the sign and payload
/// of a NaN produced by arithmetic unspecified, and Miri picks them at random.
fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (cfg!(miri) && a.is_nan() && b.is_nan())
}

fn dims(d: &[usize]) -> Dims {
    Dims::new(d).unwrap()
}

fn strides(d: &[usize]) -> Vec<usize> {
    let mut s = vec![1; d.len()];
    for i in (0..d.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * d[i + 1];
    }
    s
}

/// Multi-index of linear index `i` in dims `d`.
fn unravel(mut i: usize, d: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; d.len()];
    for k in (0..d.len()).rev() {
        idx[k] = i % d[k];
        i /= d[k];
    }
    idx
}

/// Linear index in `src` dims of an output multi-index under numpy broadcasting.
fn bcast_index(out_idx: &[usize], src: &[usize]) -> usize {
    let lead = out_idx.len() - src.len();
    let st = strides(src);
    (0..src.len())
        .map(|k| {
            if src[k] == 1 {
                0
            } else {
                out_idx[lead + k] * st[k]
            }
        })
        .sum()
}

#[test]
fn dense_matches_naive_loop_bitwise() {
    let mut g = Lcg(1);
    // Sizes cover the 8-, 16- and 32-column tiles (portable, AVX2 and AVX-512 paths, as the
    // CPU has them) and their tails; fewer than 4 rows the 32- and 64-column rows of the x86
    // hosts, and tails whose last steps would read past the weights (`tail_in_registers`);
    // 1 to 8 columns over 16 rows or more (x86's `narrow`).
    // Under Miri the two large cases shrink to the same tile and tail structure.
    let (big, wide) = if cfg!(miri) {
        ((9, 13, 20), (8, 5, 40))
    } else {
        ((9, 13, 600), (8, 64, 128))
    };
    for &(rows, k, n) in &[
        (1, 1, 1),
        (3, 5, 7),
        (4, 8, 16),
        big,
        (17, 3, 1),
        (5, 7, 33),
        wide,
        (6, 3, 24),
        (1, 64, 2),
        (2, 9, 70),
        (3, 40, 63),
        (1, 3, 64),
        (1, 17, 130),
        (2, 1, 5),
        (4, 64, 2),
        (8, 20, 18),
        // Few columns over 16 rows and more (the x86 16-row lanes kernel, then the rest).
        (37, 64, 2),
        (16, 130, 3),
        (33, 5, 8),
        (20, 7, 7),
        // 6-row blocks of the AVX-512 tiles, alone and followed by 4-row blocks.
        (12, 9, 64),
        (22, 5, 96),
        (14, 3, 32),
    ] {
        let (a, w, b) = (g.vec(rows * k), g.vec(k * n), g.vec(n));
        // Slices: indexing a Vec retags all of it under Miri (quadratic in the size).
        let (a, w, b) = (&a[..], &w[..], &b[..]);
        for bias in [None, Some(b)] {
            let mut out = vec![0.0; rows * n];
            dense(a, Weights::F32(w), bias.map(Weights::F32), k, n, &mut out).unwrap();
            for r in 0..rows {
                for c in 0..n {
                    let mut acc = bias.map_or(0.0, |b| b[c]);
                    for kk in 0..k {
                        acc = libm::fmaf(a[r * k + kk], w[kk * n + c], acc);
                    }
                    assert_eq!(out[r * n + c].to_bits(), acc.to_bits(), "r={r} c={c}");
                }
            }
        }
    }
}

/// Both x86 register-tile kernels, called directly (the Dense dispatch picks only the
/// widest the CPU has, so an AVX-512 host would otherwise never run the AVX2 tiles): the
/// same bits as the naive loop, with 6- and 4-row blocks, 2- and 4-register tiles and a
/// column tail left to the caller (`full < n`).
#[cfg(all(feature = "std", target_arch = "x86_64", not(miri)))]
#[test]
fn x86_tiles_match_naive_loop_bitwise() {
    let mut g = Lcg(5);
    for &(rows, k, n, full) in &[
        (4, 1, 16, 16),
        (12, 9, 64, 64),
        (16, 130, 48, 32),
        (20, 5, 96, 96),
        (8, 64, 128, 128),
    ] {
        let (a, w, b) = (g.vec(rows * k), g.vec(k * n), g.vec(n));
        for bias in [None, Some(&b[..])] {
            let want = |out: &[f32], path: &str| {
                for r in 0..rows {
                    for c in 0..full {
                        let mut acc = bias.map_or(0.0, |b| b[c]);
                        for kk in 0..k {
                            acc = libm::fmaf(a[r * k + kk], w[kk * n + c], acc);
                        }
                        assert_eq!(
                            out[r * n + c].to_bits(),
                            acc.to_bits(),
                            "{path} r={r} c={c}"
                        );
                    }
                }
            };
            let bias = bias.map(Weights::F32);
            if super::x86::has_avx2() && full % super::x86::TILE_AVX2 == 0 {
                let mut out = vec![0.0; rows * n];
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                unsafe { super::x86::tiles_avx2(&a, &mut out, &w, bias, k, n, full) }.unwrap();
                want(&out, "avx2");
            }
            if super::x86::has_avx512() && full % super::x86::TILE == 0 {
                let mut out = vec![0.0; rows * n];
                // SAFETY: the CPU has AVX-512F and FMA (checked just above).
                unsafe { super::x86::tiles(&a, &mut out, &w, bias, k, n, full) }.unwrap();
                want(&out, "avx512");
            }
        }
    }
}

#[test]
fn dense_rejects_bad_sizes() {
    let mut out = vec![0.0; 6];
    assert!(dense(&[0.0; 5], Weights::F32(&[0.0; 6]), None, 2, 3, &mut out).is_err());
    assert!(dense(
        &[0.0; 4],
        Weights::F32(&[0.0; 6]),
        Some(Weights::F32(&[0.0; 2])),
        2,
        3,
        &mut out
    )
    .is_err());
    assert!(dense(&[0.0; 4], Weights::F32(&[0.0; 6]), None, 0, 3, &mut out).is_err());
}

#[test]
fn matmul_batched_broadcast_matches_naive() {
    let mut g = Lcg(2);
    let cases: &[(&[usize], &[usize], &[usize])] = &[
        (&[2, 3], &[3, 4], &[2, 4]),
        (&[5, 2, 3], &[3, 4], &[5, 2, 4]),
        (&[2, 3], &[5, 3, 4], &[5, 2, 4]),
        (&[2, 1, 2, 3], &[1, 4, 3, 2], &[2, 4, 2, 2]),
        (&[3, 2, 3], &[3, 3, 1], &[3, 2, 1]),
    ];
    for (ad, bd, od) in cases {
        let a = g.vec(ad.iter().product());
        let b = g.vec(bd.iter().product());
        let mut out = vec![0.0; od.iter().product()];
        matmul(&a, &dims(ad), &b, &dims(bd), &mut out, &dims(od)).unwrap();
        let (m, k, n) = (ad[ad.len() - 2], ad[ad.len() - 1], bd[bd.len() - 1]);
        let lead = &od[..od.len() - 2];
        for (i, o) in out.iter().enumerate() {
            let idx = unravel(i, od);
            let (mi, ni) = (idx[od.len() - 2], idx[od.len() - 1]);
            let bi = &idx[..od.len() - 2];
            // Leading index of a and b under broadcasting.
            let a_lead = &ad[..ad.len() - 2];
            let b_lead = &bd[..bd.len() - 2];
            let a_off = bcast_index(bi, a_lead) * m * k;
            let b_off = bcast_index(bi, b_lead) * k * n;
            let _ = lead;
            let mut acc = 0.0f32;
            for kk in 0..k {
                acc = libm::fmaf(a[a_off + mi * k + kk], b[b_off + kk * n + ni], acc);
            }
            assert_eq!(o.to_bits(), acc.to_bits());
        }
    }
}

#[test]
fn binary_broadcast_matches_naive() {
    let mut g = Lcg(3);
    let cases: &[(&[usize], &[usize], &[usize])] = &[
        (&[4, 5], &[4, 5], &[4, 5]),
        (&[4, 5], &[5], &[4, 5]),
        (&[4, 5], &[], &[4, 5]),
        (&[], &[3], &[3]),
        (&[4, 1], &[1, 5], &[4, 5]),
        (&[2, 1, 3], &[4, 1], &[2, 4, 3]),
        (&[1, 2, 1, 3, 1, 2], &[2, 1, 3, 2, 1], &[1, 2, 2, 3, 2, 2]),
        (&[3, 1, 1], &[1, 1, 1], &[3, 1, 1]),
        (&[2, 3, 1], &[2, 3, 4], &[2, 3, 4]),
    ];
    let ops = [
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::Pow,
        Binary::Max,
        Binary::Min,
        Binary::Greater,
        Binary::Less,
        Binary::GreaterOrEqual,
        Binary::LessOrEqual,
        Binary::Equal,
    ];
    for (ad, bd, od) in cases {
        let a = g.vec(ad.iter().product());
        let mut b: Vec<f32> = g.vec(bd.iter().product());
        // Some exact ties so that the comparisons see equal operands too.
        if let (Some(x), Some(y)) = (a.first(), b.last_mut()) {
            *y = *x;
        }
        for op in ops {
            let mut out = vec![0.0; od.iter().product()];
            binary(op, &a, &dims(ad), &b, &dims(bd), &mut out, &dims(od)).unwrap();
            for (i, o) in out.iter().enumerate() {
                let idx = unravel(i, od);
                let want = op.apply(a[bcast_index(&idx, ad)], b[bcast_index(&idx, bd)]);
                assert!(
                    same_bits(*o, want),
                    "{op:?} {ad:?} {bd:?} i={i}: {o} vs {want}"
                );
            }
        }
    }
    // Not broadcastable: every operation refuses, Pow's whole-row loops included (`a` has
    // the output's element count in a shape that does not broadcast to it).
    let mut out = vec![0.0; 6];
    for op in [Binary::Add, Binary::Pow, Binary::Max] {
        assert!(binary(
            op,
            &[0.0; 6],
            &dims(&[2, 3]),
            &[0.0; 2],
            &dims(&[2]),
            &mut out,
            &dims(&[2, 3])
        )
        .is_err());
        assert!(binary(
            op,
            &[0.0; 6],
            &dims(&[6]),
            &[0.0; 1],
            &dims(&[1]),
            &mut out,
            &dims(&[2, 3])
        )
        .is_err());
    }
}

#[test]
fn binary_scalar_semantics() {
    assert_eq!(Binary::Max.apply(1.0, 2.0), 2.0);
    assert_eq!(Binary::Min.apply(1.0, 2.0), 1.0);
    assert!(Binary::Max.apply(f32::NAN, 2.0).is_nan());
    assert!(Binary::Min.apply(1.0, f32::NAN).is_nan());
    assert_eq!(Binary::Pow.apply(2.0, 10.0), 1024.0);
    let cmp = [
        (Binary::Greater, [0.0, 0.0, 1.0]),
        (Binary::Less, [1.0, 0.0, 0.0]),
        (Binary::GreaterOrEqual, [0.0, 1.0, 1.0]),
        (Binary::LessOrEqual, [1.0, 1.0, 0.0]),
        (Binary::Equal, [0.0, 1.0, 0.0]),
    ];
    for (op, want) in cmp {
        // a < b, a == b, a > b
        let got = [op.apply(1.0, 2.0), op.apply(2.0, 2.0), op.apply(3.0, 2.0)];
        assert_eq!(got, want, "{op:?}");
        // IEEE: every comparison with NaN is false; -0 == +0; infinities order.
        assert_eq!(
            op.apply(f32::NAN, 1.0).to_bits(),
            0.0f32.to_bits(),
            "{op:?}"
        );
        assert_eq!(
            op.apply(1.0, f32::NAN).to_bits(),
            0.0f32.to_bits(),
            "{op:?}"
        );
        assert_eq!(op.apply(-0.0, 0.0), want[1], "{op:?}");
        assert_eq!(
            op.apply(f32::NEG_INFINITY, f32::INFINITY),
            want[0],
            "{op:?}"
        );
    }
}

/// Random broadcastable shapes: an output of rank 0..=6 and, per input, a suffix of it
/// (rank differences) with some dims set to 1.
fn random_bcast(g: &mut Lcg, n_inputs: usize) -> (Vec<usize>, Vec<Vec<usize>>) {
    let rank = g.below(MAX_RANK + 1);
    let od: Vec<usize> = (0..rank).map(|_| 1 + g.below(4)).collect();
    let ins = (0..n_inputs)
        .map(|_| {
            let r = g.below(rank + 1);
            od[rank - r..]
                .iter()
                .map(|d| if g.below(3) == 0 { 1 } else { *d })
                .collect()
        })
        .collect();
    (od, ins)
}

#[test]
fn select_broadcast_matches_naive() {
    let mut g = Lcg(11);
    let mut fixed: Vec<(Vec<usize>, Vec<Vec<usize>>)> = vec![
        (vec![], vec![vec![], vec![], vec![]]),
        (vec![4, 5], vec![vec![4, 5], vec![4, 5], vec![4, 5]]),
        (vec![4, 5], vec![vec![4, 5], vec![4, 5], vec![]]),
        (vec![4, 5], vec![vec![5], vec![4, 1], vec![1]]),
        (vec![2, 3, 4], vec![vec![3, 1], vec![2, 1, 4], vec![4]]),
        (vec![3], vec![vec![], vec![3], vec![]]),
    ];
    // Under Miri (scripts/miri.sh), which interprets ~10^5 times slower, a tenth of the cases.
    for _ in 0..if cfg!(miri) { 30 } else { 300 } {
        fixed.push(random_bcast(&mut g, 3));
    }
    for (od, ins) in &fixed {
        let (cd, ad, bd) = (&ins[0], &ins[1], &ins[2]);
        // Mask values: 1, 0, -0, NaN and arbitrary non-zero values.
        let cond: Vec<f32> = (0..cd.iter().product::<usize>())
            .map(|_| [1.0, 0.0, -0.0, f32::NAN, 0.5, -3.0][g.below(6)])
            .collect();
        let a = g.vec(ad.iter().product());
        let b = g.vec(bd.iter().product());
        let mut out = vec![f32::MAX; od.iter().product()];
        select(
            &cond,
            &dims(cd),
            &a,
            &dims(ad),
            &b,
            &dims(bd),
            &mut out,
            &dims(od),
        )
        .unwrap();
        for (i, o) in out.iter().enumerate() {
            let idx = unravel(i, od);
            let c = cond[bcast_index(&idx, cd)];
            // Truthy: anything but +-0 (bit-level, independent of the kernel's `!=`).
            let want = if c.to_bits() & 0x7fff_ffff != 0 {
                a[bcast_index(&idx, ad)]
            } else {
                b[bcast_index(&idx, bd)]
            };
            assert_eq!(
                o.to_bits(),
                want.to_bits(),
                "{cd:?} {ad:?} {bd:?} -> {od:?} i={i}"
            );
        }
    }
}

#[test]
fn comparisons_feed_select_exactly() {
    // The torch Softplus(beta=1, threshold=20) guard: Where(x > 20, x, softplus(x)).
    let x: Vec<f32> = vec![-30.0, -1.0, 0.0, 19.5, 20.0, 20.0001, 25.0, f32::NAN];
    let mut gt = vec![0.0; x.len()];
    let d = dims(&[2, 4]);
    binary(Binary::Greater, &x, &d, &[20.0], &dims(&[]), &mut gt, &d).unwrap();
    let mut sp = vec![0.0; x.len()];
    unary(Unary::Softplus, &x, &mut sp).unwrap();
    let mut out = vec![0.0; x.len()];
    select(&gt, &d, &x, &d, &sp, &d, &mut out, &d).unwrap();
    for i in 0..x.len() {
        let want = if x[i] > 20.0 {
            x[i]
        } else {
            Unary::Softplus.apply(x[i])
        };
        assert!(same_bits(out[i], want), "x={}: {} vs {want}", x[i], out[i]);
    }
}

#[test]
fn select_rejects_bad_sizes() {
    let d = dims(&[2, 3]);
    let mut out = vec![0.0; 6];
    let ok = [0.0; 6];
    // Wrong buffer length for its dims.
    assert!(select(&ok[..5], &d, &ok, &d, &ok, &d, &mut out, &d).is_err());
    assert!(select(&ok, &d, &ok, &d, &ok, &d, &mut out[..5], &d).is_err());
    // Not broadcastable: [2] against [2, 3]; higher rank than the output.
    let two = dims(&[2]);
    assert!(select(&ok[..2], &two, &ok, &d, &ok, &d, &mut out, &d).is_err());
    assert!(select(&ok, &d, &ok[..2], &two, &ok, &d, &mut out, &d).is_err());
    assert!(select(&ok, &d, &ok, &d, &ok[..2], &two, &mut out, &d).is_err());
    let d3 = dims(&[1, 2, 3]);
    assert!(select(&ok, &d3, &ok, &d, &ok, &d, &mut out, &d).is_err());
}

fn ref_unary(op: Unary, x: f64) -> f64 {
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    match op {
        Unary::Relu => x.max(0.0),
        Unary::LeakyRelu { alpha } => {
            if x >= 0.0 {
                x
            } else {
                alpha as f64 * x
            }
        }
        Unary::Elu { alpha } => {
            if x > 0.0 {
                x
            } else {
                alpha as f64 * (x.exp() - 1.0)
            }
        }
        Unary::Selu { alpha, gamma } => {
            gamma as f64
                * if x > 0.0 {
                    x
                } else {
                    alpha as f64 * (x.exp() - 1.0)
                }
        }
        Unary::Sigmoid => sig(x),
        Unary::Tanh => x.tanh(),
        Unary::Softplus => (1.0 + x.exp()).ln(),
        Unary::Silu => x * sig(x),
        Unary::GeluErf => 0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2)),
        // 0.5 x (1 + tanh(u)) = x sigmoid(2u), without the cancellation of 1 + tanh(u) for
        // u << 0 (~3e-11 at x = -6, where one ulp of tanh is a relative 4e-6; Miri's
        // deliberately inexact f64 tanh broke the old form there).
        Unary::GeluTanh => {
            x * sig(2.0 * (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x))
        }
        Unary::Sin => x.sin(),
        Unary::Cos => x.cos(),
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Sqrt => x.sqrt(),
        Unary::Neg => -x,
        Unary::Abs => x.abs(),
        Unary::Erf => erf64(x),
        Unary::Recip => 1.0 / x,
        Unary::Square => x * x,
        Unary::Rsqrt => 1.0 / x.sqrt(),
        Unary::Floor => x.floor(),
        Unary::Ceil => x.ceil(),
        Unary::Round => x.round_ties_even(),
        Unary::Sign => {
            if x == 0.0 {
                0.0
            } else {
                x.signum()
            }
        }
    }
}

/// erf in f64 via libm (double precision, independent of the f32 code path).
fn erf64(x: f64) -> f64 {
    libm::erf(x)
}

/// Relative tolerance 1e-6, with an absolute floor where the f32 result is dominated by
/// the rounding of intermediate terms (values below 1e-30 and exact zeros).
fn close(got: f32, want: f64, rel: f64) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    let err = (got as f64 - want).abs();
    err <= rel * want.abs() || err < 1e-30
}

#[test]
fn every_unary_matches_f64_formula() {
    let all = [
        Unary::Relu,
        Unary::LeakyRelu { alpha: 0.01 },
        Unary::Elu { alpha: 1.3 },
        Unary::Selu {
            alpha: 1.673_263_2,
            gamma: 1.050_701,
        },
        Unary::Sigmoid,
        Unary::Tanh,
        Unary::Softplus,
        Unary::Silu,
        Unary::GeluErf,
        Unary::GeluTanh,
        Unary::Sin,
        Unary::Cos,
        Unary::Exp,
        Unary::Log,
        Unary::Sqrt,
        Unary::Neg,
        Unary::Abs,
        Unary::Erf,
        Unary::Recip,
        Unary::Square,
        Unary::Rsqrt,
        Unary::Floor,
        Unary::Ceil,
        Unary::Round,
        Unary::Sign,
    ];
    // Values over [-6, 6] (positive only for log / sqrt / rsqrt); every 23rd under Miri.
    let xs: Vec<f32> = (-600..=600)
        .step_by(if cfg!(miri) { 23 } else { 1 })
        .map(|i| i as f32 * 0.01 + 0.003)
        .collect();
    for op in all {
        let domain: Vec<f32> = match op {
            Unary::Log | Unary::Sqrt | Unary::Rsqrt => xs.iter().map(|x| x.abs() + 1e-3).collect(),
            _ => xs.clone(),
        };
        let mut out = vec![0.0; domain.len()];
        unary(op, &domain, &mut out).unwrap();
        let mut worst = 0.0f64;
        for (x, y) in domain.iter().zip(&out) {
            assert_eq!(y.to_bits(), op.apply(*x).to_bits());
            let want = ref_unary(op, *x as f64);
            // The Gelus' tails are ill-conditioned: erfc(z) and sigmoid(2u) amplify the
            // one-rounding error of their f32 argument by ~2z^2 (resp. |2u|), up to ~40x at
            // |x| = 6, so they get 4e-6 there; everything else 1e-6.
            let rel = if matches!(op, Unary::GeluTanh | Unary::GeluErf) {
                4e-6
            } else {
                1e-6
            };
            assert!(close(*y, want, rel), "{op:?}({x}) = {y}, want {want}");
            if want != 0.0 {
                worst = worst.max((*y as f64 - want).abs() / want.abs());
            }
        }
        std::println!("{:>10}: worst relative error {worst:.2e}", op.name());
    }
}

#[test]
fn softplus_is_accurate() {
    // Every 101st f32 in [-87, 88] (every 101 * 1009th under Miri): within 2 ulp of f64.
    let stride = if cfg!(miri) { 101 * 1009 } else { 101 };
    let xs = (0..=u32::MAX)
        .step_by(stride)
        .map(f32::from_bits)
        .filter(|x| (-87.0..=88.0).contains(x));
    let worst = worst_ulp(
        xs,
        |x| Unary::Softplus.apply(x),
        |x| x.max(0.0) + (-x.abs()).exp().ln_1p(),
    );
    std::println!("softplus: worst {worst:.2} ulp");
    assert!(worst <= 2.0, "softplus: {worst} ulp");
    // log1p on [0, 1], every 61st f32 (every 61 * 1009th under Miri): within 1 ulp.
    let es = (0..=1.0f32.to_bits())
        .step_by(if cfg!(miri) { 61 * 1009 } else { 61 })
        .map(f32::from_bits);
    let worst = worst_ulp(es, log1p_unit, f64::ln_1p);
    std::println!("log1p_unit: worst {worst:.2} ulp");
    assert!(worst <= 1.0, "log1p_unit: {worst} ulp");
    assert!(log1p_unit(f32::NAN).is_nan());
    assert_eq!(Unary::Softplus.apply(-100.0), 0.0);
    assert!(Unary::Softplus.apply(f32::NAN).is_nan());
}

#[test]
fn exp_and_log_are_accurate() {
    // Every 97th f32 (every 97 * 1009th under Miri): exp within 1 ulp where its result is
    // normal, within one subnormal step below, 0 and +inf past the range; log within 1 ulp
    // over every positive f32, subnormals included.
    let stride = if cfg!(miri) { 97 * 1009 } else { 97 };
    let xs = || (0..=u32::MAX).step_by(stride).map(f32::from_bits);
    let normal = |x: &f32| (-87.3..=88.7).contains(x);
    let worst = worst_ulp(xs().filter(normal), exp, f64::exp);
    std::println!("exp: worst {worst:.2} ulp");
    assert!(worst <= 1.0, "exp: {worst} ulp");
    for x in xs().filter(|x| (-104.0..-87.3).contains(x)) {
        let d = (f64::from(exp(x)) - f64::from(x).exp()).abs();
        assert!(d <= f64::from(f32::from_bits(1)), "exp({x}): off by {d}");
    }
    assert_eq!(exp(-104.5), 0.0);
    assert_eq!(exp(88.8), f32::INFINITY);
    assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp(f32::INFINITY), f32::INFINITY);
    assert!(exp(f32::NAN).is_nan());
    let worst = worst_ulp(xs().filter(|x| *x > 0.0 && x.is_finite()), log, f64::ln);
    std::println!("log: worst {worst:.2} ulp");
    assert!(worst <= 1.0, "log: {worst} ulp");
    assert_eq!(log(0.0), f32::NEG_INFINITY);
    assert_eq!(log(-0.0), f32::NEG_INFINITY);
    assert_eq!(log(1.0), 0.0);
    assert_eq!(log(f32::INFINITY), f32::INFINITY);
    assert!(log(-1.0).is_nan() && log(f32::NAN).is_nan() && log(f32::NEG_INFINITY).is_nan());
}

#[test]
fn softplus_is_stable_at_extremes() {
    assert_eq!(Unary::Softplus.apply(100.0), 100.0);
    assert_eq!(Unary::Softplus.apply(f32::INFINITY), f32::INFINITY);
    assert_eq!(Unary::Softplus.apply(f32::NEG_INFINITY), 0.0);
    let v = Unary::Softplus.apply(-30.0);
    assert!((v as f64 - (-30.0f64).exp()).abs() / (-30.0f64).exp() < 1e-6);
    assert!(Unary::Sigmoid.apply(-100.0) >= 0.0);
    assert_eq!(Unary::Sigmoid.apply(100.0), 1.0);
    assert!(Unary::Relu.apply(f32::NAN).is_nan());
}

#[test]
fn unary_codes_round_trip() {
    for c in 0..=24u16 {
        let u = Unary::from_code(c, 0.5, 2.0).unwrap();
        assert_eq!(u.code(), c);
    }
    assert!(Unary::from_code(25, 0.0, 0.0).is_none());
    for c in 0..=11u16 {
        assert_eq!(Binary::from_code(c).unwrap().code(), c);
    }
    assert!(Binary::from_code(12).is_none());
}

#[test]
fn expand_matches_naive() {
    let mut g = Lcg(4);
    let cases: &[(&[usize], &[usize])] = &[
        (&[1], &[3, 4]),
        (&[4], &[3, 4]),
        (&[3, 1], &[3, 4]),
        (&[1, 2, 1], &[5, 3, 2, 4]),
        (&[2, 3], &[2, 3]),
    ];
    for (xd, od) in cases {
        let x = g.vec(xd.iter().product());
        let mut out = vec![0.0; od.iter().product()];
        expand(&x, &dims(xd), &mut out, &dims(od)).unwrap();
        for (i, o) in out.iter().enumerate() {
            assert_eq!(*o, x[bcast_index(&unravel(i, od), xd)]);
        }
    }
}

#[test]
fn transpose_matches_naive() {
    let mut g = Lcg(5);
    let cases: &[(&[usize], &[u8])] = &[
        (&[3, 4], &[1, 0]),
        (&[2, 3, 4], &[2, 0, 1]),
        (&[2, 3, 4], &[0, 2, 1]),
        (&[2, 1, 3, 2, 2, 3], &[5, 3, 1, 0, 4, 2]),
        (&[5], &[0]),
    ];
    for (xd, perm) in cases {
        let x = g.vec(xd.iter().product());
        let od: Vec<usize> = perm.iter().map(|p| xd[*p as usize]).collect();
        let mut out = vec![0.0; x.len()];
        transpose(&x, &dims(xd), perm, &mut out, &dims(&od)).unwrap();
        let xs = strides(xd);
        for (i, o) in out.iter().enumerate() {
            let idx = unravel(i, &od);
            let src: usize = perm
                .iter()
                .enumerate()
                .map(|(k, p)| idx[k] * xs[*p as usize])
                .sum();
            assert_eq!(*o, x[src]);
        }
    }
}

#[test]
fn slice_matches_naive() {
    let mut g = Lcg(6);
    let x = g.vec(3 * 10 * 2);
    for (start, end, step) in [(0, 10, 1), (1, 10, 3), (2, 3, 1), (0, 10, 4), (9, 10, 7)] {
        let len = usize::div_ceil(end - start, step);
        let mut out = vec![0.0; 3 * len * 2];
        slice(
            &x,
            &dims(&[3, 10, 2]),
            &mut out,
            &dims(&[3, len, 2]),
            1,
            start,
            step,
        )
        .unwrap();
        for a in 0..3 {
            for j in 0..len {
                for c in 0..2 {
                    assert_eq!(
                        out[(a * len + j) * 2 + c],
                        x[(a * 10 + start + j * step) * 2 + c]
                    );
                }
            }
        }
    }
    let mut out = vec![0.0; 6];
    assert!(slice(
        &x,
        &dims(&[3, 10, 2]),
        &mut out,
        &dims(&[3, 1, 2]),
        1,
        10,
        1
    )
    .is_err());
}

#[test]
fn concat_matches_naive() {
    let mut g = Lcg(7);
    let a = g.vec(2 * 3 * 4);
    let b = g.vec(2 * 4);
    let mut out = vec![0.0; 2 * 4 * 4];
    let od = dims(&[2, 4, 4]);
    concat_part(&a, &dims(&[2, 3, 4]), &mut out, &od, 1, 0).unwrap();
    concat_part(&b, &dims(&[2, 1, 4]), &mut out, &od, 1, 3).unwrap();
    for i in 0..2 {
        for j in 0..4 {
            for k in 0..4 {
                let want = if j < 3 {
                    a[(i * 3 + j) * 4 + k]
                } else {
                    b[i * 4 + k]
                };
                assert_eq!(out[(i * 4 + j) * 4 + k], want);
            }
        }
    }
    assert!(concat_part(&b, &dims(&[2, 1, 4]), &mut out, &od, 1, 4).is_err());
}

#[test]
fn gather_copies_table_rows() {
    let table: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect(); // [4, 3]
    let td = dims(&[4, 3]);
    let idx = [2.0, 0.0, 3.0, 2.0];
    let mut out = vec![0.0; 12];
    gather(Weights::F32(&table), &td, &idx, &mut out).unwrap();
    let want: Vec<f32> = [2, 0, 3, 2]
        .iter()
        .flat_map(|r| table[r * 3..r * 3 + 3].to_vec())
        .collect();
    assert_eq!(out, want);
    // A 1-D table gives one value per index.
    let mut one = vec![0.0; 2];
    gather(
        Weights::F32(&[7.0, 8.0]),
        &dims(&[2]),
        &[1.0, 0.0],
        &mut one,
    )
    .unwrap();
    assert_eq!(one, [8.0, 7.0]);
    // -0.0 is index 0.
    gather(
        Weights::F32(&[7.0, 8.0]),
        &dims(&[2]),
        &[-0.0, 1.0],
        &mut one,
    )
    .unwrap();
    assert_eq!(one, [7.0, 8.0]);
}

#[test]
fn gather_rejects_bad_indices_without_writing() {
    let table: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let td = dims(&[4, 3]);
    for bad in [
        4.0,
        -1.0,
        1.5,
        0.25,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e30,
        16_777_217.0,
    ] {
        let idx = [1.0, bad];
        let mut out = vec![-9.0; 6];
        assert_eq!(
            gather(Weights::F32(&table), &td, &idx, &mut out),
            Err(GATHER_INDEX_ERR),
            "index {bad}"
        );
        assert!(out.iter().all(|v| *v == -9.0), "nothing written for {bad}");
    }
    // Sizes that disagree with the dims.
    let mut out = vec![0.0; 5];
    assert!(gather(Weights::F32(&table), &td, &[1.0, 2.0], &mut out).is_err());
    assert!(gather(Weights::F32(&table[..11]), &td, &[1.0], &mut out[..3]).is_err());
    assert!(gather(Weights::F32(&table), &dims(&[]), &[0.0], &mut out[..1]).is_err());
}

/// The largest error of `got` against the f64 function `want` over `xs`, in f32 ulps of
/// the exact value; where that is 0, `got` must be exactly 0.
fn worst_ulp(
    xs: impl IntoIterator<Item = f32>,
    got: impl Fn(f32) -> f32,
    want: impl Fn(f64) -> f64,
) -> f64 {
    let mut worst = 0f64;
    for x in xs {
        let (got, want) = (f64::from(got(x)), want(f64::from(x)));
        if want == 0.0 {
            assert_eq!(got, 0.0);
            continue;
        }
        worst = worst.max((got - want).abs() / (f64::from(f32::EPSILON) * want.abs()));
    }
    worst
}

#[test]
fn exp_nonpositive_is_accurate_and_propagates_nan() {
    // Every 997th f32 in [-87, 0) (every 997 * 1009th under Miri) plus the special points:
    // relative error <= 2 ulp.
    let stride = if cfg!(miri) { 997 * 1009 } else { 997 };
    let ys = core::iter::successors(Some(-87.0f32), |y| {
        let next = f32::from_bits(y.to_bits() - stride.min(y.to_bits() - 0x8000_0000).max(1));
        (next.to_bits() != 0x8000_0000).then_some(next)
    });
    let worst = worst_ulp(ys, exp_nonpositive, f64::exp);
    assert!(worst <= 2.0, "exp_nonpositive: {worst} ulp");
    assert_eq!(exp_nonpositive(0.0), 1.0);
    assert_eq!(exp_nonpositive(-0.0), 1.0);
    assert!(exp_nonpositive(f32::NAN).is_nan());
    assert!(exp_nonpositive(-1000.0) > 0.0 && exp_nonpositive(-1000.0) < 2e-38);
    assert!(exp_nonpositive(f32::NEG_INFINITY) < 2e-38);
    // The logistic family built on it: within 3 ulp of f64 over [-40, 40], exact limits.
    let worst = worst_ulp(
        (-40_000..=40_000)
            .step_by(if cfg!(miri) { 97 } else { 1 })
            .map(|i| i as f32 * 1e-3),
        |x| Unary::Sigmoid.apply(x),
        |x| 1.0 / (1.0 + (-x).exp()),
    );
    assert!(worst <= 3.0, "sigmoid: {worst} ulp");
    assert_eq!(Unary::Sigmoid.apply(100.0), 1.0);
    assert!(Unary::Silu.apply(f32::NAN).is_nan());
    assert_eq!(Unary::Silu.apply(0.0), 0.0);
}

#[test]
fn expm1_nonpositive_is_accurate() {
    // [-20, 0], dense near 0 (every 199th point under Miri).
    let ys = (0..=200_000)
        .step_by(if cfg!(miri) { 199 } else { 1 })
        .map(|i| -(i as f32) * 1e-4);
    let worst = worst_ulp(ys, expm1_nonpositive, f64::exp_m1);
    assert!(worst <= 3.0, "expm1: {worst} ulp");
    assert!(expm1_nonpositive(f32::NAN).is_nan());
    assert_eq!(expm1_nonpositive(-200.0), -1.0);
    // ELU / SELU keep x for x > 0 exactly, and NaN.
    assert_eq!(Unary::Elu { alpha: 1.0 }.apply(3.5), 3.5);
    assert!(Unary::Selu {
        alpha: 1.67,
        gamma: 1.05
    }
    .apply(f32::NAN)
    .is_nan());
}

#[test]
fn lazy_and_branch_free_exp_functions_agree_bitwise() {
    // Every 61st f32 bit pattern (both signs, subnormals, infinities, NaNs): the branching
    // form microcontrollers use (SCALAR_MATH) and the branch-free form of vectorizing hosts.
    // Under Miri every 4 194 301st (about 1000, each class still hit) and a quiet NaN.
    for bits in (0..=u32::MAX)
        .step_by(if cfg!(miri) { 4_194_301 } else { 61 })
        .chain([0, 0x8000_0000, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0000])
    {
        let x = f32::from_bits(bits);
        let same = same_bits;
        assert!(
            same(elu_as::<true>(x, 1.3), elu_as::<false>(x, 1.3)),
            "elu({x})"
        );
        assert!(
            same(sigmoid_as::<true>(x), sigmoid_as::<false>(x)),
            "sigmoid({x})"
        );
        let y = -abs(x);
        let (lazy, eager) = (
            expm1_nonpositive_as::<true>(y),
            expm1_nonpositive_as::<false>(y),
        );
        assert!(same(lazy, eager), "expm1({y})");
    }
}

#[test]
fn tanh_is_accurate() {
    // [-20, 20] (every 401st point under Miri).
    let xs = (-200_000..=200_000)
        .step_by(if cfg!(miri) { 401 } else { 1 })
        .map(|i| i as f32 * 1e-4);
    let worst = worst_ulp(xs, |x| Unary::Tanh.apply(x), f64::tanh);
    assert!(worst <= 4.0, "tanh: {worst} ulp");
    assert_eq!(Unary::Tanh.apply(30.0), 1.0);
    assert_eq!(Unary::Tanh.apply(-30.0), -1.0);
    assert_eq!(Unary::Tanh.apply(-0.0).to_bits(), (-0.0f32).to_bits());
    assert!(Unary::Tanh.apply(f32::NAN).is_nan());
    assert_eq!(Unary::Tanh.apply(f32::INFINITY), 1.0);
}

// ---- image ops (conv, pools, reductions, softmax, resize, pad) ------------------------------

/// Naive f64 ONNX Conv (`w` in ONNX layout `[M, C/g, KH, KW]`), the reference for `conv`.
#[allow(clippy::too_many_arguments)]
fn conv_ref(
    x: &[f32],
    [n, c, h, wi]: [usize; 4],
    w: &[f32],
    [m, cg, kh, kw]: [usize; 4],
    bias: Option<&[f32]>,
    g: usize,
    s: [usize; 2],
    d: [usize; 2],
    pb: [usize; 2],
    pe: [usize; 2],
) -> (Vec<f64>, [usize; 2]) {
    let oh = (h + pb[0] + pe[0] - d[0] * (kh - 1) - 1) / s[0] + 1;
    let ow = (wi + pb[1] + pe[1] - d[1] * (kw - 1) - 1) / s[1] + 1;
    let mg = m / g;
    let mut out = vec![0f64; n * m * oh * ow];
    for b in 0..n {
        for oc in 0..m {
            let grp = oc / mg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |bv| f64::from(bv[oc]));
                    for ci in 0..cg {
                        let ic = grp * cg + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * s[0] + ky * d[0]) as isize - pb[0] as isize;
                                let ix = (ox * s[1] + kx * d[1]) as isize - pb[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wi as isize {
                                    continue;
                                }
                                let xv = x[((b * c + ic) * h + iy as usize) * wi + ix as usize];
                                let wv = w[((oc * cg + ci) * kh + ky) * kw + kx];
                                acc += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    out[((b * m + oc) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    (out, [oh, ow])
}

fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * scale)
        .collect()
}

#[test]
fn conv_matches_a_naive_reference_with_groups_strides_dilations_and_pads() {
    let (n, c, h, wi, m, g) = (2, 4, 7, 6, 6, 2);
    let (kh, kw) = (3, 2);
    let x = ramp(n * c * h * wi, 0.1);
    let w = ramp(m * (c / g) * kh * kw, 0.05);
    let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.25 - 0.5).collect();
    let (s, d, pb, pe) = ([2, 1], [1, 2], [1, 0], [2, 1]);
    let (want, [oh, ow]) = conv_ref(
        &x,
        [n, c, h, wi],
        &w,
        [m, c / g, kh, kw],
        Some(&bias),
        g,
        s,
        d,
        pb,
        pe,
    );
    // Channel-last kernel for the runtime.
    let inner = (c / g) * kh * kw;
    let mut wt = vec![0f32; w.len()];
    for o in 0..m {
        for i in 0..inner {
            wt[i * m + o] = w[o * inner + i];
        }
    }
    let win = Window {
        stride: [2, 1],
        dilation: [1, 2],
        pad_begin: [1, 0],
        pad_end: [2, 1],
    };
    let mut out = vec![0f32; want.len()];
    let xd = Dims::new(&[n, c, h, wi]).unwrap();
    let wd = Dims::new(&[c / g, kh, kw, m]).unwrap();
    let w = Weights::F32(&wt);
    let od = Dims::new(&[n, m, oh, ow]).unwrap();
    conv(
        &x,
        &xd,
        w,
        &wd,
        Some(Weights::F32(&bias)),
        g,
        &win,
        &mut out,
        &od,
    )
    .unwrap();
    for (a, b) in out.iter().zip(&want) {
        assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b}");
    }
    // Wrong output dims are an error, not a panic.
    let bad = Dims::new(&[n, m, oh + 1, ow]).unwrap();
    let mut big = vec![0f32; n * m * (oh + 1) * ow];
    assert!(conv(
        &x,
        &xd,
        w,
        &wd,
        Some(Weights::F32(&bias)),
        g,
        &win,
        &mut big,
        &bad
    )
    .is_err());
    assert!(conv(
        &x,
        &xd,
        w,
        &wd,
        Some(Weights::F32(&bias[..3])),
        g,
        &win,
        &mut out,
        &od
    )
    .is_err());
}

#[test]
fn conv_1d_is_the_2d_kernel_with_one_row() {
    let x = ramp(2 * 9, 0.2);
    let w = ramp(3 * 2 * 3, 0.1); // [M=3, C=2, K=3]
    let (want, [_, ow]) = conv_ref(
        &x,
        [1, 2, 1, 9],
        &w,
        [3, 2, 1, 3],
        None,
        1,
        [1, 2],
        [1, 1],
        [0, 1],
        [0, 1],
    );
    let mut wt = vec![0f32; w.len()];
    for o in 0..3 {
        for i in 0..6 {
            wt[i * 3 + o] = w[o * 6 + i];
        }
    }
    let win = Window {
        stride: [1, 2],
        dilation: [1, 1],
        pad_begin: [0, 1],
        pad_end: [0, 1],
    };
    let mut out = vec![0f32; 3 * ow];
    conv(
        &x,
        &Dims::new(&[1, 2, 9]).unwrap(),
        Weights::F32(&wt),
        &Dims::new(&[2, 3, 3]).unwrap(),
        None,
        1,
        &win,
        &mut out,
        &Dims::new(&[1, 3, ow]).unwrap(),
    )
    .unwrap();
    for (a, b) in out.iter().zip(&want) {
        assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn conv_transpose_matches_a_naive_scatter() {
    // x [1, 2, 3, 3], w [M=4, C/g=1, 2, 2] with groups 2, stride 2, out_pad 1.
    let (c, h, m, g, k) = (2, 3, 4, 2, 2);
    let x = ramp(c * h * h, 0.3);
    let w = ramp(m * (c / g) * k * k, 0.2);
    let (s, op) = (2, 1);
    let o = s * (h - 1) + op + (k - 1) + 1;
    let mut want = vec![0f64; m * o * o];
    let mg = m / g;
    for oc in 0..m {
        let grp = oc / mg;
        for ci in 0..c / g {
            let ic = grp * (c / g) + ci;
            for iy in 0..h {
                for ix in 0..h {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (oy, ox) = (iy * s + ky, ix * s + kx);
                            want[(oc * o + oy) * o + ox] += f64::from(x[(ic * h + iy) * h + ix])
                                * f64::from(w[((oc * (c / g) + ci) * k + ky) * k + kx]);
                        }
                    }
                }
            }
        }
    }
    let win = Window {
        stride: [2, 2],
        ..Window::UNIT
    };
    let mut out = vec![0f32; want.len()];
    conv_transpose(
        &x,
        &Dims::new(&[1, c, h, h]).unwrap(),
        Weights::F32(&w),
        &Dims::new(&[m, c / g, k, k]).unwrap(),
        None,
        g,
        &win,
        [1, 1],
        &mut out,
        &Dims::new(&[1, m, o, o]).unwrap(),
    )
    .unwrap();
    for (a, b) in out.iter().zip(&want) {
        assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn pools_count_padding_as_onnx_does() {
    // x [1, 1, 3, 3] = 1..9, 2x2 window, stride 2, pad 1 before: windows over the padded 5x5.
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let xd = Dims::new(&[1, 1, 3, 3]).unwrap();
    let od = Dims::new(&[1, 1, 2, 2]).unwrap();
    let win = Window {
        stride: [2, 2],
        dilation: [1, 1],
        pad_begin: [1, 1],
        pad_end: [0, 0],
    };
    let mut out = [0f32; 4];
    for (kind, want) in [
        (PoolKind::Max, [1.0, 3.0, 7.0, 9.0]),
        (PoolKind::AverageExcludePad, [1.0, 2.5, 5.5, 7.0]),
        (PoolKind::AverageIncludePad, [0.25, 1.25, 2.75, 7.0]),
    ] {
        pool(kind, &x, &xd, [2, 2], &win, &mut out, &od).unwrap();
        assert_eq!(out, want, "{kind:?}");
    }
    // A 3x3 output is neither the floor nor the ceil window count.
    let mut big = [0f32; 9];
    let bad = Dims::new(&[1, 1, 3, 3]).unwrap();
    assert!(pool(PoolKind::Max, &x, &xd, [2, 2], &win, &mut big, &bad).is_err());
}

#[test]
fn reductions_fold_the_axis_range_in_order() {
    // x [2, 3, 2]: reduce axes 1..2 (the 3).
    let x: Vec<f32> = vec![
        1.0, -2.0, 3.0, 4.0, -5.0, 6.0, 0.5, 1.5, 2.5, -3.5, 4.5, 0.0,
    ];
    let xd = Dims::new(&[2, 3, 2]).unwrap();
    let od = Dims::new(&[2, 1, 2]).unwrap();
    let col = |o: usize, i: usize| -> Vec<f64> {
        (0..3).map(|l| f64::from(x[(o * 3 + l) * 2 + i])).collect()
    };
    for kind in ReduceKind::ALL {
        let mut out = [0f32; 4];
        reduce(kind, &x, &xd, 1, 2, &mut out, &od).unwrap();
        for o in 0..2 {
            for i in 0..2 {
                let v = col(o, i);
                let want = match kind {
                    ReduceKind::Sum => v.iter().sum(),
                    ReduceKind::Mean => v.iter().sum::<f64>() / 3.0,
                    ReduceKind::Max => v.iter().cloned().fold(f64::MIN, f64::max),
                    ReduceKind::Min => v.iter().cloned().fold(f64::MAX, f64::min),
                    ReduceKind::Prod => v.iter().product(),
                    ReduceKind::SumSquare => v.iter().map(|a| a * a).sum(),
                    ReduceKind::L1 => v.iter().map(|a| a.abs()).sum(),
                    ReduceKind::L2 => v.iter().map(|a| a * a).sum::<f64>().sqrt(),
                    ReduceKind::LogSum => v.iter().sum::<f64>().ln(),
                    ReduceKind::LogSumExp => v.iter().map(|a| a.exp()).sum::<f64>().ln(),
                };
                let got = f64::from(out[o * 2 + i]);
                if want.is_nan() {
                    assert!(got.is_nan(), "{kind:?}");
                } else {
                    assert!(
                        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "{kind:?}: {got} vs {want}"
                    );
                }
            }
        }
    }
    let mut out = [0f32; 6];
    assert!(reduce(
        ReduceKind::Sum,
        &x,
        &xd,
        1,
        2,
        &mut out,
        &Dims::new(&[2, 3, 1]).unwrap()
    )
    .is_err());
    let nan = [f32::NAN, 1.0, 2.0];
    let mut one = [0f32; 1];
    reduce(
        ReduceKind::Max,
        &nan,
        &Dims::new(&[3]).unwrap(),
        0,
        1,
        &mut one,
        &Dims::new(&[1]).unwrap(),
    )
    .unwrap();
    assert!(one[0].is_nan());
}

#[test]
fn softmax_rows_sum_to_one_and_log_softmax_is_their_log() {
    let x = [1.0f32, 2.0, 3.0, -1.0, 0.0, 1000.0];
    let xd = Dims::new(&[2, 3]).unwrap();
    let mut p = [0f32; 6];
    softmax(&x, &xd, 1, 2, false, &mut p, &xd).unwrap();
    let mut lp = [0f32; 6];
    softmax(&x, &xd, 1, 2, true, &mut lp, &xd).unwrap();
    for r in 0..2 {
        let s: f32 = p[r * 3..r * 3 + 3].iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
    }
    let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).collect();
    let z: f64 = e.iter().sum();
    for i in 0..3 {
        assert!((f64::from(p[i]) - e[i] / z).abs() < 1e-6);
        assert!((f64::from(lp[i]) - (e[i] / z).ln()).abs() < 1e-5);
    }
    assert_eq!(p[5], 1.0); // no overflow for 1000
    assert_eq!(p[3], 0.0);
}

#[test]
fn resize_nearest_repeats_and_linear_align_corners_interpolates() {
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let xd = Dims::new(&[1, 1, 2, 2]).unwrap();
    let od = Dims::new(&[1, 1, 4, 4]).unwrap();
    let mut out = [0f32; 16];
    let of_x = |mode, coord, scales, out: &mut [f32], od: &Dims| {
        resize(mode, coord, scales, &x, &xd, out, od)
    };
    of_x(
        ResizeMode::NearestFloor,
        CoordMode::Asymmetric,
        [2.0, 2.0],
        &mut out,
        &od,
    )
    .unwrap();
    assert_eq!(out[..8], [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
    let od3 = Dims::new(&[1, 1, 3, 3]).unwrap();
    let mut o3 = [0f32; 9];
    of_x(
        ResizeMode::Linear,
        CoordMode::AlignCorners,
        [1.5, 1.5],
        &mut o3,
        &od3,
    )
    .unwrap();
    assert_eq!(o3, [1.0, 1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0]);
    // half_pixel bilinear 2x: the first output row of [[1, 2], [3, 4]] is 1, 1.25, 1.75, 2.
    let half_pixel = CoordMode::HalfPixel;
    of_x(ResizeMode::Linear, half_pixel, [2.0, 2.0], &mut out, &od).unwrap();
    assert_eq!(out[..4], [1.0, 1.25, 1.75, 2.0]);
    assert!(of_x(ResizeMode::Linear, half_pixel, [0.0, 2.0], &mut out, &od).is_err());
}

#[test]
fn pad_modes_fill_as_numpy() {
    let x = [1.0f32, 2.0, 3.0];
    let xd = Dims::new(&[1, 3]).unwrap();
    let od = Dims::new(&[1, 7]).unwrap();
    let mut out = [0f32; 7];
    let cases = [
        (PadMode::Constant(9.0), [9.0, 9.0, 1.0, 2.0, 3.0, 9.0, 9.0]),
        (PadMode::Reflect, [3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]),
        (PadMode::Edge, [1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0]),
        (PadMode::Wrap, [2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0]),
    ];
    for (mode, want) in cases {
        pad(mode, &[0, 2], &[0, 2], &x, &xd, &mut out, &od).unwrap();
        assert_eq!(out, want, "{mode:?}");
    }
    // Leading-axis pads and a wrong output shape.
    let mut o2 = [0f32; 9];
    pad(
        PadMode::Constant(0.0),
        &[1, 0],
        &[1, 0],
        &x,
        &xd,
        &mut o2,
        &Dims::new(&[3, 3]).unwrap(),
    )
    .unwrap();
    assert_eq!(o2, [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0]);
    assert!(pad(PadMode::Edge, &[0, 1], &[0, 1], &x, &xd, &mut out, &od).is_err());
}

/// The host's im2col + GEMM convolution gives the direct kernel's bits: random geometries
/// (strides, dilations, asymmetric pads, 1-D and 2-D, channel and pixel tails, panels split
/// inside an image and across images), with and without a bias, with zero biases, f16
/// weights, and the two cases it must leave to the direct kernel (a `−0.0` bias, a
/// non-finite weight).
#[test]
fn conv_as_gemm_gives_the_direct_kernels_bits() {
    let mut g = Lcg(7);
    let cases = if cfg!(miri) { 3 } else { 60 };
    let mut taken = 0;
    for case in 0..cases {
        // Mostly small; every 10th has K·pixels large enough to split the panel.
        let big = case % 10 == 9;
        let one_d = case % 4 == 3;
        let n = 1 + g.below(4);
        let c = if big { 64 } else { 1 + g.below(9) };
        let m = 1 + g.below(if big { 12 } else { 21 });
        let (kh, kw) = if one_d {
            (1, 1 + g.below(5))
        } else {
            (1 + g.below(3), 1 + g.below(3))
        };
        let (h, wi) = if one_d {
            (1, 5 + g.below(30))
        } else if big {
            (12, 12)
        } else {
            (2 + g.below(9), 2 + g.below(9))
        };
        let pick = |g: &mut Lcg, hi: usize| g.below(hi) as u16;
        let win = Window {
            stride: [1 + pick(&mut g, 2), 1 + pick(&mut g, 2)],
            dilation: [1 + pick(&mut g, 2), 1 + pick(&mut g, 2)],
            pad_begin: [pick(&mut g, 3), pick(&mut g, 3)],
            pad_end: [pick(&mut g, 3), pick(&mut g, 3)],
        };
        let win = if one_d {
            Window {
                stride: [1, win.stride[1]],
                dilation: [1, win.dilation[1]],
                pad_begin: [0, win.pad_begin[1]],
                pad_end: [0, win.pad_end[1]],
            }
        } else {
            win
        };
        let (Some(oh), Some(ow)) = (win.out_len(0, h, kh, false), win.out_len(1, wi, kw, false))
        else {
            continue;
        };
        let x = g.vec(n * c * h * wi);
        let w = g.vec(c * kh * kw * m);
        let mut bias = g.vec(m);
        if case % 3 == 0 {
            bias[0] = 0.0;
        }
        let (xd, wd, od) = if one_d {
            (
                Dims::new(&[n, c, wi]).unwrap(),
                Dims::new(&[c, kw, m]).unwrap(),
                Dims::new(&[n, m, ow]).unwrap(),
            )
        } else {
            (
                Dims::new(&[n, c, h, wi]).unwrap(),
                Dims::new(&[c, kh, kw, m]).unwrap(),
                Dims::new(&[n, m, oh, ow]).unwrap(),
            )
        };
        let b = (case % 5 != 4).then_some(Weights::F32(&bias));
        let run = |f: &dyn Fn(&mut [f32]) -> Result<(), Error>| {
            let mut o = vec![f32::NAN; n * m * oh * ow];
            f(&mut o).unwrap();
            o
        };
        let direct =
            run(&|o| conv::conv_direct(&x, &xd, Weights::F32(&w), &wd, b, 1, &win, o, &od));
        let gemm = run(&|o| {
            conv_gemm::conv(&x, &xd, Weights::F32(&w), &wd, b, 1, &win, o, &od)
                .expect("the panel path applies")
        });
        taken += 1;
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&gemm),
            bits(&direct),
            "case {case}: n{n} c{c} m{m} {h}x{wi} k{kh}x{kw} {win:?}"
        );
        // The public entry point takes the panel path and so gives the same bits.
        let public = run(&|o| conv(&x, &xd, Weights::F32(&w), &wd, b, 1, &win, o, &od));
        assert_eq!(bits(&public), bits(&direct));
        #[cfg(feature = "weights-f16")]
        if case % 7 == 0 {
            let w16: Vec<half::f16> = w.iter().map(|v| half::f16::from_f32(*v)).collect();
            let wide: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
            let want =
                run(&|o| conv::conv_direct(&x, &xd, Weights::F32(&wide), &wd, b, 1, &win, o, &od));
            let got = run(&|o| conv(&x, &xd, Weights::F16(&w16), &wd, b, 1, &win, o, &od));
            assert_eq!(bits(&got), bits(&want), "f16 case {case}");
        }
    }
    assert!(taken >= cases / 2, "only {taken} of {cases} cases ran");

    // A −0.0 bias and a non-finite weight are left to the direct kernel.
    let x = [1.0f32, -2.0, 3.0, 0.5];
    let (xd, wd, od) = (
        Dims::new(&[1, 1, 4]).unwrap(),
        Dims::new(&[1, 1, 2]).unwrap(),
        Dims::new(&[1, 2, 4]).unwrap(),
    );
    let declined = |w: &[f32], bias: Option<&[f32]>, groups: usize| {
        let mut o = [0f32; 8];
        let b = bias.map(Weights::F32);
        let (win, w) = (Window::UNIT, Weights::F32(w));
        conv_gemm::conv(&x, &xd, w, &wd, b, groups, &win, &mut o, &od).is_none()
    };
    let w = [0.5f32, 2.0];
    assert!(declined(&w, Some(&[-0.0, 1.0]), 1));
    assert!(declined(&[f32::INFINITY, 2.0], None, 1));
    // Grouped convolutions too.
    assert!(declined(&w, None, 2));
    // And the same call with none of those takes the panel path.
    assert!(!declined(&w, Some(&[0.0, 1.0]), 1));
}

/// `norm` against the chain of kernels the exporter fuses into it (ReduceSum, Mul by 1/n,
/// Sub, Square, ReduceMean, Add eps, Rsqrt, Mul), bit for bit: groups last (contiguous) and
/// in the middle (strided), large offsets (cancellation), and a group of one value.
#[test]
fn norm_gives_the_bits_of_the_decomposed_chain() {
    let mut g = Lcg(7);
    for (shape, start, end) in [
        (vec![3usize, 4, 16], 2usize, 3usize),
        (vec![2, 8, 4, 4], 2, 4),
        (vec![2, 5, 3], 1, 2),
        (vec![4, 1], 1, 2),
        (vec![1, 6, 7, 2], 1, 3),
    ] {
        let d = dims(&shape);
        let n: usize = shape.iter().product();
        let mut kd = shape.clone();
        kd[start..end].iter_mut().for_each(|v| *v = 1);
        let k = dims(&kd);
        let kn: usize = kd.iter().product();
        let len: usize = shape[start..end].iter().product();
        for (offset, eps) in [(0.0f32, 1e-5f32), (1000.0, 1e-6), (-3.0, 0.0)] {
            let x: Vec<f32> = g.vec(n).iter().map(|v| v + offset).collect();
            let mut got = vec![0f32; n];
            norm(&x, &d, start, end, eps, &mut got, &d).unwrap();
            // The decomposed chain.
            let mut sum = vec![0f32; kn];
            reduce(ReduceKind::Sum, &x, &d, start, end, &mut sum, &k).unwrap();
            let inv = [1.0 / len as f32];
            let one = dims(&[1]);
            let mut mu = vec![0f32; kn];
            binary(Binary::Mul, &sum, &k, &inv, &one, &mut mu, &k).unwrap();
            let mut c = vec![0f32; n];
            binary(Binary::Sub, &x, &d, &mu, &k, &mut c, &d).unwrap();
            let mut sq = vec![0f32; n];
            unary(Unary::Square, &c, &mut sq).unwrap();
            let mut m = vec![0f32; kn];
            reduce(ReduceKind::Mean, &sq, &d, start, end, &mut m, &k).unwrap();
            let mut v = vec![0f32; kn];
            binary(Binary::Add, &m, &k, &[eps], &one, &mut v, &k).unwrap();
            let mut r = vec![0f32; kn];
            unary(Unary::Rsqrt, &v, &mut r).unwrap();
            let mut want = vec![0f32; n];
            binary(Binary::Mul, &c, &d, &r, &k, &mut want, &d).unwrap();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    same_bits(*a, *b),
                    "{shape:?} {start}..{end} [{i}]: {a} vs {b}"
                );
            }
        }
    }
    // Shapes that disagree are an error, not a panic.
    let d = dims(&[2, 3]);
    let mut out = [0f32; 5];
    assert!(norm(&[0.0; 6], &d, 1, 2, 0.0, &mut out, &dims(&[5])).is_err());
}
