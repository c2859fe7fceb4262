//! The full-integer kernels against a reference written from the definition (module docs of
//! `int8.rs`): activations quantized one by one, an `i64` sum, then the f32 rescale.
#![allow(clippy::needless_range_loop)] // the references index like the definition

use super::int8::{conv_q8, conv_q8_blocked, dense_q8, dense_q8_blocked, scaled_code};
use super::int8_packed::{kernel, pack_rows, widen_rows, GROUP, KC, TILE};
use super::lut::quantize_fast;
use super::weights::{Int8Weights, Scales, Weights};
use super::{Dims, Window};
use std::vec;
use std::vec::Vec;

/// Deterministic values in [-2, 2).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn q_ref(x: f32, s: f32) -> i64 {
    let r = (x * (1.0 / s)).round();
    r.clamp(-127.0, 127.0) as i64
}

/// int8 weights `[rows, len]` with per-row scales (as a quantizer would make them).
fn weights(seed: u64, rows: usize, len: usize) -> (Vec<i8>, Vec<f32>) {
    let q = values(seed, rows * len)
        .iter()
        .map(|v| (v * 63.5) as i8)
        .collect();
    let s = (0..rows).map(|r| 0.01 + r as f32 * 1e-3).collect();
    (q, s)
}

#[test]
fn dense_q8_is_the_exact_integer_sum_rescaled() {
    // k 700 > one chunk of 512, n 40 > one tile of 32, rows 3. Under Miri (scripts/miri.sh,
    // ~10^5 times slower) the chunk and the tile are passed in separate, narrower cases.
    let cases: &[(usize, usize)] = if cfg!(miri) {
        &[(5, 3), (8, 33), (520, 1)]
    } else {
        &[(5, 3), (64, 64), (700, 40)]
    };
    for &(k, n) in cases {
        let rows = 3;
        let mut a = values(k as u64, rows * k);
        a[1] = 40.0; // beyond the range: saturates
        let (wq, ws) = weights(7, n, k);
        let bias = values(9, n);
        let s_x = 2.0 / 127.0;
        let w = Int8Weights {
            values: &wq,
            scales: Scales::F32(&ws),
            inner: k,
        };
        let mut out = vec![0f32; rows * n];
        dense_q8(&a, w, Some(Weights::F32(&bias)), s_x, k, n, &mut out).unwrap();
        for r in 0..rows {
            for c in 0..n {
                let acc: i64 = (0..k)
                    .map(|i| q_ref(a[r * k + i], s_x) * i64::from(wq[c * k + i]))
                    .sum();
                let want = (acc as f32) * (s_x * ws[c]) + bias[c];
                assert_eq!(
                    out[r * n + c].to_bits(),
                    want.to_bits(),
                    "k {k} row {r} col {c}"
                );
            }
        }
    }
}

#[test]
fn dense_q8_nan_rows_and_bad_arguments() {
    let (k, n) = (4, 3);
    let mut a = values(1, 2 * k);
    a[5] = f32::NAN;
    let (wq, ws) = weights(2, n, k);
    let bf16: Vec<u16> = ws.iter().map(|s| (s.to_bits() >> 16) as u16).collect();
    let w = Int8Weights {
        values: &wq,
        scales: Scales::Bf16(&bf16),
        inner: k,
    };
    let mut out = vec![0f32; 2 * n];
    dense_q8(&a, w, None, 0.02, k, n, &mut out).unwrap();
    assert!(out[..n].iter().all(|v| v.is_finite()));
    assert!(
        out[n..].iter().all(|v| v.is_nan()),
        "the NaN row is NaN, not 0"
    );
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(dense_q8(&a, w, None, bad, k, n, &mut out).is_err(), "{bad}");
    }
    assert!(dense_q8(&a, w, None, 0.02, k, n + 1, &mut out).is_err());
    assert!(dense_q8(&a[1..], w, None, 0.02, k, n, &mut out).is_err());
}

