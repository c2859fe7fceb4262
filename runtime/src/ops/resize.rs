//! Resize (ONNX `Resize` / `Upsample`) over the last two axes, and Pad.

use super::{check_len, Dims, MAX_RANK, SIZE_ERR};
use crate::Error;

/// How an output coordinate maps to an input coordinate (ONNX
/// `coordinate_transformation_mode`); file codes in parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoordMode {
    /// `(o + 0.5) / scale − 0.5` (0)
    HalfPixel,
    /// as `HalfPixel`, but 0 when the output length is 1 (1)
    PytorchHalfPixel,
    /// `o · (in − 1) / (in · scale − 1)` (ONNX uses the unrounded resized length), 0 when
    /// the output length is 1 (2)
    AlignCorners,
    /// `o / scale` (3)
    Asymmetric,
}

impl CoordMode {
    /// File code.
    pub fn code(self) -> u32 {
        match self {
            CoordMode::HalfPixel => 0,
            CoordMode::PytorchHalfPixel => 1,
            CoordMode::AlignCorners => 2,
            CoordMode::Asymmetric => 3,
        }
    }

    /// Inverse of [`CoordMode::code`].
    pub fn from_code(c: u32) -> Option<CoordMode> {
        Some(match c {
            0 => CoordMode::HalfPixel,
            1 => CoordMode::PytorchHalfPixel,
            2 => CoordMode::AlignCorners,
            3 => CoordMode::Asymmetric,
            _ => return None,
        })
    }

    /// The input coordinate of output position `o`.
    fn source(self, o: usize, scale: f32, in_len: usize, out_len: usize) -> f32 {
        let o = o as f32;
        match self {
            CoordMode::HalfPixel => (o + 0.5) / scale - 0.5,
            CoordMode::PytorchHalfPixel => {
                if out_len > 1 {
                    (o + 0.5) / scale - 0.5
                } else {
                    0.0
                }
            }
            CoordMode::AlignCorners => {
                if out_len > 1 {
                    o * (in_len as f32 - 1.0) / (in_len as f32 * scale - 1.0)
                } else {
                    0.0
                }
            }
            CoordMode::Asymmetric => o / scale,
        }
    }
}

/// Interpolation of [`resize`] (ONNX `mode` and `nearest_mode`); file codes in parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResizeMode {
    /// Nearest, ties to the lower index (`round_prefer_floor`) (0)
    NearestRoundPreferFloor,
    /// Nearest, ties to the higher index (`round_prefer_ceil`) (1)
    NearestRoundPreferCeil,
    /// Nearest by `floor` (2)
    NearestFloor,
    /// Nearest by `ceil` (3)
    NearestCeil,
    /// Linear (bilinear over two axes), coordinates clamped to the input (4)
    Linear,
}

impl ResizeMode {
    /// File code.
    pub fn code(self) -> u32 {
        match self {
            ResizeMode::NearestRoundPreferFloor => 0,
            ResizeMode::NearestRoundPreferCeil => 1,
            ResizeMode::NearestFloor => 2,
            ResizeMode::NearestCeil => 3,
            ResizeMode::Linear => 4,
        }
    }

    /// Inverse of [`ResizeMode::code`].
    pub fn from_code(c: u32) -> Option<ResizeMode> {
        Some(match c {
            0 => ResizeMode::NearestRoundPreferFloor,
            1 => ResizeMode::NearestRoundPreferCeil,
            2 => ResizeMode::NearestFloor,
            3 => ResizeMode::NearestCeil,
            4 => ResizeMode::Linear,
            _ => return None,
        })
    }

    fn nearest(self, c: f32) -> f32 {
        match self {
            ResizeMode::NearestRoundPreferFloor => {
                if c == libm::floorf(c) + 0.5 {
                    libm::floorf(c)
                } else {
                    libm::roundf(c)
                }
            }
            ResizeMode::NearestRoundPreferCeil => libm::floorf(c + 0.5),
            ResizeMode::NearestFloor => libm::floorf(c),
            ResizeMode::NearestCeil => libm::ceilf(c),
            ResizeMode::Linear => c,
        }
    }
}

