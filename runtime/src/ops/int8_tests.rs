//! The full-integer kernels against a reference written from the definition (module docs of
//! `int8.rs`): activations quantized one by one, an `i64` sum, then the f32 rescale.
#![allow(clippy::needless_range_loop)] // the references index like the definition

use super::int8::{conv_q8, dense_q8};
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
    // k 700 > one chunk of 512, n 40 > one tile of 32, rows 3.
    for (k, n) in [(5, 3), (64, 64), (700, 40)] {
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
    // a reduction longer than one chunk (C 72 x 3 x 3 = 648).
    let cases = [
        (2, 4, 5, 7, 6, 2, 3, 3, [2, 1], [1, 2], [1, 0], [2, 1]),
        (1, 72, 3, 3, 40, 1, 3, 3, [1, 1], [1, 1], [1, 1], [1, 1]),
    ];
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