#[test]
fn conv_q8_is_the_exact_integer_sum_rescaled() {
    // 2 images, C 4 in 2 groups, M 6, 3x3 kernel, stride 2 x 1, dilation 1 x 2, pads; and a
    // a reduction longer than one chunk (C 72 x 3 x 3 = 648). Under Miri (~10^5 times
    // slower) 3 input rows and M 2 (one per group), and one output position of the second.
    let cases = if cfg!(miri) {
        [
            (2, 4, 3, 7, 2, 2, 3, 3, [2, 1], [1, 2], [1, 0], [2, 1]),
            (1, 72, 1, 1, 1, 1, 3, 3, [1, 1], [1, 1], [1, 1], [1, 1]),
        ]
    } else {
        [
            (2, 4, 5, 7, 6, 2, 3, 3, [2, 1], [1, 2], [1, 0], [2, 1]),
            (1, 72, 3, 3, 40, 1, 3, 3, [1, 1], [1, 1], [1, 1], [1, 1]),
        ]
    };
    for (n, c, h, wi, m, g, kh, kw, stride, dilation, pb, pe) in cases {
        let win = Window {
            stride,
            dilation,
            pad_begin: pb,
            pad_end: pe,
        };
        let oh = win.out_len(0, h, kh, false).unwrap();
        let ow = win.out_len(1, wi, kw, false).unwrap();
        let x = values(3, n * c * h * wi);
        let cg = c / g;
        let red = cg * kh * kw;
        let (wq, ws) = weights(4, m, red);
        let bias = values(5, m);
        let s_x = 1.5 / 127.0;
        let w = Int8Weights {
            values: &wq,
            scales: Scales::F32(&ws),
            inner: red,
        };
        let mut out = vec![0f32; n * m * oh * ow];
        conv_q8(
            &x,
            &Dims::new(&[n, c, h, wi]).unwrap(),
            w,
            &Dims::new(&[m, cg, kh, kw]).unwrap(),
            Some(Weights::F32(&bias)),
            s_x,
            g,
            &win,
            &mut out,
            &Dims::new(&[n, m, oh, ow]).unwrap(),
        )
        .unwrap();
        let mg = m / g;
        for b in 0..n {
            for oc in 0..m {
                let grp = oc / mg;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0i64;
                        for ci in 0..cg {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * stride[0] as usize + ky * dilation[0] as usize)
                                        as i64
                                        - pb[0] as i64;
                                    let ix = (ox * stride[1] as usize + kx * dilation[1] as usize)
                                        as i64
                                        - pb[1] as i64;
                                    if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wi as i64 {
                                        continue;
                                    }
                                    let xi = ((b * c + grp * cg + ci) * h + iy as usize) * wi
                                        + ix as usize;
                                    let wv = wq[((oc * cg + ci) * kh + ky) * kw + kx];
                                    acc += q_ref(x[xi], s_x) * i64::from(wv);
                                }
                            }
                        }
                        let want = (acc as f32) * (s_x * ws[oc]) + bias[oc];
                        let got = out[((b * m + oc) * oh + oy) * ow + ox];
                        assert_eq!(got.to_bits(), want.to_bits(), "c {c} oc {oc} ({oy},{ox})");
                    }
                }
            }
        }
    }
}

/// The Dense definition: `a [rows, k]` quantized by `s_x`, an `i64` sum per output, rescaled.
fn dense_reference(a: &[f32], wq: &[i8], ws: &[f32], bias: &[f32], s_x: f32, k: usize) -> Vec<f32> {
    let n = ws.len();
    let rows = a.len() / k;
    let mut out = vec![0f32; rows * n];
    for r in 0..rows {
        let nan = a[r * k..(r + 1) * k].iter().any(|v| v.is_nan());
        for c in 0..n {
            let acc: i64 = (0..k)
                .map(|i| q_ref(a[r * k + i], s_x) * i64::from(wq[c * k + i]))
                .sum();
            out[r * n + c] = if nan {
                f32::NAN
            } else {
                (acc as f32) * (s_x * ws[c]) + bias[c]
            };
        }
    }
    out
}

