//! Full-integer Dense and Conv (`flowrt export --activations int8`): int8 weights times
//! int8 activations, accumulated exactly in `i32`.
//!
//! A node in this mode has a fourth input, the activation scale `s_x` (a one-element f32
//! constant, calibrated at export). Each input value is quantized on the way in,
//! `q = clamp(round(x * (1 / s_x)), -127, 127)` (`1 / s_x` one f32 division, `round` ties
//! away from zero), each output is `f32(Σ q · w) · (s_x · s_w[c]) + bias[c]`: one exact
//! integer sum (any order gives the same value, so every target may use its own SIMD), one
//! rounding to f32, one f32 multiplication by the f32 product `s_x · s_w[c]`, one f32
//! addition. A NaN input makes its whole output row NaN (never a silent 0); ±∞ saturates to
//! ±127 like any value beyond the calibrated range.
//!
//! The weights are stored output channel first, so each output's reduction is contiguous:
//! Dense `w[N, K]`, Conv `w[M, C/groups, KH, KW]` (ONNX's layout), int8 with one scale per
//! output channel (axis 0).
//!
//! Two implementations compute these sums: the portable one here (one output row at a time,
//! int16 activations against int8 weight rows), and on Cortex-M4/M7 (ARMv7E-M) the blocked
//! one of `int8_packed.rs` (`SMLAD` on int16 pairs, 2 rows × 2 columns per step, the weights
//! widened once per group of rows). Integer sums are exact, so both give the same bits.

use super::conv::{nchw, ConvGeometry, Window};
use super::lut::{quantize_fast, LutCodes};
use super::weights::{load_bias, Int8Weights, Weights};
use super::{check_len, Dims, MAX_INT8_REDUCTION as MAX_REDUCTION, SIZE_ERR};
use crate::Error;

#[cfg(any(flowrt_dsp, test))]
use super::int8_packed as packed;

/// Activations quantized at once (an `i16` stack buffer of this many values).
const CHUNK: usize = 512;
/// Output channels accumulated at once when the reduction is longer than [`CHUNK`].
const TILE: usize = 32;

/// The quantizer of one node's input: `1 / s_x` once (then [`scaled_code`] per value).
#[derive(Clone, Copy)]
struct Quantizer {
    inv: f32,
}

impl Quantizer {
    /// Errors: a scale that is not finite and positive.
    fn new(act_scale: f32) -> Result<Quantizer, Error> {
        if !(act_scale.is_finite() && act_scale > 0.0) {
            return Err(Error::Invalid {
                what: "int8 activation scale must be finite and positive",
            });
        }
        Ok(Quantizer {
            inv: 1.0 / act_scale,
        })
    }
}

/// How a full-integer node's input values become int8 codes.
#[derive(Clone, Copy)]
pub(super) enum InputCodes {
    /// Quantized at the node's activation scale: `inv = 1 / s_x`.
    Scaled(f32),
    /// Codes as they are: the input holds, per row of `k` values, `k` int8 codes at byte
    /// `4·k·r` and a NaN flag at byte `4·k·r + k` ([`super::lut::lut_codes`]).
    Stored,
}

/// `(x · inv, code)`: the int8 code of `x` at `inv` and the scaled value (a running sum of
/// them finds a NaN, [`LutCodes::code`]'s form).
#[inline(always)]
pub(super) fn scaled_code(x: f32, inv: f32) -> (f32, i32) {
    let y = x * inv;
    (y, quantize_fast(y))
}

/// `q[i] = code(x[i])`; returns whether some `x[i]` was NaN.
#[inline(always)]
fn quantize_with(code: impl Fn(f32) -> i16, x: &[f32], q: &mut [i16]) -> bool {
    let mut nan = false;
    for (d, v) in q.iter_mut().zip(x) {
        nan |= v.is_nan();
        *d = code(*v);
    }
    nan
}

/// `clamp(round(x * inv), -127, 127)`, NaN to 0 (the caller flags it).
#[inline(always)]
fn quantize_one(x: f32, inv: f32) -> i16 {
    let r = libm::roundf(x * inv);
    if r >= 127.0 {
        127
    } else if r <= -127.0 {
        -127
    } else if r.is_nan() {
        0
    } else {
        r as i16
    }
}