/// One output position along an axis: the two input indices and the weight of the second.
#[derive(Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    frac: f32,
}

fn tap(mode: ResizeMode, coord: CoordMode, o: usize, scale: f32, inl: usize, outl: usize) -> Tap {
    let c = coord.source(o, scale, inl, outl);
    let last = (inl - 1) as f32;
    if mode == ResizeMode::Linear {
        let c = c.clamp(0.0, last);
        let f = libm::floorf(c);
        let i0 = f as usize;
        Tap {
            i0,
            i1: (i0 + 1).min(inl - 1),
            frac: c - f,
        }
    } else {
        let n = mode.nearest(c).clamp(0.0, last) as usize;
        Tap {
            i0: n,
            i1: n,
            frac: 0.0,
        }
    }
}

/// ONNX `Resize` of the last two axes of `x` (rank >= 2; every other axis keeps its size):
/// `scales = [row scale, column scale]` as in the ONNX `scales` input (or `out / in` when
/// the model gave sizes).
///
/// Errors: [`Error::Invalid`] when the dims disagree or a scale is not positive.
pub fn resize(
    mode: ResizeMode,
    coord: CoordMode,
    scales: [f32; 2],
    x: &[f32],
    xd: &Dims,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    check_len(x.len(), xd)?;
    check_len(out.len(), od)?;
    let r = xd.rank();
    if r < 2 || od.rank() != r || (0..r - 2).any(|i| xd.get(i) != od.get(i)) {
        return Err(SIZE_ERR);
    }
    if !scales.iter().all(|s| s.is_finite() && *s > 0.0) {
        return Err(SIZE_ERR);
    }
    let (h, w) = (
        xd.get(r - 2).ok_or(SIZE_ERR)?,
        xd.get(r - 1).ok_or(SIZE_ERR)?,
    );
    let (oh, ow) = (
        od.get(r - 2).ok_or(SIZE_ERR)?,
        od.get(r - 1).ok_or(SIZE_ERR)?,
    );
    if h == 0 || w == 0 || oh == 0 || ow == 0 {
        return Err(SIZE_ERR);
    }
    for (xp, op) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for oy in 0..oh {
            let ty = tap(mode, coord, oy, scales[0], h, oh);
            let r0 = xp.get(ty.i0 * w..(ty.i0 + 1) * w).ok_or(SIZE_ERR)?;
            let r1 = xp.get(ty.i1 * w..(ty.i1 + 1) * w).ok_or(SIZE_ERR)?;
            let o_row = op.get_mut(oy * ow..(oy + 1) * ow).ok_or(SIZE_ERR)?;
            for (ox, o) in o_row.iter_mut().enumerate() {
                let tx = tap(mode, coord, ox, scales[1], w, ow);
                let at = |row: &[f32], i: usize| row.get(i).copied().ok_or(SIZE_ERR);
                *o = if mode == ResizeMode::Linear {
                    let (a, b) = (at(r0, tx.i0)?, at(r0, tx.i1)?);
                    let (c, d) = (at(r1, tx.i0)?, at(r1, tx.i1)?);
                    let top = a + (b - a) * tx.frac;
                    let bottom = c + (d - c) * tx.frac;
                    top + (bottom - top) * ty.frac
                } else {
                    at(r0, tx.i0)?
                };
            }
        }
    }
    Ok(())
}

/// How [`pad`] fills the border (ONNX `Pad` `mode`); file codes in parentheses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PadMode {
    /// A constant value (0)
    Constant(f32),
    /// Mirror without repeating the edge (1)
    Reflect,
    /// Repeat the edge element (2)
    Edge,
    /// Wrap around (3)
    Wrap,
}

