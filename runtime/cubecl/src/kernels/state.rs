//! The solver's state operations (`flowrt::StateOps`) and the guidance combination.

use cubecl::prelude::*;

/// `dst = start + c0·t0 + c1·t1 + c2·t2 + c3·t3` (the first `n` terms, left to right), where
/// `start` is `base[i]`, or `dst[i]` itself when `!has_base` (the continuation of a
/// combination of more than four terms; `base` is then any other buffer and not read).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn lincomb4(
    base: &Array<f32>,
    t0: &Array<f32>,
    t1: &Array<f32>,
    t2: &Array<f32>,
    t3: &Array<f32>,
    dst: &mut Array<f32>,
    c0: f32,
    c1: f32,
    c2: f32,
    c3: f32,
    count: u32,
    #[comptime] n: u32,
    #[comptime] has_base: bool,
) {
    let i = ABSOLUTE_POS;
    if i < count as usize {
        let mut acc = dst[i];
        if has_base {
            acc = base[i];
        }
        if n > 0 {
            acc += c0 * t0[i];
        }
        if n > 1 {
            acc += c1 * t1[i];
        }
        if n > 2 {
            acc += c2 * t2[i];
        }
        if n > 3 {
            acc += c3 * t3[i];
        }
        dst[i] = acc;
    }
}

/// `buf *= c`.
#[cube(launch)]
pub fn scale(buf: &mut Array<f32>, c: f32, count: u32) {
    let i = ABSOLUTE_POS;
    if i < count as usize {
        buf[i] = buf[i] * c;
    }
}

/// `flag[0] = 1` when any of the first `count` values is NaN or infinite (`flag` starts 0).
#[cube(launch)]
pub fn non_finite_flag(buf: &Array<f32>, flag: &mut Array<u32>, count: u32) {
    let i = ABSOLUTE_POS;
    if i < count as usize {
        let v = buf[i];
        if f32::is_nan(v) || f32::is_inf(v) {
            flag[0] = 1;
        }
    }
}

/// `out[i] = e[i] / (atol + rtol·max(|a_i|, |b_i|))`.
#[cube(launch)]
pub fn error_ratio(
    e: &Array<f32>,
    a: &Array<f32>,
    b: &Array<f32>,
    out: &mut Array<f32>,
    atol: f32,
    rtol: f32,
    count: u32,
) {
    let i = ABSOLUTE_POS;
    if i < count as usize {
        let s = atol + rtol * f32::max(f32::abs(a[i]), f32::abs(b[i]));
        out[i] = e[i] / s;
    }
}

/// Classifier-free guidance: `v[i] = vu + w·(vc − vu)` with `vc = v2[i]`, `vu = v2[half + i]`.
#[cube(launch)]
pub fn cfg_combine(v2: &Array<f32>, v: &mut Array<f32>, w: f32, half: u32) {
    let i = ABSOLUTE_POS;
    if i < half as usize {
        let vc = v2[i];
        let vu = v2[half as usize + i];
        v[i] = vu + w * (vc - vu);
    }
}