#[test]
fn blocked_dense_is_the_exact_integer_sum_rescaled() {
    // Reductions with every tail length (1..=3 past a multiple of 4), one quad, a 4-quad
    // turn plus remainders, one chunk exactly and several chunks (KC = 128); rows past one
    // group of 16 and odd row counts; columns past one tile of 32 and odd column counts.
    let full = [
        (1, 1, 1),
        (3, 2, 5),
        (4, 3, 1),
        (5, 7, 33),
        (17, 64, 17),
        (64, 32, 64),
        (KC, 2, 3),
        (KC + 1, 19, 2 * TILE + 1),
        (2 * KC + 7, GROUP + 3, 6),
        (700, 40, 5),
    ];
    // Under Miri (~10^5 times slower) the same boundaries, each with the other sizes small.
    let miri = [
        (1, 1, 1),
        (3, 2, 5),
        (4, 3, 1),
        (5, 7, 3),
        (2, TILE + 1, GROUP + 1),
        (KC + 1, 2, 3),
        (2 * KC + 7, 1, 3),
    ];
    let cases: &[(usize, usize, usize)] = if cfg!(miri) { &miri } else { &full };
    for &(k, n, rows) in cases {
        let mut a = values(k as u64 * 31 + n as u64, rows * k);
        a[0] = 40.0; // saturates
        a[rows * k - 1] = -f32::INFINITY; // saturates too
        if rows > 2 {
            a[k + k / 2] = f32::NAN; // row 1 is NaN
        }
        let (wq, ws) = weights(k as u64 + 7, n, k);
        let bias = values(9, n);
        let s_x = 2.0 / 127.0;
        let w = Int8Weights {
            values: &wq,
            scales: Scales::F32(&ws),
            inner: k,
        };
        let want = dense_reference(&a, &wq, &ws, &bias, s_x, k);
        for blocked in [false, true] {
            let mut out = vec![0f32; rows * n];
            let run = if blocked { dense_q8_blocked } else { dense_q8 };
            run(&a, w, Some(Weights::F32(&bias)), s_x, k, n, &mut out).unwrap();
            for (i, (g, e)) in out.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    e.to_bits(),
                    "blocked {blocked} k {k} n {n} rows {rows}: row {} col {}",
                    i / n,
                    i % n
                );
            }
        }
    }
}

#[test]
fn lut_codes_give_the_dense_the_bits_of_the_lut_values() {
    use super::int8::{dense_q8_codes, dense_q8_codes_blocked, lut_codes_for};
    use super::lut::{lut, lut_codes, LUT_ENTRIES};
    // A table with ±∞ entries (they saturate like any large value) and one past the
    // Dense's range; inputs with ties, NaN rows, ±∞.
    let mut table: Vec<f32> = (0..LUT_ENTRIES)
        .map(|j| libm::tanhf((j as f32 - 127.0) / 40.0) * 1.3)
        .collect();
    table[0] = -f32::INFINITY;
    table[254] = f32::INFINITY;
    table[200] = 9.0;
    let lut_scale = 3.0 / 127.0;
    let table = Weights::F32(&table);
    for &(k, n, rows) in &[
        (1, 3, 1),
        (5, 7, 33),
        (KC + 1, 19, GROUP + 3),
        (130, 2 * TILE + 1, 2),
    ] {
        let mut x = values(k as u64 * 7 + n as u64, rows * k);
        x[0] = f32::INFINITY;
        x[rows * k - 1] = -f32::INFINITY;
        x[rows * k / 2] = 1.5 * lut_scale; // a tie
        if rows > 2 {
            x[k + k / 2] = f32::NAN; // row 1 is NaN
            x[2 * k] = f32::NAN; // so is row 2, at its first value
        }
        let (wq, ws) = weights(k as u64 + 3, n, k);
        let w = Int8Weights {
            values: &wq,
            scales: Scales::F32(&ws),
            inner: k,
        };
        let bias = values(5, n);
        let s_x = 1.1 / 127.0;
        // The two nodes apart: f32 values, quantized by the Dense.
        let mut y = vec![0f32; rows * k];
        lut(&x, table, lut_scale, &mut y).unwrap();
        let mut want = vec![0f32; rows * n];
        dense_q8(&y, w, Some(Weights::F32(&bias)), s_x, k, n, &mut want).unwrap();
        let codes = lut_codes_for(table, lut_scale, s_x).unwrap().unwrap();
        let mut c = vec![0f32; rows * k];
        lut_codes(&x, &codes, k, &mut c).unwrap();
        for blocked in [false, true] {
            let run = if blocked {
                dense_q8_codes_blocked
            } else {
                dense_q8_codes
            };
            let mut got = vec![0f32; rows * n];
            run(&c, w, Some(Weights::F32(&bias)), s_x, k, n, &mut got).unwrap();
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    e.to_bits(),
                    "blocked {blocked} k {k} row {} col {}",
                    i / n,
                    i % n
                );
            }
        }
    }
    // A table with a NaN has no codes (the pair runs apart).
    let mut nan_table = vec![0.5f32; LUT_ENTRIES];
    nan_table[3] = f32::NAN;
    assert!(lut_codes_for(Weights::F32(&nan_table), 0.1, 0.1)
        .unwrap()
        .is_none());
}

