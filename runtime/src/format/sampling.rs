//! The two sampling sections of a `.frt` file: `TIME` (the model's time convention, kind 10,
//! required when present) and `SOLVER_DEFAULTS` (method, steps, grid and guidance baked in at
//! export, kind 8, optional). Layouts are in `docs/frt-format.md`.

use crate::grid::{DiffusersShift, GridSpec, ShiftKind};
use crate::method::Method;
use crate::time::{TimeAxis, TimeConvention};
use crate::Error;

use super::{le_u16, le_u32, le_u64};

/// Length of the `TIME` section.
pub const TIME_LEN: usize = 16;
/// Length of the fixed part of `SOLVER_DEFAULTS` (the explicit grid points follow).
pub const DEFAULTS_HEADER_LEN: usize = 48;

/// Method codes of `SOLVER_DEFAULTS` (index into this table).
pub const METHOD_CODES: [Method; 12] = Method::EVERY;

const fn invalid(what: &'static str) -> Error {
    Error::Invalid { what }
}

fn le_f32(b: &[u8], off: usize) -> Option<f32> {
    le_u32(b, off).map(f32::from_bits)
}

fn le_f64(b: &[u8], off: usize) -> Option<f64> {
    le_u64(b, off).map(f64::from_bits)
}

/// Decodes and validates a `TIME` section.
///
/// Errors: [`Error::Invalid`] naming the broken rule.
pub(crate) fn read_time(b: &[u8]) -> Result<TimeConvention, Error> {
    if b.len() != TIME_LEN {
        return Err(invalid("time section has the wrong length"));
    }
    let byte = |i: usize| b.get(i).copied().unwrap_or(0xFF);
    let axis = TimeAxis::from_code(byte(0)).ok_or(invalid("time section: unknown time axis"))?;
    let flags = byte(1);
    if flags & !1 != 0 {
        return Err(invalid("time section: unknown flag bits"));
    }
    let second = crate::time::SecondTime::from_code(byte(2))
        .ok_or(invalid("time section: unknown second-time form"))?;
    if byte(3) != 0 || b.get(8..16).is_none_or(|r| r.iter().any(|&v| v != 0)) {
        return Err(invalid("time section reserved bytes are not zero"));
    }
    let conv = TimeConvention {
        axis,
        scale: le_f32(b, 4).ok_or(invalid("time section"))?,
        negate_output: flags & 1 != 0,
        second,
    };
    conv.validate()
        .map_err(|_| invalid("time section: scale must be finite and positive"))?;
    Ok(conv)
}

/// Guidance settings baked into a `.frt` file.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GuidanceDefaults {
    /// Classifier-free guidance scale `w`.
    pub scale: Option<f32>,
    /// The null (unconditional) class label.
    pub null_label: Option<u32>,
    /// Guidance interval `[a, b]` in model time.
    pub interval: Option<(f32, f32)>,
}

/// Solver defaults baked into a `.frt` file (`flowrt export --method --steps --grid
/// --guidance ...`); every field is optional.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SolverDefaults<'a> {
    /// Default method.
    pub method: Option<Method>,
    /// Default step count.
    pub steps: Option<usize>,
    /// Default grid (explicit points are borrowed from the file).
    pub grid: Option<GridSpec<'a>>,
    /// Default guidance.
    pub guidance: GuidanceDefaults,
}

/// Decodes and validates a `SOLVER_DEFAULTS` section (explicit points zero-copy).
///
/// Errors: [`Error::Invalid`] naming the broken rule.
pub(crate) fn read_defaults(b: &[u8]) -> Result<SolverDefaults<'_>, Error> {
    const T: Error = invalid("solver defaults section is truncated");
    if b.len() < DEFAULTS_HEADER_LEN {
        return Err(T);
    }
    let u8_at = |i: usize| b.get(i).copied().ok_or(T);
    let f = |o: usize| le_f32(b, o).ok_or(T);
    let method = match le_u16(b, 0).ok_or(T)? {
        0xFFFF => None,
        c => Some(
            *METHOD_CODES
                .get(usize::from(c))
                .ok_or(invalid("solver defaults: unknown method code"))?,
        ),
    };
    let steps = match le_u32(b, 4).ok_or(T)? {
        0 => None,
        s => Some(s as usize),
    };
    let value = le_f64(b, 8).ok_or(T)?;
    let shift_kind = match u8_at(16)? {
        0 => ShiftKind::Exponential,
        1 => ShiftKind::Linear,
        _ => return Err(invalid("solver defaults: unknown time-shift kind")),
    };
    let diffusers = u8_at(17)?;
    if diffusers & !3 != 0 {
        return Err(invalid("solver defaults: unknown diffusers flag bits"));
    }
    let gflags = u8_at(18)?;
    if gflags & !7 != 0 || u8_at(19)? != 0 {
        return Err(invalid("solver defaults: unknown guidance flag bits"));
    }
    let n_points = le_u32(b, 36).ok_or(T)? as usize;
    if b.get(40..48).is_none_or(|r| r.iter().any(|&v| v != 0)) {
        return Err(invalid("solver defaults reserved bytes are not zero"));
    }
    let need = n_points
        .checked_mul(4)
        .and_then(|p| p.checked_add(DEFAULTS_HEADER_LEN))
        .ok_or(T)?;
    if b.len() != need {
        return Err(invalid("solver defaults section has the wrong length"));
    }
    let points: &[f32] = bytemuck::try_cast_slice(b.get(DEFAULTS_HEADER_LEN..).ok_or(T)?)
        .map_err(|_| Error::Misaligned)?;
    let grid_kind = le_u16(b, 2).ok_or(T)?;
    if grid_kind > 6 {
        return Err(invalid("solver defaults: unknown grid kind"));
    }
    if grid_kind != 6 && n_points != 0 {
        return Err(invalid(
            "solver defaults: points given for a grid that takes none",
        ));
    }
    let grid = match grid_kind {
        0 => None,
        1 => Some(GridSpec::Uniform),
        2 => Some(GridSpec::StepSize(value as f32)),
        3 => Some(GridSpec::Shift(value)),
        4 => Some(GridSpec::DynamicShift {
            mu: value,
            kind: shift_kind,
        }),
        5 => Some(GridSpec::Diffusers {
            shift: if diffusers & 1 != 0 {
                DiffusersShift::Dynamic {
                    mu: value,
                    kind: shift_kind,
                }
            } else {
                DiffusersShift::Static(value)
            },
            flux_sigmas: diffusers & 2 != 0,
        }),
        6 => Some(GridSpec::Explicit(points)),
        _ => return Err(invalid("solver defaults: unknown grid kind")),
    };
    if !value.is_finite() || points.iter().any(|p| !p.is_finite()) {
        return Err(invalid("solver defaults: a grid value is not finite"));
    }
    let guidance = GuidanceDefaults {
        scale: (gflags & 1 != 0).then_some(f(20)?),
        null_label: (gflags & 4 != 0).then_some(le_u32(b, 24).ok_or(T)?),
        interval: (gflags & 2 != 0).then_some((f(28)?, f(32)?)),
    };
    if guidance.scale.is_some_and(|s| !s.is_finite())
        || guidance
            .interval
            .is_some_and(|(a, b)| !(a.is_finite() && b.is_finite() && a <= b))
    {
        return Err(invalid(
            "solver defaults: guidance values are not finite or ordered",
        ));
    }
    Ok(SolverDefaults {
        method,
        steps,
        grid,
        guidance,
    })
}