impl PadMode {
    /// File code.
    pub fn code(self) -> u32 {
        match self {
            PadMode::Constant(_) => 0,
            PadMode::Reflect => 1,
            PadMode::Edge => 2,
            PadMode::Wrap => 3,
        }
    }

    /// The constant (0.0 for the other modes).
    pub fn value(self) -> f32 {
        match self {
            PadMode::Constant(v) => v,
            _ => 0.0,
        }
    }

    /// Inverse of [`PadMode::code`] (`value` is the constant of mode 0).
    pub fn from_code(c: u32, value: f32) -> Option<PadMode> {
        Some(match c {
            0 => PadMode::Constant(value),
            1 => PadMode::Reflect,
            2 => PadMode::Edge,
            3 => PadMode::Wrap,
            _ => return None,
        })
    }

    /// Source index along an axis of length `len` for padded position `p - begin` (`None` =
    /// the constant).
    fn source(self, p: isize, len: usize) -> Option<usize> {
        let n = len as isize;
        if (0..n).contains(&p) {
            return Some(p as usize);
        }
        match self {
            PadMode::Constant(_) => None,
            PadMode::Edge => Some(p.clamp(0, n - 1) as usize),
            PadMode::Wrap => Some(p.rem_euclid(n) as usize),
            PadMode::Reflect => {
                if n == 1 {
                    return Some(0);
                }
                let period = 2 * (n - 1);
                let q = p.rem_euclid(period);
                Some(if q < n { q } else { period - q } as usize)
            }
        }
    }
}

/// ONNX `Pad`: `out` dims are `xd[i] + begin[i] + end[i]`.
///
/// Reflect pads wider than the axis keep reflecting (numpy's `reflect`).
///
/// Errors: [`Error::Invalid`] when the dims disagree.
pub fn pad(
    mode: PadMode,
    begin: &[usize],
    end: &[usize],
    x: &[f32],
    xd: &Dims,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    check_len(x.len(), xd)?;
    check_len(out.len(), od)?;
    let r = xd.rank();
    if begin.len() != r || end.len() != r || od.rank() != r || r == 0 {
        return Err(SIZE_ERR);
    }
    for ((l, o), (b, e)) in xd
        .as_slice()
        .iter()
        .zip(od.as_slice())
        .zip(begin.iter().zip(end))
    {
        if *o != l + b + e || *l == 0 {
            return Err(SIZE_ERR);
        }
    }
    // Row-major strides of x.
    let mut xs = [1usize; MAX_RANK];
    let mut acc = 1usize;
    for (s, d) in xs.iter_mut().zip(xd.as_slice()).rev() {
        *s = acc;
        acc = acc.checked_mul(*d).ok_or(SIZE_ERR)?;
    }
    let last = r - 1;
    let (Some(ow), Some(xl), Some(b_last)) = (od.get(last), xd.get(last), begin.get(last)) else {
        return Err(SIZE_ERR);
    };
    let mut idx = [0usize; MAX_RANK];
    for row in out.chunks_exact_mut(ow) {
        // Source offset of the leading axes, or None when any is in a constant border.
        let mut base = Some(0usize);
        let lead = idx.iter().zip(begin).zip(xd.as_slice()).zip(&xs).take(last);
        for (((i, b), len), stride) in lead {
            let p = *i as isize - *b as isize;
            base = match (base, mode.source(p, *len)) {
                (Some(acc), Some(s)) => Some(acc + s * stride),
                _ => None,
            };
        }
        for (j, o) in row.iter_mut().enumerate() {
            let p = j as isize - *b_last as isize;
            *o = match (base, mode.source(p, xl)) {
                (Some(b), Some(s)) => x.get(b + s).copied().ok_or(SIZE_ERR)?,
                _ => mode.value(),
            };
        }
        // Advance the odometer over the leading axes.
        for (i, d) in idx.iter_mut().zip(od.as_slice()).take(last).rev() {
            *i += 1;
            if *i < *d {
                break;
            }
            *i = 0;
        }
    }
    Ok(())
}