#[test]
fn blocked_dense_without_bias_and_with_bf16_scales() {
    let (k, n, rows) = (9, 5, 3);
    let a = values(4, rows * k);
    let (wq, ws) = weights(5, n, k);
    let bf16: Vec<u16> = ws.iter().map(|s| (s.to_bits() >> 16) as u16).collect();
    let w = Int8Weights {
        values: &wq,
        scales: Scales::Bf16(&bf16),
        inner: k,
    };
    let mut a_out = vec![0f32; rows * n];
    let mut b_out = vec![0f32; rows * n];
    dense_q8(&a, w, None, 0.03, k, n, &mut a_out).unwrap();
    dense_q8_blocked(&a, w, None, 0.03, k, n, &mut b_out).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a_out), bits(&b_out));
    assert!(dense_q8_blocked(&a, w, None, 0.0, k, n, &mut b_out).is_err());
    assert!(dense_q8_blocked(&a[1..], w, None, 0.03, k, n, &mut b_out).is_err());
}

#[test]
fn fast_quantizer_is_round_half_away_clamped() {
    // Every f32 near the rounding boundaries of the int8 range, the extremes and NaN.
    let reference = |y: f32| -> i32 {
        let r = y.round();
        if r.is_nan() {
            0
        } else {
            r.clamp(-127.0, 127.0) as i32
        }
    };
    let mut ys = vec![
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        -f32::INFINITY,
        f32::MAX,
        f32::MIN,
    ];
    for i in -130i32..=130 {
        for frac in [0.0f32, 0.5] {
            let c = i as f32 + frac;
            let mut up = c;
            let mut down = c;
            for _ in 0..4 {
                ys.extend([up, down]);
                up = f32::from_bits(if up >= 0.0 {
                    up.to_bits() + 1
                } else {
                    up.to_bits() - 1
                });
                down = f32::from_bits(if down > 0.0 {
                    down.to_bits() - 1
                } else {
                    down.to_bits() + 1
                });
            }
        }
    }
    // And a stride through all bit patterns (every 401st of it under Miri, ~10^5 times slower).
    ys.extend(
        (0..u32::MAX / 9973)
            .step_by(if cfg!(miri) { 401 } else { 1 })
            .map(|i| f32::from_bits(i * 9973)),
    );
    for y in ys {
        assert_eq!(quantize_fast(y), reference(y), "{y:e} ({:#x})", y.to_bits());
    }
}

