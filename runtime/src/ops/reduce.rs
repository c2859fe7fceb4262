//! Reductions, Softmax and Norm over a contiguous range of axes.
//!
//! A tensor is viewed as `[outer, len, inner]` where `len` is the product of the reduced
//! axes. Every output element folds its `len` inputs in a fixed order — ascending when the
//! reduced axes are strided (`inner > 1`, the sums vectorized across outputs); for sums
//! over a contiguous run, eight interleaved partial sums added pairwise (`lane_sum`) — so
//! the result does not depend on the batch size or the CPU.

use super::{abs, check_len, exp_nonpositive, Dims, SIZE_ERR};
use crate::Error;

/// Which reduction (ONNX `Reduce*`); file codes in parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    /// `Σ x` (0)
    Sum,
    /// `Σ x / n` (1)
    Mean,
    /// `max x`, NaN if any element is NaN (2)
    Max,
    /// `min x`, NaN if any element is NaN (3)
    Min,
    /// `Π x` (4)
    Prod,
    /// `Σ x²` (5)
    SumSquare,
    /// `Σ |x|` (6)
    L1,
    /// `sqrt(Σ x²)` (7)
    L2,
    /// `ln Σ x` (8)
    LogSum,
    /// `ln Σ eˣ`, computed as `m + ln Σ e^(x − m)` with `m = max x` (9)
    LogSumExp,
}

impl ReduceKind {
    /// Every kind, in code order.
    pub const ALL: [ReduceKind; 10] = [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::Prod,
        ReduceKind::SumSquare,
        ReduceKind::L1,
        ReduceKind::L2,
        ReduceKind::LogSum,
        ReduceKind::LogSumExp,
    ];

    /// File code.
    pub fn code(self) -> u32 {
        match self {
            ReduceKind::Sum => 0,
            ReduceKind::Mean => 1,
            ReduceKind::Max => 2,
            ReduceKind::Min => 3,
            ReduceKind::Prod => 4,
            ReduceKind::SumSquare => 5,
            ReduceKind::L1 => 6,
            ReduceKind::L2 => 7,
            ReduceKind::LogSum => 8,
            ReduceKind::LogSumExp => 9,
        }
    }

    /// Inverse of [`ReduceKind::code`].
    pub fn from_code(c: u32) -> Option<ReduceKind> {
        ReduceKind::ALL.get(c as usize).copied()
    }

    /// ONNX op name (`"ReduceSum"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "ReduceSum",
            ReduceKind::Mean => "ReduceMean",
            ReduceKind::Max => "ReduceMax",
            ReduceKind::Min => "ReduceMin",
            ReduceKind::Prod => "ReduceProd",
            ReduceKind::SumSquare => "ReduceSumSquare",
            ReduceKind::L1 => "ReduceL1",
            ReduceKind::L2 => "ReduceL2",
            ReduceKind::LogSum => "ReduceLogSum",
            ReduceKind::LogSumExp => "ReduceLogSumExp",
        }
    }
}

/// `(outer, len, inner)` of `xd` for the axes `start..end`, checking that `od` is `xd` with
/// those axes set to 1.
fn split(xd: &Dims, od: &Dims, start: usize, end: usize, keep: bool) -> Result<[usize; 3], Error> {
    let r = xd.rank();
    if start >= end || end > r || od.rank() != r {
        return Err(SIZE_ERR);
    }
    for i in 0..r {
        let want = if (start..end).contains(&i) && !keep {
            Some(1)
        } else {
            xd.get(i)
        };
        if od.get(i) != want {
            return Err(SIZE_ERR);
        }
    }
    Ok([
        xd.product(0, start).ok_or(SIZE_ERR)?,
        xd.product(start, end).ok_or(SIZE_ERR)?,
        xd.product(end, r).ok_or(SIZE_ERR)?,
    ])
}

fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if b > a {
        b
    } else {
        a
    }
}

fn nan_min(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if b < a {
        b
    } else {
        a
    }
}

