//! Time conventions: which end of the model's time axis is noise, how the time is scaled
//! before the network sees it, and the sign of the predicted field.
//!
//! The solvers integrate `dx/dτ = sign · net(x, scale · τ)` along a grid in the model's own
//! time `τ`, from the noise end of the axis to the data end. Declared once at export (the
//! `.frt` `TIME` section, `flowrt export --time ... --time-scale ... --negate-output`), so
//! the user only picks steps and a grid:
//!
//! | convention | noise → data | network input | output | used by |
//! |---|---|---|---|---|
//! | `t` (default) | τ = 0 → 1 | `t` | `dx/dt` (e.g. `x1 − x0`) | torchcfm, flow_matching |
//! | `sigma` | σ = 1 → 0 | `σ` or `1000 σ` | `dx/dσ = noise − x0` | SD3, Flux, diffusers |
//!
//! With `sigma` the Euler step is exactly diffusers' `x + (σ_next − σ) · v`; no conversion of
//! the model output is needed. A model whose output has the opposite sign of `dx/dτ` (e.g. a
//! σ-timed network trained to predict `x0 − noise`) is declared with `negate_output`.

use crate::field::{StateOps, VelocityField};
use crate::Error;

/// Which end of the model's time axis is noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimeAxis {
    /// `t`: 0 = noise, 1 = data (torchcfm, Meta flow_matching, Shortcut models).
    #[default]
    T,
    /// `sigma`: 1 = noise, 0 = data (SD3, Flux, diffusers flow-match schedulers).
    Sigma,
}

impl TimeAxis {
    /// The model time of pure noise (0 for `t`, 1 for `sigma`).
    pub fn noise_end(self) -> f32 {
        match self {
            TimeAxis::T => 0.0,
            TimeAxis::Sigma => 1.0,
        }
    }

    /// The model time of data (1 for `t`, 0 for `sigma`).
    pub fn data_end(self) -> f32 {
        match self {
            TimeAxis::T => 1.0,
            TimeAxis::Sigma => 0.0,
        }
    }

    /// Model time of the noise level `sigma` (1 = noise, 0 = data): `1 − σ` for `t`, `σ`
    /// itself for `sigma` (exact).
    pub fn from_noise_level(self, sigma: f32) -> f32 {
        match self {
            TimeAxis::T => 1.0 - sigma,
            TimeAxis::Sigma => sigma,
        }
    }

    /// The name used on the command line and in `flowrt inspect` (`t`, `sigma`).
    pub fn name(self) -> &'static str {
        match self {
            TimeAxis::T => "t",
            TimeAxis::Sigma => "sigma",
        }
    }

    /// Code in the `.frt` `TIME` section.
    pub fn code(self) -> u8 {
        match self {
            TimeAxis::T => 0,
            TimeAxis::Sigma => 1,
        }
    }

    /// The axis for a `TIME` section code; `None` if unknown.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(TimeAxis::T),
            1 => Some(TimeAxis::Sigma),
            _ => None,
        }
    }

    /// Parses `t` or `sigma`.
    ///
    /// Errors: [`Error::BadSolverConfig`] for anything else.
    pub fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "t" => Ok(TimeAxis::T),
            "sigma" => Ok(TimeAxis::Sigma),
            _ => Err(Error::BadSolverConfig {
                what: "unknown time axis (expected t or sigma)",
            }),
        }
    }
}

/// A model's time convention (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeConvention {
    /// Which end of the axis is noise.
    pub axis: TimeAxis,
    /// The network receives `scale · τ` (1, 999 as the official Rectified Flow code, 1000 as
    /// diffusers' timesteps).
    pub scale: f32,
    /// The network predicts `−dx/dτ`.
    pub negate_output: bool,
}

impl Default for TimeConvention {
    fn default() -> Self {
        TimeConvention {
            axis: TimeAxis::T,
            scale: 1.0,
            negate_output: false,
        }
    }
}

impl TimeConvention {
    /// Checks the scale: finite and positive.
    ///
    /// Errors: [`Error::BadSolverConfig`].
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::BadSolverConfig {
                what: "time scale must be finite and positive",
            });
        }
        Ok(())
    }

    /// `true` for the default (t 0 → 1, unscaled, not negated), which needs no `TIME` section.
    pub fn is_default(&self) -> bool {
        *self == TimeConvention::default()
    }

    /// The network's time input for model time `tau` (`scale · tau`, exact when scale is 1).
    pub fn network_time(&self, tau: f32) -> f32 {
        if self.scale == 1.0 {
            tau
        } else {
            self.scale * tau
        }
    }
}

/// A velocity field seen through a [`TimeConvention`]: the solver's model time `τ` reaches the
/// network as `scale · τ`, and a negated output is turned back into `dx/dτ`. Every sampler
/// of flowrt wraps its network in this, so grids are always in model time.
pub struct ConventionField<'f, F: ?Sized> {
    inner: &'f mut F,
    conv: TimeConvention,
}

impl<'f, F: ?Sized> ConventionField<'f, F> {
    /// Wraps `inner` (the raw network) in `conv`.
    pub fn new(inner: &'f mut F, conv: TimeConvention) -> Self {
        ConventionField { inner, conv }
    }
}

impl<S: StateOps + ?Sized, F: VelocityField<S> + ?Sized> VelocityField<S>
    for ConventionField<'_, F>
{
    fn eval(&mut self, ops: &mut S, t: f32, x: &S::Buf, v: &mut S::Buf) -> Result<(), Error> {
        self.inner.eval(ops, self.conv.network_time(t), x, v)?;
        if self.conv.negate_output {
            ops.scale(v, -1.0);
        }
        Ok(())
    }
}