#[test]
fn packing_widening_and_kernel_follow_the_layout() {
    // Two rows and two weight rows of 7 values: the packed words, and the 2 x 2 sums.
    let xa = [1.0f32, -2.0, 3.0, -4.0, 5.0, 6.0, -7.0];
    let xb = [0.5f32, 1.5, -2.5, 0.0, 10.0, -10.0, 2.0];
    let mut act = [0u32; 8];
    let nan = pack_rows(|v| scaled_code(v, 1.0), &xa, Some(&xb), &mut act);
    assert_eq!(nan, [false, false]);
    let h = |lo: i32, hi: i32| (lo as u32 & 0xFFFF) | ((hi as u32) << 16);
    // Quad 0: a(0,2) b(0,2) a(1,3) b(1,3); round(0.5) = 1, round(-2.5) = -3.
    assert_eq!(&act[..4], &[h(1, 3), h(1, -3), h(-2, -4), h(2, 0)]);
    // Quad 1: values 4..7, the 8th is zero.
    assert_eq!(&act[4..], &[h(5, -7), h(10, 2), h(6, 0), h(-10, 0)]);
    let wa: [i8; 7] = [1, 2, 3, 4, 5, 6, 7];
    let wb: [i8; 7] = [-1, -2, -3, -4, -5, -6, -128];
    let mut w = [0u32; 8];
    widen_rows(&wa, Some(&wb), &mut w);
    assert_eq!(&w[..4], &[h(1, 3), h(-1, -3), h(2, 4), h(-2, -4)]);
    assert_eq!(&w[4..], &[h(5, 7), h(-5, -128), h(6, 0), h(-6, 0)]);
    let mut acc = [[1, 2, 3, 4]];
    kernel(&act, &w, 2, 1, &mut acc);
    let dot = |x: &[f32], y: &[i8]| -> i32 {
        x.iter()
            .zip(y)
            .map(|(a, b)| q_ref(*a, 1.0) as i32 * i32::from(*b))
            .sum()
    };
    assert_eq!(
        acc,
        [[
            1 + dot(&xa, &wa),
            2 + dot(&xa, &wb),
            3 + dot(&xb, &wa),
            4 + dot(&xb, &wb)
        ]]
    );
    // A missing second row or column is zeros; a NaN is reported and quantizes to 0.
    let mut one = [7u32; 4];
    let nan = pack_rows(
        |v| scaled_code(v, 1.0),
        &[f32::NAN, 1.0, 2.0],
        None,
        &mut one,
    );
    assert_eq!(nan, [true, false]);
    assert_eq!(one, [h(0, 2), 0, h(1, 0), 0]);
    widen_rows(&[-3, 4], None, &mut one);
    assert_eq!(one, [h(-3, 0), 0, h(4, 0), 0]);
}

/// The Conv definition for `x [n, c, h, wi]`, `w [m, c/g, kh, kw]`.
#[allow(clippy::too_many_arguments)]
fn conv_reference(
    x: &[f32],
    [n, c, h, wi]: [usize; 4],
    wq: &[i8],
    ws: &[f32],
    bias: &[f32],
    [m, g, kh, kw]: [usize; 4],
    win: &Window,
    s_x: f32,
) -> Vec<f32> {
    let (oh, ow) = (
        win.out_len(0, h, kh, false).unwrap(),
        win.out_len(1, wi, kw, false).unwrap(),
    );
    let (cg, mg) = (c / g, m / g);
    let [sh, sw] = win.stride.map(usize::from);
    let [dh, dw] = win.dilation.map(usize::from);
    let [ph, pw] = win.pad_begin.map(|v| v as i64);
    let mut out = vec![0f32; n * m * oh * ow];
    for b in 0..n {
        for oc in 0..m {
            let grp = oc / mg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0i64;
                    let mut nan = false;
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * sh + ky * dh) as i64 - ph;
                                let ix = (ox * sw + kx * dw) as i64 - pw;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wi as i64 {
                                    continue;
                                }
                                let v = x[((b * c + grp * cg + ci) * h + iy as usize) * wi
                                    + ix as usize];
                                nan |= v.is_nan();
                                let wv = wq[((oc * cg + ci) * kh + ky) * kw + kx];
                                acc += q_ref(v, s_x) * i64::from(wv);
                            }
                        }
                    }
                    out[((b * m + oc) * oh + oy) * ow + ox] = if nan {
                        f32::NAN
                    } else {
                        (acc as f32) * (s_x * ws[oc]) + bias[oc]
                    };
                }
            }
        }
    }
    out
}

/// `(n, c, h, w, m, groups, kh, kw, stride, dilation, pad begin, pad end)`.
type ConvCase = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    [u16; 2],
    [u16; 2],
    [u16; 2],
    [u16; 2],
);