#[cfg(feature = "alloc")]
mod write {
    use super::*;
    use alloc::vec::Vec;

    /// Encodes a `TIME` section.
    pub fn encode_time(c: &TimeConvention) -> Vec<u8> {
        let mut out = Vec::with_capacity(TIME_LEN);
        out.push(c.axis.code());
        out.push(u8::from(c.negate_output));
        out.extend_from_slice(&[c.second.code(), 0]);
        out.extend_from_slice(&c.scale.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        out
    }

    /// Encodes a `SOLVER_DEFAULTS` section.
    ///
    /// Errors: [`Error::BadSolverConfig`] for a step count or point count above `u32`.
    pub fn encode_defaults(d: &SolverDefaults<'_>) -> Result<Vec<u8>, Error> {
        let too_big = Error::BadSolverConfig {
            what: "solver default too large for the file format",
        };
        let mut out = Vec::with_capacity(DEFAULTS_HEADER_LEN);
        let method = match d.method {
            None => 0xFFFF,
            Some(m) => METHOD_CODES
                .iter()
                .position(|c| *c == m)
                .map(|p| p as u16)
                .ok_or(too_big)?,
        };
        out.extend_from_slice(&method.to_le_bytes());
        let (kind, value, shift_kind, diffusers, points): (u16, f64, u8, u8, &[f32]) = match d.grid
        {
            None => (0, 0.0, 0, 0, &[]),
            Some(GridSpec::Uniform) => (1, 0.0, 0, 0, &[]),
            Some(GridSpec::StepSize(h)) => (2, f64::from(h), 0, 0, &[]),
            Some(GridSpec::Shift(s)) => (3, s, 0, 0, &[]),
            Some(GridSpec::DynamicShift { mu, kind }) => (4, mu, kind_code(kind), 0, &[]),
            Some(GridSpec::Diffusers { shift, flux_sigmas }) => {
                let flux = if flux_sigmas { 2 } else { 0 };
                match shift {
                    DiffusersShift::Static(s) => (5, s, 0, flux, &[]),
                    DiffusersShift::Dynamic { mu, kind } => (5, mu, kind_code(kind), 1 | flux, &[]),
                }
            }
            Some(GridSpec::Explicit(p)) => (6, 0.0, 0, 0, p),
        };
        out.extend_from_slice(&kind.to_le_bytes());
        let steps = u32::try_from(d.steps.unwrap_or(0)).map_err(|_| too_big)?;
        out.extend_from_slice(&steps.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
        let g = &d.guidance;
        let gflags = u8::from(g.scale.is_some())
            | (u8::from(g.interval.is_some()) << 1)
            | (u8::from(g.null_label.is_some()) << 2);
        out.extend_from_slice(&[shift_kind, diffusers, gflags, 0]);
        out.extend_from_slice(&g.scale.unwrap_or(0.0).to_le_bytes());
        out.extend_from_slice(&g.null_label.unwrap_or(0).to_le_bytes());
        let (a, b) = g.interval.unwrap_or((0.0, 0.0));
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
        let n = u32::try_from(points.len()).map_err(|_| too_big)?;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        for p in points {
            out.extend_from_slice(&p.to_le_bytes());
        }
        Ok(out)
    }

    fn kind_code(k: ShiftKind) -> u8 {
        match k {
            ShiftKind::Exponential => 0,
            ShiftKind::Linear => 1,
        }
    }
}

#[cfg(feature = "alloc")]
pub use write::{encode_defaults, encode_time};
