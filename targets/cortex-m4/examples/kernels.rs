//! On-target check of the Cortex-M4F f32 kernels (the inline-assembly tiles of
//! `flowrt::ops::dense`) against naive loops with the documented per-element order, bit for
//! bit, over every tile shape and remainder: rows 1..=5, k 1..=9 and 16/17, n 1..=19 and 64,
//! with and without a bias. Exits with failure at the first mismatch.
//!
//! Run (from targets/cortex-m4; build.rs needs a model and noise, any will do):
//!   FLOWRT_FRT=/abs/model.frt FLOWRT_NOISE=/abs/noise.npy cargo run --release --example kernels
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use flowrt::ops::{dense, Weights};
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

const MAX_ROWS: usize = 5;
const MAX_K: usize = 17;
const MAX_N: usize = 64;

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
                                acc += a[r * k + kk] * w[kk * n + c];
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
    hprintln!(
        "kernels: {} dense cases bit-identical to the naive loop",
        cases
    );
    debug::exit(debug::EXIT_SUCCESS);
    loop {
        core::hint::spin_loop();
    }
}