#[test]
fn blocked_conv_is_the_exact_integer_sum_rescaled() {
    // (n, c, h, w, m, groups, kh, kw, stride, dilation, pad begin, pad end): 3x3 with
    // padding, strides, dilation and groups; a 1x1; a 1-D-like row (h 1); a reduction of
    // several chunks (C 40 x 3 x 3 = 360 > KC); positions spanning several groups of 16 and
    // odd counts; output channels past one tile and odd.
    let full: [ConvCase; 13] = [
        (1, 1, 2, 2, 1, 1, 1, 1, [1, 1], [1, 1], [0, 0], [0, 0]),
        (1, 1, 2, 2, 1, 1, 1, 1, [1, 1], [1, 1], [1, 0], [0, 0]),
        (2, 4, 5, 7, 6, 2, 3, 3, [2, 1], [1, 2], [1, 0], [2, 1]),
        (1, 3, 8, 8, 5, 1, 3, 3, [1, 1], [1, 1], [1, 1], [1, 1]),
        (2, 40, 6, 5, 3, 1, 3, 3, [1, 1], [1, 1], [1, 1], [1, 1]),
        (1, 6, 9, 11, 99, 3, 1, 1, [1, 1], [1, 1], [0, 0], [0, 0]),
        (3, 2, 1, 19, 4, 1, 1, 5, [1, 2], [1, 1], [0, 2], [0, 2]),
        (1, 72, 3, 3, 40, 1, 3, 3, [1, 1], [1, 1], [1, 1], [1, 1]),
        (1, 1, 13, 13, 9, 1, 2, 2, [2, 2], [1, 1], [0, 0], [1, 1]),
        // A band of 9 of the 26 padded rows: reloaded as the positions move down.
        (1, 16, 24, 24, 5, 1, 3, 3, [1, 1], [1, 1], [1, 1], [1, 1]),
        // Bands of 4 and 1 padded rows: groups of 8 positions (two output rows of 10), and of
        // 4 (a third of a row of 12).
        (2, 40, 10, 10, 6, 1, 3, 3, [1, 1], [1, 1], [1, 1], [1, 1]),
        (1, 100, 2, 12, 3, 1, 1, 3, [1, 1], [1, 1], [0, 1], [0, 1]),
        // 200 x 30 int8 values per input row: no band fits, the portable path runs.
        (1, 200, 3, 30, 3, 1, 1, 1, [1, 1], [1, 1], [0, 0], [0, 0]),
    ];
    // Under Miri (~10^5 times slower) each feature once with small sizes: pads, strides,
    // dilation and groups; positions past a group of 16; output channels past a tile (33 per
    // group); a 1-D-like row; two chunks (C 8 x 3 x 3 = 72 > KC_CONV); a band of one padded
    // row of 3 (64 x 17 bytes), reloaded; no band (200 x 11 bytes). Wide strides keep the
    // positions few.
    let miri: [ConvCase; 8] = [
        (1, 1, 2, 2, 1, 1, 1, 1, [1, 1], [1, 1], [1, 0], [0, 0]),
        (2, 4, 3, 7, 2, 2, 3, 3, [2, 1], [1, 2], [1, 0], [2, 1]),
        (1, 1, 5, 5, 3, 1, 3, 3, [1, 1], [1, 1], [1, 1], [1, 1]),
        (1, 6, 1, 3, 99, 3, 1, 1, [1, 1], [1, 1], [0, 0], [0, 0]),
        (2, 2, 1, 9, 4, 1, 1, 5, [1, 2], [1, 1], [0, 2], [0, 2]),
        (1, 8, 2, 2, 1, 1, 3, 3, [1, 1], [1, 1], [1, 1], [1, 1]),
        (1, 64, 3, 17, 1, 1, 1, 1, [1, 16], [1, 1], [0, 0], [0, 0]),
        (1, 200, 1, 11, 1, 1, 1, 1, [1, 10], [1, 1], [0, 0], [0, 0]),
    ];
    let cases: &[ConvCase] = if cfg!(miri) { &miri } else { &full };
    for &(n, c, h, wi, m, g, kh, kw, stride, dilation, pb, pe) in cases {
        let win = Window {
            stride,
            dilation,
            pad_begin: pb,
            pad_end: pe,
        };
        let oh = win.out_len(0, h, kh, false).unwrap();
        let ow = win.out_len(1, wi, kw, false).unwrap();
        let mut x = values(3 + c as u64, n * c * h * wi);
        x[1] = 50.0;
        let nan_at = x.len() - 2;
        let cg = c / g;
        let red = cg * kh * kw;
        let (wq, ws) = weights(4, m, red);
        let bias = values(5, m);
        let s_x = 1.5 / 127.0;
        let w = Int8Weights {
            values: &wq,
            scales: Scales::F32(&ws),
            inner: red,
        };
        for with_nan in [false, true] {
            if with_nan {
                x[nan_at] = f32::NAN;
            }
            let want = conv_reference(
                &x,
                [n, c, h, wi],
                &wq,
                &ws,
                &bias,
                [m, g, kh, kw],
                &win,
                s_x,
            );
            for blocked in [false, true] {
                let mut out = vec![0f32; n * m * oh * ow];
                let (xd, wd, od) = (
                    Dims::new(&[n, c, h, wi]).unwrap(),
                    Dims::new(&[m, cg, kh, kw]).unwrap(),
                    Dims::new(&[n, m, oh, ow]).unwrap(),
                );
                let b = Some(Weights::F32(&bias));
                if blocked {
                    let used =
                        conv_q8_blocked(&x, &xd, w, &wd, b, s_x, g, &win, &mut out, &od).unwrap();
                    assert_eq!(
                        used,
                        c != 200,
                        "c {c}: the blocked path runs where a band fits"
                    );
                } else {
                    conv_q8(&x, &xd, w, &wd, b, s_x, g, &win, &mut out, &od).unwrap();
                }
                for (i, (got, e)) in out.iter().zip(&want).enumerate() {
                    assert_eq!(
                        got.to_bits(),
                        e.to_bits(),
                        "blocked {blocked} nan {with_nan} c {c} m {m} {kh}x{kw}: element {i}"
                    );
                }
            }
        }
    }
}