/// Reduces axes `start..end` of `x` (dims `xd`) into `out`, whose dims `od` are `xd` with
/// those axes set to 1 (ONNX `keepdims = 1`; other forms are a reshape of this).
///
/// Errors: [`Error::Invalid`] when the dims disagree.
pub fn reduce(
    kind: ReduceKind,
    x: &[f32],
    xd: &Dims,
    start: usize,
    end: usize,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    check_len(x.len(), xd)?;
    check_len(out.len(), od)?;
    let [outer, len, inner] = split(xd, od, start, end, false)?;
    if len == 0 || inner == 0 {
        return Err(SIZE_ERR);
    }
    for (xo, oo) in x
        .chunks_exact(len * inner)
        .zip(out.chunks_exact_mut(inner))
        .take(outer)
    {
        if inner == 1 {
            // Contiguous runs (the reduced axes are last): fold each directly.
            if let Some(o) = oo.first_mut() {
                *o = reduce_run(kind, xo);
            }
            continue;
        }
        let rows = xo.chunks_exact(inner);
        let init = match kind {
            ReduceKind::Prod => 1.0,
            ReduceKind::Max | ReduceKind::LogSumExp => f32::NEG_INFINITY,
            ReduceKind::Min => f32::INFINITY,
            _ => 0.0,
        };
        oo.fill(init);
        match kind {
            ReduceKind::Sum | ReduceKind::Mean | ReduceKind::LogSum => fold(oo, rows, |a, v| a + v),
            ReduceKind::Prod => fold(oo, rows, |a, v| a * v),
            ReduceKind::Max => fold(oo, rows, nan_max),
            ReduceKind::Min => fold(oo, rows, nan_min),
            ReduceKind::SumSquare | ReduceKind::L2 => fold(oo, rows, |a, v| a + v * v),
            ReduceKind::L1 => fold(oo, rows, |a, v| a + abs(v)),
            ReduceKind::LogSumExp => {
                // m = max, then Σ e^(x - m) into a second pass.
                fold(oo, xo.chunks_exact(inner), nan_max);
                for (i, o) in oo.iter_mut().enumerate() {
                    let m = *o;
                    if !m.is_finite() {
                        // All -inf: ln 0 = -inf; +inf or NaN propagate.
                        continue;
                    }
                    let mut s = 0.0f32;
                    for row in xo.chunks_exact(inner) {
                        s += exp_or_zero(row.get(i).copied().unwrap_or(m) - m);
                    }
                    *o = m + libm::logf(s);
                }
            }
        }
        match kind {
            ReduceKind::Mean => {
                let n = len as f32;
                oo.iter_mut().for_each(|o| *o /= n);
            }
            ReduceKind::L2 => oo.iter_mut().for_each(|o| *o = super::sqrt(*o)),
            ReduceKind::LogSum => oo.iter_mut().for_each(|o| *o = libm::logf(*o)),
            _ => {}
        }
    }
    Ok(())
}

/// One reduction over a contiguous run: sums in [`lane_sum`]'s order, the others
/// ascending.
fn reduce_run(kind: ReduceKind, xs: &[f32]) -> f32 {
    let sum = |f: fn(f32) -> f32| lane_sum(xs, f);
    match kind {
        ReduceKind::Sum => sum(|v| v),
        ReduceKind::Mean => sum(|v| v) / xs.len() as f32,
        ReduceKind::Max => xs.iter().fold(f32::NEG_INFINITY, |a, v| nan_max(a, *v)),
        ReduceKind::Min => xs.iter().fold(f32::INFINITY, |a, v| nan_min(a, *v)),
        ReduceKind::Prod => xs.iter().fold(1.0f32, |a, v| a * v),
        ReduceKind::SumSquare => sum(|v| v * v),
        ReduceKind::L1 => sum(abs),
        ReduceKind::L2 => super::sqrt(sum(|v| v * v)),
        ReduceKind::LogSum => libm::logf(sum(|v| v)),
        ReduceKind::LogSumExp => {
            let m = xs.iter().fold(f32::NEG_INFINITY, |a, v| nan_max(a, *v));
            if !m.is_finite() {
                return m;
            }
            m + libm::logf(xs.iter().fold(0.0f32, |a, v| a + exp_or_zero(*v - m)))
        }
    }
}

/// `Σ f(x)` over a contiguous run in a fixed order that vectorizes: value `i` goes to
/// partial sum `i mod 8` (each partial sum ascending from `+0.0`), then the partial sums
/// are added pairwise, `((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))`. Every target
/// runs this order, so the bits are the same everywhere (a serial sum was a chain of
/// dependent adds: the normalizations of the image models spent most of their time in it).
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut s = [0f32; 8];
    let mut runs = xs.chunks_exact(8);
    for run in &mut runs {
        for (a, v) in s.iter_mut().zip(run) {
            *a += f(*v);
        }
    }
    for (a, v) in s.iter_mut().zip(runs.remainder()) {
        *a += f(*v);
    }
    ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
}

fn fold<'a>(acc: &mut [f32], rows: impl Iterator<Item = &'a [f32]>, f: impl Fn(f32, f32) -> f32) {
    for row in rows {
        for (a, v) in acc.iter_mut().zip(row) {
            *a = f(*a, *v);
        }
    }
}

/// `e^z` for `z <= 0`, exactly 0 below -87 (where [`exp_nonpositive`] clamps; the true
/// value is a denormal) so that `-inf` masks give exact zeros.
#[inline(always)]
fn exp_or_zero(z: f32) -> f32 {
    let e = exp_nonpositive(z);
    if z < -87.0 {
        0.0
    } else {
        e
    }
}