/// `Σ q[i] · w[i]` exactly (the lengths are equal; at most [`CHUNK`]). Four partial sums
/// (integer sums are exact, so the grouping does not change the result) let the compiler
/// keep the loads and multiply-accumulates in flight.
#[inline(always)]
fn dot(q: &[i16], w: &[i8]) -> i32 {
    let (mut s0, mut s1, mut s2, mut s3) = (0i32, 0i32, 0i32, 0i32);
    let mut qc = q.chunks_exact(4);
    let mut wc = w.chunks_exact(4);
    for (a, b) in (&mut qc).zip(&mut wc) {
        if let ([a0, a1, a2, a3], [b0, b1, b2, b3]) = (a, b) {
            s0 += i32::from(*a0) * i32::from(*b0);
            s1 += i32::from(*a1) * i32::from(*b1);
            s2 += i32::from(*a2) * i32::from(*b2);
            s3 += i32::from(*a3) * i32::from(*b3);
        }
    }
    for (a, b) in qc.remainder().iter().zip(wc.remainder()) {
        s0 += i32::from(*a) * i32::from(*b);
    }
    (s0 + s1) + (s2 + s3)
}

/// One output "row" of `n` channels whose inputs are a reduction of length `r`: `fill(start,
/// q)` quantizes reduction values `start .. start + q.len()` into `q` and says whether one
/// was NaN; channel `j` reads weight row `c0 + j` (`r` values) of `w` and bias `c0 + j`, and
/// its value goes to `emit(j, v)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn row(
    r: usize,
    n: usize,
    c0: usize,
    w: &Int8Weights<'_>,
    bias: Option<Weights<'_>>,
    act_scale: f32,
    mut fill: impl FnMut(usize, &mut [i16]) -> Result<bool, Error>,
    mut emit: impl FnMut(usize, f32) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut q = [0i16; CHUNK];
    let mut nan = false;
    let single = r <= CHUNK;
    if single {
        nan = fill(0, q.get_mut(..r).ok_or(SIZE_ERR)?)?;
    }
    let mut t0 = 0;
    while t0 < n {
        let tn = TILE.min(n - t0);
        let mut acc = [0i32; TILE];
        let mut k0 = 0;
        while k0 < r {
            let kn = CHUNK.min(r - k0);
            let qs = q.get_mut(..kn).ok_or(SIZE_ERR)?;
            if !single {
                nan |= fill(k0, qs)?;
            }
            for (j, a) in acc.iter_mut().enumerate().take(tn) {
                let start = (c0 + t0 + j) * r + k0;
                let wrow = w.values.get(start..start + kn).ok_or(SIZE_ERR)?;
                *a += dot(qs, wrow);
            }
            k0 += kn;
        }
        let mut b = [0f32; TILE];
        load_bias(bias, c0 + t0, b.get_mut(..tn).ok_or(SIZE_ERR)?).ok_or(SIZE_ERR)?;
        for (j, (a, bj)) in acc.iter().zip(&b).enumerate().take(tn) {
            let v = if nan {
                f32::NAN
            } else {
                let s = w.scales.get(c0 + t0 + j).ok_or(SIZE_ERR)?;
                (*a as f32) * (act_scale * s) + bj
            };
            emit(t0 + j, v)?;
        }
        t0 += tn;
    }
    Ok(())
}

/// Full-integer Dense: `out[rows, n] = a[rows, k] x w[n, k]^T (+ bias[n])` with `a`
/// quantized by `act_scale` (module docs), `rows = out.len() / n`.
///
/// Errors: sizes that do not fit, weights not `[n, k]` with `n` scales, a reduction longer
/// than [`super::MAX_INT8_REDUCTION`], a scale that is not finite and positive ([`Error::Invalid`]).
pub fn dense_q8(
    a: &[f32],
    w: Int8Weights<'_>,
    bias: Option<Weights<'_>>,
    act_scale: f32,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    dense_q8_with(cfg!(flowrt_dsp), false, a, w, bias, act_scale, k, n, out)
}

/// The code table ([`LutCodes`]) of a `Lut` (`table` at `lut_scale`) read by a full-integer
/// Dense at `act_scale`: `None` when the table holds a NaN.
///
/// Errors: a scale that is not finite and positive, a table not of 255 values.
pub(crate) fn lut_codes_for(
    table: Weights<'_>,
    lut_scale: f32,
    act_scale: f32,
) -> Result<Option<LutCodes>, Error> {
    let quant = Quantizer::new(act_scale)?;
    LutCodes::new(table, lut_scale, |v| scaled_code(v, quant.inv).1)
}

/// [`dense_q8`] of an input that holds int8 codes already (written by
/// [`super::lut::lut_codes`] for this node: per row of `k`, the codes and a NaN flag), so
/// nothing is quantized. `a` is that input's f32 buffer (`rows · k` values).
///
/// Errors: as [`dense_q8`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense_q8_codes(
    a: &[f32],
    w: Int8Weights<'_>,
    bias: Option<Weights<'_>>,
    act_scale: f32,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    dense_q8_with(cfg!(flowrt_dsp), true, a, w, bias, act_scale, k, n, out)
}

