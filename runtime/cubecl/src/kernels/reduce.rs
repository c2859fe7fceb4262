//! Reductions, softmax and norm over a contiguous axis range: the input is viewed as
//! `[outer, len, inner]`, one thread per output (reduce) or per `(outer, inner)` row
//! (softmax, norm), accumulated in index order as the CPU executor does.

use cubecl::prelude::*;

/// `e^z`, exactly 0 below -87 (so `-inf` masks give 0).
#[cube]
fn exp_or_zero(z: f32) -> f32 {
    select(z < -87.0, 0.0, f32::exp(z))
}

/// NaN-propagating max.
#[cube]
fn nan_max(a: f32, b: f32) -> f32 {
    let nan = f32::is_nan(a) || f32::is_nan(b);
    select(nan, a + b, select(b > a, b, a))
}

/// `flowrt::ops::ReduceKind` by code (0 sum, 1 mean, 2 max, 3 min, 4 prod, 5 sum of squares,
/// 6 L1, 7 L2, 8 log-sum, 9 log-sum-exp) over `len` values with stride `inner`; `inf` is
/// +infinity (passed in: WGSL has no infinity literal).
#[cube(launch)]
pub fn reduce(
    x: &Array<f32>,
    out: &mut Array<f32>,
    len: u32,
    inner: u32,
    inf: f32,
    #[comptime] kind: u32,
) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let inner = inner as usize;
        let len = len as usize;
        let o = i / inner;
        let j = i % inner;
        let base = o * len * inner + j;
        let mut acc = 0.0f32;
        if kind == 4 {
            acc = 1.0;
        } else if kind == 2 || kind == 9 {
            acc = -inf;
        } else if kind == 3 {
            acc = inf;
        }
        for r in 0..len {
            let v = x[base + r * inner];
            if kind == 2 || kind == 9 {
                acc = nan_max(acc, v);
            } else if kind == 3 {
                let nan = f32::is_nan(acc) || f32::is_nan(v);
                acc = select(nan, acc + v, select(v < acc, v, acc));
            } else if kind == 4 {
                acc *= v;
            } else if kind == 5 || kind == 7 {
                acc += v * v;
            } else if kind == 6 {
                acc += f32::abs(v);
            } else {
                acc += v;
            }
        }
        if kind == 1 {
            acc /= f32::cast_from(len as u32);
        } else if kind == 7 {
            acc = f32::sqrt(acc);
        } else if kind == 8 {
            acc = f32::ln(acc);
        } else if kind == 9 {
            let m = acc;
            if !(f32::is_nan(m) || f32::is_inf(m)) {
                let mut s = 0.0f32;
                for r in 0..len {
                    s += exp_or_zero(x[base + r * inner] - m);
                }
                acc = m + f32::ln(s);
            }
        }
        out[i] = acc;
    }
}

/// Softmax (or log-softmax) along `len` values with stride `inner`; `rows = outer·inner`.
#[cube(launch)]
pub fn softmax(
    x: &Array<f32>,
    out: &mut Array<f32>,
    len: u32,
    inner: u32,
    rows: u32,
    inf: f32,
    #[comptime] log: bool,
) {
    let i = ABSOLUTE_POS;
    if i < rows as usize {
        let inner = inner as usize;
        let len = len as usize;
        let o = i / inner;
        let j = i % inner;
        let base = o * len * inner + j;
        let mut m = -inf;
        for r in 0..len {
            m = nan_max(m, x[base + r * inner]);
        }
        let mut s = 0.0f32;
        for r in 0..len {
            s += exp_or_zero(x[base + r * inner] - m);
        }
        if log {
            let ls = f32::ln(s);
            for r in 0..len {
                let p = base + r * inner;
                out[p] = (x[p] - m) - ls;
            }
        } else {
            for r in 0..len {
                let p = base + r * inner;
                out[p] = exp_or_zero(x[p] - m) / s;
            }
        }
    }
}

/// `flowrt::ops::norm` along `len` values with stride `inner`; `rows = outer·inner`:
/// `μ = (Σ x)·inv_n`, `c = x − μ`, `y = c / sqrt(Σ c² / n + eps)`.
#[cube(launch)]
pub fn norm(
    x: &Array<f32>,
    out: &mut Array<f32>,
    len: u32,
    inner: u32,
    rows: u32,
    n: f32,
    eps: f32,
) {
    let i = ABSOLUTE_POS;
    if i < rows as usize {
        let inner = inner as usize;
        let len = len as usize;
        let o = i / inner;
        let j = i % inner;
        let base = o * len * inner + j;
        let mut s = 0.0f32;
        for r in 0..len {
            s += x[base + r * inner];
        }
        let mu = s * (1.0 / n);
        let mut q = 0.0f32;
        for r in 0..len {
            let c = x[base + r * inner] - mu;
            q += c * c;
        }
        let scale = 1.0 / f32::sqrt(q / n + eps);
        for r in 0..len {
            let p = base + r * inner;
            out[p] = (x[p] - mu) * scale;
        }
    }
}
