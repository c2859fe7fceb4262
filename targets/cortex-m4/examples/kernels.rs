//! On-target check of the Cortex-M4F f32 kernels (the inline-assembly tiles of
//! `flowrt::ops::dense` and `flowrt::ops::conv`) against naive loops with the documented
//! per-element order (each multiply-add fused: `libm::fmaf` in software, independent of the
//! FPU's `vfma.f32`), bit for bit: Dense over every tile shape and remainder (rows 1..=5,
//! k 1..=9 and 16/17, n 1..=19 and 64, with and without a bias); Conv over kernel sizes up
//! to 3×3 and one wider, strides, paddings, row dilations, groups, channel counts around the
//! 8-channel tiles, 1-D and 2-D, with padding skipped as the reference skips it. Exits with
//! failure at the first mismatch.
//!
//! Run (from targets/cortex-m4; build.rs needs a model and noise, any will do):
//!   FLOWRT_FRT=/abs/model.frt FLOWRT_NOISE=/abs/noise.npy cargo run --release --example kernels
#![no_std]
#![no_main]

#[path = "../src/vectors.rs"]
mod vectors;
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use flowrt::ops::{binary, conv, dense, unary, Binary, Dims, Unary, Weights, Window};
use panic_semihosting as _;

#[path = "../src/logger.rs"]
mod logger;

/// Deterministic values in [-1, 1) with a spread of exponents (so roundings differ).
struct Lcg(u32);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let unit = (self.0 >> 8) as f32 / (1u32 << 24) as f32;
        let scale = [1.0, 0.37, 3.1e-3, 17.0][(self.0 & 3) as usize];
        (unit * 2.0 - 1.0) * scale
    }
}

/// Reports a mismatch and exits with failure.
fn fail(what: &str, a: usize, b: usize, got: f32, want: f32) -> ! {
    hprintln!("{} ({}, {}): got {}, want {}", what, a, b, got, want);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        core::hint::spin_loop();
    }
}

/// One conv geometry: `[n, c, h, w]` input, `[kh, kw]` kernel, `m` outputs, `groups`,
/// `[sh, sw]` strides, `[dh, dw]` dilations, `[ph, pw]` begin pads, `[eh, ew]` end pads.
struct ConvCase {
    x: [usize; 4],
    k: [usize; 2],
    m: usize,
    groups: usize,
    stride: [usize; 2],
    dil: [usize; 2],
    pad: [usize; 2],
    end: [usize; 2],
    one_d: bool,
}