/// [`dense_q8`] through the blocked implementation (`int8_packed.rs`) on any target, for
/// the tests.
#[cfg(test)]
pub(super) fn dense_q8_blocked(
    a: &[f32],
    w: Int8Weights<'_>,
    bias: Option<Weights<'_>>,
    act_scale: f32,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    dense_q8_with(true, false, a, w, bias, act_scale, k, n, out)
}

/// [`dense_q8_codes`] through the blocked implementation on any target, for the tests.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(super) fn dense_q8_codes_blocked(
    a: &[f32],
    w: Int8Weights<'_>,
    bias: Option<Weights<'_>>,
    act_scale: f32,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    dense_q8_with(true, true, a, w, bias, act_scale, k, n, out)
}

/// [`dense_q8`] (`stored` false) or [`dense_q8_codes`] (`stored` true), blocked
/// (`int8_packed.rs`; compiled for ARMv7E-M and the tests) or portable.
#[allow(clippy::too_many_arguments)]
fn dense_q8_with(
    blocked: bool,
    stored: bool,
    a: &[f32],
    w: Int8Weights<'_>,
    bias: Option<Weights<'_>>,
    act_scale: f32,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    let quant = Quantizer::new(act_scale)?;
    let codes = if stored {
        InputCodes::Stored
    } else {
        InputCodes::Scaled(quant.inv)
    };
    if k == 0 || n == 0 || k > MAX_REDUCTION {
        return Err(SIZE_ERR);
    }
    let rows = out.len() / n;
    let ok = rows.checked_mul(n) == Some(out.len())
        && rows.checked_mul(k) == Some(a.len())
        && k.checked_mul(n) == Some(w.values.len())
        && w.scales.len() == n
        && w.inner == k
        && bias.is_none_or(|b| b.len() == n);
    if !ok {
        return Err(SIZE_ERR);
    }
    #[cfg(any(flowrt_dsp, test))]
    if blocked {
        // `black_box`: one copy of the blocked Dense for both kinds of input (LLVM cloned it
        // per constant `codes`, 3 KB more firmware for the few instructions of one branch
        // per row pair).
        let codes = core::hint::black_box(codes);
        return packed::dense(a, &w, bias, act_scale, codes, k, n, out);
    }
    #[cfg(not(any(flowrt_dsp, test)))]
    let _ = blocked;
    dense_rows(a, &w, bias, act_scale, codes, k, n, out)
}

/// The portable [`dense_q8`], one output row at a time (sizes checked by the caller; its own
/// frame, so the blocked path's buffers and these are never on the stack together).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn dense_rows(
    a: &[f32],
    w: &Int8Weights<'_>,
    bias: Option<Weights<'_>>,
    act_scale: f32,
    codes: InputCodes,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    for (arow, orow) in a.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
        row(
            k,
            n,
            0,
            w,
            bias,
            act_scale,
            |start, q| {
                // Codes are -127 ..= 127: they fit i16.
                Ok(match codes {
                    InputCodes::Scaled(inv) => {
                        let x = arow.get(start..start + q.len()).ok_or(SIZE_ERR)?;
                        quantize_with(|v| scaled_code(v, inv).1 as i16, x, q)
                    }
                    InputCodes::Stored => {
                        let row: &[i8] = bytemuck::cast_slice(arow);
                        let codes = row.get(start..start + q.len()).ok_or(SIZE_ERR)?;
                        for (d, c) in q.iter_mut().zip(codes) {
                            *d = i16::from(*c);
                        }
                        row.get(k).copied().ok_or(SIZE_ERR)? != 0
                    }
                })
            },
            |j, v| {
                *orow.get_mut(j).ok_or(SIZE_ERR)? = v;
                Ok(())
            },
        )?;
    }
    Ok(())
}

/// Full-integer Conv: `x [N, C, H, W]` (or `[N, C, L]`), `w [M, C/groups, KH, KW]` int8
/// (output channel first; rank 3 `[M, C/g, KW]` for 1-D), `bias [M]` → `out [N, M, OH, OW]`,
/// with `x` quantized by `act_scale`; padding contributes 0 (module docs).
///
/// Errors: as [`dense_q8`], and dims inconsistent with each other or the window.
#[allow(clippy::too_many_arguments)]
pub fn conv_q8(
    x: &[f32],
    xd: &Dims,
    w: Int8Weights<'_>,
    wd: &Dims,
    bias: Option<Weights<'_>>,
    act_scale: f32,
    groups: usize,
    win: &Window,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    let blocked = cfg!(flowrt_dsp);
    conv_q8_with(blocked, x, xd, w, wd, bias, act_scale, groups, win, out, od).map(|_| ())
}