/// `Weights::load_runs` gives `load`'s values run by run: int8 with the channel last (its
/// scales computed once per call: 8-bit codes and f32) and first, runs whole rows apart or
/// not, wider than the scale buffer, and f32; out-of-range runs are `None`.
#[test]
fn load_runs_is_load_run_by_run() {
    let (rows, cols) = (9usize, 140usize);
    let wq: Vec<i8> = values(3, rows * cols)
        .iter()
        .map(|v| (v * 63.0) as i8)
        .collect();
    let codes: Vec<u8> = values(4, cols)
        .iter()
        .map(|v| ((v + 2.0) * 63.0) as u8)
        .collect();
    let fs: Vec<f32> = (0..cols).map(|c| 0.01 + c as f32 * 1e-3).collect();
    let fr: Vec<f32> = (0..rows).map(|r| 0.02 + r as f32 * 1e-3).collect();
    let last = |scales| {
        Weights::Int8(Int8Weights {
            values: &wq,
            scales,
            inner: 1,
        })
    };
    let f32w: Vec<f32> = values(5, rows * cols);
    let all = [
        last(Scales::Mini {
            base: 120,
            codes: &codes,
        }),
        last(Scales::F32(&fs)),
        Weights::Int8(Int8Weights {
            values: &wq,
            scales: Scales::F32(&fr),
            inner: cols,
        }),
        Weights::F32(&f32w),
    ];
    for w in all {
        // (start, stride, width, runs): a Dense strip, a conv kernel's rows, a stride that
        // is not a whole row, a run wider than the scale buffer.
        for (start, stride, width, runs) in [
            (3, cols, 40, 7),
            (cols, cols, cols, 8),
            (5, 33, 17, 9),
            (0, cols, 130, 9),
        ] {
            let mut got = vec![f32::NAN; width * runs];
            w.load_runs(start, stride, width, &mut got).unwrap();
            for r in 0..runs {
                let mut want = vec![0f32; width];
                w.load(start + r * stride, &mut want).unwrap();
                let row = &got[r * width..(r + 1) * width];
                assert!(
                    row.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{} start {start} stride {stride} width {width} run {r}",
                    w.type_name()
                );
            }
        }
        let mut past = vec![0f32; 2 * cols];
        assert!(w
            .load_runs(cols * (rows - 1), cols, cols, &mut past)
            .is_none());
        assert!(w.load_runs(0, cols, 0, &mut past).is_none());
    }
}