/// Softmax (or log-softmax with `log`) over axes `start..end` of `x` jointly: `e^(x − m) /
/// Σ e^(x − m)` with `m` the maximum; `out` has the dims of `x`.
///
/// Errors: [`Error::Invalid`] when the dims disagree.
pub fn softmax(
    x: &[f32],
    xd: &Dims,
    start: usize,
    end: usize,
    log: bool,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    check_len(x.len(), xd)?;
    check_len(out.len(), od)?;
    let [outer, len, inner] = split(xd, od, start, end, true)?;
    if len == 0 || inner == 0 {
        return Err(SIZE_ERR);
    }
    for (xo, oo) in x
        .chunks_exact(len * inner)
        .zip(out.chunks_exact_mut(len * inner))
        .take(outer)
    {
        if inner == 1 {
            // Contiguous rows (the softmax axes are last): loops that vectorize.
            let m = xo.iter().fold(f32::NEG_INFINITY, |m, v| nan_max(m, *v));
            for (o, v) in oo.iter_mut().zip(xo) {
                *o = exp_or_zero(*v - m);
            }
            let s = oo.iter().fold(0.0f32, |a, v| a + v);
            if log {
                let ls = libm::logf(s);
                for (o, v) in oo.iter_mut().zip(xo) {
                    *o = (*v - m) - ls;
                }
            } else {
                for o in oo.iter_mut() {
                    *o /= s;
                }
            }
            continue;
        }
        for i in 0..inner {
            // Element l of this softmax is at l * inner + i.
            let xs = || xo.iter().skip(i).step_by(inner);
            let m = xs().fold(f32::NEG_INFINITY, |m, v| nan_max(m, *v));
            let mut s = 0.0f32;
            for (o, v) in oo.iter_mut().skip(i).step_by(inner).zip(xs()) {
                *o = exp_or_zero(*v - m);
                s += *o;
            }
            if log {
                let ls = libm::logf(s);
                for (o, v) in oo.iter_mut().skip(i).step_by(inner).zip(xs()) {
                    *o = (*v - m) - ls;
                }
            } else {
                for o in oo.iter_mut().skip(i).step_by(inner) {
                    *o /= s;
                }
            }
        }
    }
    Ok(())
}

/// Normalization over axes `start..end` of `x` jointly ([`crate::format::NodeOp::Norm`]):
/// with `n` the number of values per group, `μ = (Σ x)·(1/n)`, `c = x − μ` and
/// `y = c · (1 / sqrt(Σ c² / n + eps))`, sums in [`reduce`]'s order (eight interleaved
/// partial sums for contiguous groups, ascending for strided ones). These are, operation for
/// operation, the `ReduceSum`, `Mul`, `Sub`, `Square`, `ReduceMean`, `Add`, `Rsqrt` and
/// `Mul` nodes the exporter fuses, so the result has their bits; `out` has the dims of `x`
/// and holds `c` between the passes (`x` is read twice, `out` written twice).
///
/// Errors: [`Error::Invalid`] when the dims disagree.
pub fn norm(
    x: &[f32],
    xd: &Dims,
    start: usize,
    end: usize,
    eps: f32,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    check_len(x.len(), xd)?;
    check_len(out.len(), od)?;
    let [outer, len, inner] = split(xd, od, start, end, true)?;
    if len == 0 || inner == 0 {
        return Err(SIZE_ERR);
    }
    let n = len as f32;
    let inv_n = 1.0 / n;
    let scale = |q: f32| 1.0 / super::sqrt(q / n + eps);
    for (xo, oo) in x
        .chunks_exact(len * inner)
        .zip(out.chunks_exact_mut(len * inner))
        .take(outer)
    {
        if inner == 1 {
            // Contiguous groups (the normalized axes are last): the sums in `reduce`'s
            // order for contiguous runs.
            let mu = lane_sum(xo, |v| v) * inv_n;
            for (o, v) in oo.iter_mut().zip(xo) {
                *o = *v - mu;
            }
            let r = scale(lane_sum(oo, |c| c * c));
            oo.iter_mut().for_each(|o| *o *= r);
            continue;
        }
        for i in 0..inner {
            // Element l of this group is at l * inner + i.
            let xs = || xo.iter().skip(i).step_by(inner);
            let mu = xs().fold(0.0f32, |a, v| a + v) * inv_n;
            let mut q = 0.0f32;
            for (o, v) in oo.iter_mut().skip(i).step_by(inner).zip(xs()) {
                let c = *v - mu;
                *o = c;
                q += c * c;
            }
            let r = scale(q);
            oo.iter_mut().skip(i).step_by(inner).for_each(|o| *o *= r);
        }
    }
    Ok(())
}