/// [`conv_q8`] through the blocked implementation (`int8_packed.rs`) on any target where
/// its band of quantized input rows fits, for the tests; returns whether it did.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_q8_blocked(
    x: &[f32],
    xd: &Dims,
    w: Int8Weights<'_>,
    wd: &Dims,
    bias: Option<Weights<'_>>,
    act_scale: f32,
    groups: usize,
    win: &Window,
    out: &mut [f32],
    od: &Dims,
) -> Result<bool, Error> {
    conv_q8_with(true, x, xd, w, wd, bias, act_scale, groups, win, out, od)
}

/// [`conv_q8`], blocked (`int8_packed.rs`, when one band of input rows fits) or portable;
/// returns whether the blocked path ran.
#[allow(clippy::too_many_arguments)]
fn conv_q8_with(
    blocked: bool,
    x: &[f32],
    xd: &Dims,
    w: Int8Weights<'_>,
    wd: &Dims,
    bias: Option<Weights<'_>>,
    act_scale: f32,
    groups: usize,
    win: &Window,
    out: &mut [f32],
    od: &Dims,
) -> Result<bool, Error> {
    let quant = Quantizer::new(act_scale)?;
    check_len(w.values.len(), wd)?;
    // Output channel first: [M, C/g, KH, KW].
    let [m, cg, kh, kw] = nchw(wd)?;
    let geo = ConvGeometry::check(x, xd, [cg, kh, kw, m], wd, bias, groups, win, out, od)?;
    let red = cg * kh * kw;
    if !(1..=MAX_REDUCTION).contains(&red) || w.scales.len() != m || w.inner != red {
        return Err(SIZE_ERR);
    }
    #[cfg(any(flowrt_dsp, test))]
    if blocked && packed::conv(x, &geo, &w, bias, act_scale, quant.inv, groups, win, out)? {
        return Ok(true);
    }
    #[cfg(not(any(flowrt_dsp, test)))]
    let _ = blocked;
    conv_positions(x, &geo, &w, bias, act_scale, quant, groups, win, out)?;
    Ok(false)
}

/// The portable [`conv_q8`], one output position at a time (sizes checked by the caller;
/// its own frame, as [`dense_rows`]).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn conv_positions(
    x: &[f32],
    geo: &ConvGeometry,
    w: &Int8Weights<'_>,
    bias: Option<Weights<'_>>,
    act_scale: f32,
    quant: Quantizer,
    groups: usize,
    win: &Window,
    out: &mut [f32],
) -> Result<(), Error> {
    let &ConvGeometry {
        n,
        h,
        wi,
        cg,
        kh,
        kw,
        m,
        oh,
        ow,
        ..
    } = geo;
    let red = cg * kh * kw;
    let (sh, dh, ph, _) = win.get(0);
    let (sw, dw, pw, _) = win.get(1);
    let mg = m / groups;
    let (plane_in, plane_out) = (h * wi, oh * ow);
    for b in 0..n {
        let (xb, ob) = geo.image(b, x, out)?;
        for g in 0..groups {
            for oy in 0..oh {
                for ox in 0..ow {
                    // Reduction index r = (ci * kh + ky) * kw + kx over this group's channels.
                    let fill = |start: usize, q: &mut [i16]| {
                        let mut nan = false;
                        for (i, d) in q.iter_mut().enumerate() {
                            let ri = start + i;
                            let (ci, rest) = (ri / (kh * kw), ri % (kh * kw));
                            let (ky, kx) = (rest / kw, rest % kw);
                            let iy = (oy * sh + ky * dh).checked_sub(ph).filter(|v| *v < h);
                            let ix = (ox * sw + kx * dw).checked_sub(pw).filter(|v| *v < wi);
                            *d = match (iy, ix) {
                                (Some(iy), Some(ix)) => {
                                    let v = *xb
                                        .get((g * cg + ci) * plane_in + iy * wi + ix)
                                        .ok_or(SIZE_ERR)?;
                                    nan |= v.is_nan();
                                    quantize_one(v, quant.inv)
                                }
                                _ => 0,
                            };
                        }
                        Ok(nan)
                    };
                    let emit = |j: usize, v: f32| {
                        let at = (g * mg + j) * plane_out + oy * ow + ox;
                        *ob.get_mut(at).ok_or(SIZE_ERR)? = v;
                        Ok(())
                    };
                    row(red, mg, g * mg, w, bias, act_scale, fill, emit)?;
                }
            }
        }
    }
    Ok(())
}