/// Conv against the naive loop (bias, then input channel, kernel row, kernel column
/// ascending; taps on padding skipped) over a grid of geometries; returns the case count.
fn conv_check(g: &mut Lcg) -> u32 {
    const X: usize = 2 * 6 * 7 * 7;
    const W: usize = 6 * 3 * 4 * 18;
    const O: usize = 2 * 18 * 9 * 9;
    let (mut x, mut w, mut b, mut out) = ([0f32; X], [0f32; W], [0f32; 18], [0f32; O]);
    let mut cases = 0;
    let shapes: [([usize; 4], [usize; 2], bool); 8] = [
        ([1, 1, 5, 6], [3, 3], false),
        ([2, 2, 4, 4], [3, 3], false),
        ([1, 3, 7, 7], [3, 3], false),
        ([1, 2, 3, 5], [2, 2], false),
        ([1, 2, 4, 3], [1, 1], false),
        ([1, 2, 5, 4], [3, 1], false),
        ([1, 2, 3, 6], [2, 4], false),
        ([2, 3, 1, 7], [1, 3], true),
    ];
    for (xs, k, one_d) in shapes {
        for m in [1, 8, 9, 18] {
            for groups in [1, 2] {
                if xs[1] % groups != 0 || m % groups != 0 {
                    continue;
                }
                for stride in [[1, 1], [2, 1], [1, 2]] {
                    for (dil, pad, end) in [
                        ([1, 1], [0, 0], [0, 0]),
                        ([1, 1], [1, 1], [1, 1]),
                        ([2, 1], [2, 1], [1, 2]),
                        ([1, 2], [1, 1], [1, 1]),
                    ] {
                        let case = ConvCase {
                            x: xs,
                            k,
                            m,
                            groups,
                            stride: if one_d { [1, stride[0]] } else { stride },
                            dil: if one_d { [1, dil[1]] } else { dil },
                            pad: if one_d { [0, pad[1]] } else { pad },
                            end: if one_d { [0, end[1]] } else { end },
                            one_d,
                        };
                        for with_bias in [false, true] {
                            if conv_one(&case, with_bias, g, &mut x, &mut w, &mut b, &mut out) {
                                cases += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    cases
}

/// One conv case; `false` when the window does not fit the input.
#[allow(clippy::too_many_arguments)]
fn conv_one(
    c: &ConvCase,
    with_bias: bool,
    g: &mut Lcg,
    x: &mut [f32],
    w: &mut [f32],
    b: &mut [f32],
    out: &mut [f32],
) -> bool {
    let [n, ch, h, wi] = c.x;
    let [kh, kw] = c.k;
    let span = |k: usize, d: usize| d * (k - 1) + 1;
    let (ph, pw) = (h + c.pad[0] + c.end[0], wi + c.pad[1] + c.end[1]);
    if ph < span(kh, c.dil[0]) || pw < span(kw, c.dil[1]) {
        return false;
    }
    let oh = (ph - span(kh, c.dil[0])) / c.stride[0] + 1;
    let ow = (pw - span(kw, c.dil[1])) / c.stride[1] + 1;
    let (cg, m, mg) = (ch / c.groups, c.m, c.m / c.groups);
    let (x, w, b) = (
        &mut x[..n * ch * h * wi],
        &mut w[..cg * kh * kw * m],
        &mut b[..m],
    );
    let out = &mut out[..n * m * oh * ow];
    for v in x.iter_mut().chain(w.iter_mut()).chain(b.iter_mut()) {
        *v = g.next();
    }
    let dims = |d: [usize; 4]| {
        if c.one_d {
            Dims::new(&[d[0], d[1], d[3]])
        } else {
            Dims::new(&d)
        }
        .expect("dims")
    };
    let wd = if c.one_d {
        Dims::new(&[cg, kw, m])
    } else {
        Dims::new(&[cg, kh, kw, m])
    }
    .expect("dims");
    let u16s = |v: [usize; 2]| [v[0] as u16, v[1] as u16];
    let win = Window {
        stride: u16s(c.stride),
        dilation: u16s(c.dil),
        pad_begin: u16s(c.pad),
        pad_end: u16s(c.end),
    };
    let bias = with_bias.then_some(Weights::F32(b));
    let (xd, od) = (dims(c.x), dims([n, m, oh, ow]));
    if conv(x, &xd, Weights::F32(w), &wd, bias, c.groups, &win, out, &od).is_err() {
        fail("conv error: shape, m", c.x[2] * 10 + c.x[3], m, 0.0, 0.0);
    }
    for bi in 0..n {
        for oc in 0..m {
            let gi = oc / mg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = if with_bias { b[oc] } else { 0.0 };
                    for ci in 0..cg {
                        for ky in 0..kh {
                            let iy =
                                (oy * c.stride[0] + ky * c.dil[0]) as isize - c.pad[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix =
                                    (ox * c.stride[1] + kx * c.dil[1]) as isize - c.pad[1] as isize;
                                if ix < 0 || ix >= wi as isize {
                                    continue;
                                }
                                let xi =
                                    ((bi * ch + gi * cg + ci) * h + iy as usize) * wi + ix as usize;
                                acc =
                                    libm::fmaf(x[xi], w[((ci * kh + ky) * kw + kx) * m + oc], acc);
                            }
                        }
                    }
                    let got = out[((bi * m + oc) * oh + oy) * ow + ox];
                    if got.to_bits() != acc.to_bits() {
                        fail(
                            "conv mismatch at (output channel, pixel)",
                            oc,
                            oy * ow + ox,
                            got,
                            acc,
                        );
                    }
                }
            }
        }
    }
    true
}

/// Values for the element-wise checks: random ones and the special cases (signed zeros,
/// infinities, NaNs with payloads, subnormals, negatives for the square roots).
fn elt_value(g: &mut Lcg, i: usize) -> f32 {
    const SPECIAL: [u32; 10] = [
        0x0000_0000,
        0x8000_0000,
        0x7F80_0000,
        0xFF80_0000,
        0x7FC0_0001,
        0xFFC0_0000,
        0x7F80_0001,
        0x0000_0001,
        0x8040_0000,
        0x3F80_0000,
    ];
    match i % 7 {
        3 => f32::from_bits(SPECIAL[(i / 7) % SPECIAL.len()]),
        _ => g.next(),
    }
}

/// The elements of `a` and `b` that output `i` reads.
type Reads = fn(usize) -> (usize, usize);

/// Binary Add/Sub/Mul/Div (same shapes, either side a scalar, a broadcast row), the simple
/// unary maps and the square roots against the scalar formulas, bit for bit.
fn elementwise_check(g: &mut Lcg) -> u32 {
    let mut cases = 0;
    let (mut a, mut b, mut out) = ([0f32; 40], [0f32; 40], [0f32; 40]);
    let d = |v: &[usize]| Dims::new(v).expect("dims");
    for n in 0..=40 {
        for (i, v) in a.iter_mut().enumerate() {
            *v = elt_value(g, i);
        }
        for (i, v) in b.iter_mut().enumerate() {
            *v = elt_value(g, i + 3);
        }
        for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div] {
            // (a dims, b dims, the elements of a and b output i reads)
            let shapes: [([usize; 2], [usize; 2], Reads); 3] = [
                ([1, n], [1, n], |i| (i, i)),
                ([1, n], [1, 1], |i| (i, 0)),
                ([1, 1], [1, n], |i| (0, i)),
            ];
            for (ad, bd, at) in shapes {
                let (al, bl) = (ad[0] * ad[1], bd[0] * bd[1]);
                let o = &mut out[..n];
                if binary(op, &a[..al], &d(&ad), &b[..bl], &d(&bd), o, &d(&[1, n])).is_err() {
                    fail("binary error", n, op.code() as usize, 0.0, 0.0);
                }
                for (i, y) in o.iter().enumerate() {
                    let (ia, ib) = at(i);
                    let want = op.apply(a[ia], b[ib]);
                    if y.to_bits() != want.to_bits() {
                        fail("binary mismatch (n, i)", n, i, *y, want);
                    }
                }
                cases += 1;
            }
            // A row broadcast over 2 rows: a [2, n/2], b [1, n/2].
            if n % 2 == 0 && n > 0 {
                let h = n / 2;
                let o = &mut out[..n];
                let r = binary(
                    op,
                    &a[..n],
                    &d(&[2, h]),
                    &b[..h],
                    &d(&[1, h]),
                    o,
                    &d(&[2, h]),
                );
                if r.is_err() {
                    fail("binary row error", n, op.code() as usize, 0.0, 0.0);
                }
                for (i, y) in o.iter().enumerate() {
                    let want = op.apply(a[i], b[i % h]);
                    if y.to_bits() != want.to_bits() {
                        fail("binary row mismatch (n, i)", n, i, *y, want);
                    }
                }
                cases += 1;
            }
        }
        for op in [
            Unary::Neg,
            Unary::Abs,
            Unary::Square,
            Unary::Recip,
            Unary::Sqrt,
            Unary::Rsqrt,
        ] {
            let o = &mut out[..n];
            if unary(op, &a[..n], o).is_err() {
                fail("unary error", n, op.code() as usize, 0.0, 0.0);
            }
            for (i, y) in o.iter().enumerate() {
                let want = match op {
                    Unary::Neg => -a[i],
                    Unary::Abs => f32::from_bits(a[i].to_bits() & 0x7FFF_FFFF),
                    Unary::Square => a[i] * a[i],
                    Unary::Recip => 1.0 / a[i],
                    Unary::Sqrt => libm::sqrtf(a[i]),
                    _ => 1.0 / libm::sqrtf(a[i]),
                };
                if y.to_bits() != want.to_bits() {
                    fail("unary mismatch (n, i)", n, i, *y, want);
                }
            }
            cases += 1;
        }
    }
    cases
}

const MAX_ROWS: usize = 5;
const MAX_K: usize = 17;
const MAX_N: usize = 64;

/// Full-integer Dense (`ops::dense_q8`: on this core the `SMLAD` kernel of
/// `int8_packed.rs`, 4 quads unrolled with a computed entry) against its definition
/// (`ops/int8.rs`): `q = clamp(round(x · (1 / s)), ±127)` with ties away from zero, the exact
/// integer sum, `f32(sum) · (s · s_w[c]) + b[c]`. Reductions 1..=40 (every remainder of the
/// unrolled passes) and around the 128-value chunk, rows and columns around the 16-row
/// groups and the 32-column tiles.
#[cfg(feature = "int8")]
fn q8_check(g: &mut Lcg) -> u32 {
    use flowrt::ops::{dense_q8, Int8Weights, Scales};
    const K: usize = 140;
    const N: usize = 34;
    const R: usize = 18;
    let mut a = [0f32; R * K];
    let mut w = [0i8; N * K];
    let mut sw = [0f32; N];
    let mut b = [0f32; N];
    let mut out = [0f32; R * N];
    let mut cases = 0;
    for k in (1..=40).chain([127, 128, 129, 140]) {
        for (rows, n) in [(1, 1), (2, 2), (3, 3), (17, 33), (18, 34), (5, 32)] {
            let (a, w, sw, b) = (
                &mut a[..rows * k],
                &mut w[..n * k],
                &mut sw[..n],
                &mut b[..n],
            );
            for v in a.iter_mut().chain(b.iter_mut()) {
                *v = g.next();
            }
            for v in w.iter_mut() {
                *v = ((g.next() * 1e4) as i32 % 128).clamp(-127, 127) as i8;
            }
            for v in sw.iter_mut() {
                *v = g.next().abs() * 0.01 + 1e-4;
            }
            let act_scale = 0.05;
            let weights = Int8Weights {
                values: w,
                scales: Scales::F32(sw),
                inner: k,
            };
            let out = &mut out[..rows * n];
            if let Err(e) = dense_q8(a, weights, Some(Weights::F32(b)), act_scale, k, n, out) {
                hprintln!("dense_q8 rows={} k={} n={}: {}", rows, k, n, e);
                debug::exit(debug::EXIT_FAILURE);
            }
            let inv = 1.0 / act_scale;
            for r in 0..rows {
                for c in 0..n {
                    let mut sum = 0i32;
                    for kk in 0..k {
                        let q = libm::roundf(a[r * k + kk] * inv).clamp(-127.0, 127.0) as i32;
                        sum += q * i32::from(w[c * k + kk]);
                    }
                    let want = (sum as f32) * (act_scale * sw[c]) + b[c];
                    if out[r * n + c].to_bits() != want.to_bits() {
                        hprintln!(
                            "dense_q8 rows={} k={} n={}: out[{}, {}] = {}, want {}",
                            rows,
                            k,
                            n,
                            r,
                            c,
                            out[r * n + c],
                            want
                        );
                        debug::exit(debug::EXIT_FAILURE);
                    }
                }
            }
            cases += 1;
        }
    }
    cases
}

#[entry]
fn main() -> ! {
    logger::init();
    let mut g = Lcg(7);
    let mut a = [0f32; MAX_ROWS * MAX_K];
    let mut w = [0f32; MAX_K * MAX_N];
    let mut b = [0f32; MAX_N];
    let mut out = [0f32; MAX_ROWS * MAX_N];
    let mut cases = 0u32;
    let ks = [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17];
    let ns = (1..=19).chain([64]);
    for n in ns {
        for k in ks {
            for rows in 1..=MAX_ROWS {
                for with_bias in [false, true] {
                    let (a, w, b) = (&mut a[..rows * k], &mut w[..k * n], &mut b[..n]);
                    for v in a.iter_mut().chain(w.iter_mut()).chain(b.iter_mut()) {
                        *v = g.next();
                    }
                    let out = &mut out[..rows * n];
                    let bias = with_bias.then_some(Weights::F32(b));
                    if let Err(e) = dense(a, Weights::F32(w), bias, k, n, out) {
                        hprintln!("dense rows={} k={} n={}: {}", rows, k, n, e);
                        debug::exit(debug::EXIT_FAILURE);
                    }
                    for r in 0..rows {
                        for c in 0..n {
                            let mut acc = if with_bias { b[c] } else { 0.0 };
                            for kk in 0..k {
                                acc = libm::fmaf(a[r * k + kk], w[kk * n + c], acc);
                            }
                            if out[r * n + c].to_bits() != acc.to_bits() {
                                hprintln!(
                                    "dense rows={} k={} n={} bias={}: out[{}, {}] = {}, want {}",
                                    rows,
                                    k,
                                    n,
                                    with_bias,
                                    r,
                                    c,
                                    out[r * n + c],
                                    acc
                                );
                                debug::exit(debug::EXIT_FAILURE);
                            }
                        }
                    }
                    cases += 1;
                }
            }
        }
    }
    let conv_cases = conv_check(&mut g);
    let elt_cases = elementwise_check(&mut g);
    #[cfg(feature = "int8")]
    let q8_cases = q8_check(&mut g);
    #[cfg(not(feature = "int8"))]
    let q8_cases = 0;
    hprintln!(
        "kernels: {} dense, {} conv, {} element-wise and {} full-integer Dense cases bit-identical to the naive loops",
        cases,
        conv_cases,
        elt_cases,
        q8_cases
    );
    debug::exit(debug::EXIT_SUCCESS);
    loop {
        core::hint::spin_loop();
    }
}
