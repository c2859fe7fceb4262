//! Element-wise kernels: unary and binary ops (numpy broadcasting through a strided view),
//! `Where`, and the formulas they share with the fused GEMM epilogue.

use cubecl::prelude::*;

/// "No activation" code for fused epilogues ([`unary_apply()`] passes the value through).
pub const ACT_NONE: u32 = 255;

/// `flowrt::ops::Unary` by file code (`op`), with its attributes `alpha`, `gamma`; `x` itself
/// for [`ACT_NONE`].
#[cube]
pub fn unary_apply(x: f32, alpha: f32, gamma: f32, #[comptime] op: u32) -> f32 {
    let mut y = x;
    if op == 0 {
        y = select(x > 0.0, x, 0.0);
    } else if op == 1 {
        y = select(x >= 0.0, x, alpha * x);
    } else if op == 2 {
        y = select(x > 0.0, x, alpha * (f32::exp(x) - 1.0));
    } else if op == 3 {
        y = gamma * select(x > 0.0, x, alpha * (f32::exp(x) - 1.0));
    } else if op == 4 {
        y = sigmoid(x);
    } else if op == 5 {
        y = tanh_f(x);
    } else if op == 6 {
        // ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|)
        y = select(x > 0.0, x, 0.0) + f32::log1p(f32::exp(-f32::abs(x)));
    } else if op == 7 {
        y = x * sigmoid(x);
    } else if op == 8 {
        y = 0.5 * x * (1.0 + Erf::erf(x * 0.70710677));
    } else if op == 9 {
        y = 0.5 * x * (1.0 + tanh_f(0.7978846 * (x + 0.044715 * x * x * x)));
    } else if op == 10 {
        y = f32::sin(x);
    } else if op == 11 {
        y = f32::cos(x);
    } else if op == 12 {
        y = f32::exp(x);
    } else if op == 13 {
        y = f32::ln(x);
    } else if op == 14 {
        y = f32::sqrt(x);
    } else if op == 15 {
        y = -x;
    } else if op == 16 {
        y = f32::abs(x);
    } else if op == 17 {
        y = Erf::erf(x);
    } else if op == 18 {
        y = 1.0 / x;
    } else if op == 19 {
        y = x * x;
    } else if op == 20 {
        y = 1.0 / f32::sqrt(x);
    } else if op == 21 {
        y = f32::floor(x);
    } else if op == 22 {
        y = f32::ceil(x);
    } else if op == 23 {
        y = round_half_even(x);
    } else if op == 24 {
        y = select(x > 0.0, 1.0, select(x < 0.0, -1.0, x));
    }
    y
}

/// `1 / (1 + e^-x)`, without overflow for large `|x|`.
#[cube]
pub fn sigmoid(x: f32) -> f32 {
    let e = f32::exp(-f32::abs(x));
    let pos = 1.0 / (1.0 + e);
    select(x >= 0.0, pos, e / (1.0 + e))
}

/// `tanh(x)` from `expm1`-free exponentials: exact at 0, ±1 for large `|x|`, NaN stays NaN.
#[cube]
pub fn tanh_f(x: f32) -> f32 {
    let a = f32::abs(x);
    let e = f32::exp(-2.0 * a);
    let t = (1.0 - e) / (1.0 + e);
    let t = select(a < 0.0004, a, t);
    select(x < 0.0, -t, t)
}

/// Round half to even (ONNX `Round`).
#[cube]
pub fn round_half_even(x: f32) -> f32 {
    let f = f32::floor(x);
    let d = x - f;
    let half = f * 0.5;
    let even = f32::floor(half) == half;
    let up = select(d == 0.5, select(even, f, f + 1.0), f32::round(x));
    select(f32::abs(x) < 8388608.0, up, x)
}

/// `flowrt::ops::Binary` by file code.
#[cube]
pub fn binary_apply(a: f32, b: f32, #[comptime] op: u32) -> f32 {
    let mut y = a;
    if op == 0 {
        y = a + b;
    } else if op == 1 {
        y = a - b;
    } else if op == 2 {
        y = a * b;
    } else if op == 3 {
        y = a / b;
    } else if op == 4 {
        y = f32::powf(a, b);
    } else if op == 5 {
        let nan = f32::is_nan(a) || f32::is_nan(b);
        y = select(nan, a + b, select(a < b, b, a));
    } else if op == 6 {
        let nan = f32::is_nan(a) || f32::is_nan(b);
        y = select(nan, a + b, select(b < a, b, a));
    } else if op == 7 {
        y = select(a > b, 1.0, 0.0);
    } else if op == 8 {
        y = select(a < b, 1.0, 0.0);
    } else if op == 9 {
        y = select(a >= b, 1.0, 0.0);
    } else if op == 10 {
        y = select(a <= b, 1.0, 0.0);
    } else if op == 11 {
        y = select(a == b, 1.0, 0.0);
    }
    y
}

/// Offset of element `i` of the view with dims `meta[dims..dims + rank]` in an operand with
/// strides `meta[strides..strides + rank]` (a broadcast axis has stride 0).
#[cube]
pub fn strided_offset(
    meta: &Array<u32>,
    i: usize,
    rank: usize,
    dims: usize,
    strides: usize,
) -> usize {
    let mut rem = i;
    let mut off = 0usize;
    for kk in 0..rank {
        let k = rank - 1 - kk;
        let d = meta[dims + k] as usize;
        let c = rem % d;
        rem /= d;
        off += c * meta[strides + k] as usize;
    }
    off
}

/// `out[i] = op(x[i])`.
#[cube(launch)]
pub fn unary(x: &Array<f32>, out: &mut Array<f32>, alpha: f32, gamma: f32, #[comptime] op: u32) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        out[i] = unary_apply(x[i], alpha, gamma, op);
    }
}

/// `out[i] = act(op(a[..], b[..]))` with broadcasting: `meta = [rank, dims.., a strides..,
/// b strides..]`; `direct_a` / `direct_b` skip the index arithmetic for an operand laid out
/// like the output.
#[cube(launch)]
pub fn binary(
    a: &Array<f32>,
    b: &Array<f32>,
    out: &mut Array<f32>,
    meta: &Array<u32>,
    alpha: f32,
    gamma: f32,
    #[comptime] op: u32,
    #[comptime] direct_a: bool,
    #[comptime] direct_b: bool,
    #[comptime] act: u32,
) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let rank = meta[0] as usize;
        let mut ia = i;
        let mut ib = i;
        if !direct_a {
            ia = strided_offset(meta, i, rank, 1, 1 + rank);
        }
        if !direct_b {
            ib = strided_offset(meta, i, rank, 1, 1 + 2 * rank);
        }
        out[i] = unary_apply(binary_apply(a[ia], b[ib], op), alpha, gamma, act);
    }
}

/// `out[i] = cond[..] != 0 ? a[..] : b[..]`: `meta = [rank, dims.., cond, a, b strides..]`.
#[cube(launch)]
pub fn select3(
    c: &Array<f32>,
    a: &Array<f32>,
    b: &Array<f32>,
    out: &mut Array<f32>,
    meta: &Array<u32>,
) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let rank = meta[0] as usize;
        let ic = strided_offset(meta, i, rank, 1, 1 + rank);
        let ia = strided_offset(meta, i, rank, 1, 1 + 2 * rank);
        let ib = strided_offset(meta, i, rank, 1, 1 + 3 * rank);
        out[i] = select(c[ic] != 0.0, a[ia], b[ib]);
    }
}
