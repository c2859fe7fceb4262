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

/// What a few-step model's second time input (role `step`) receives for a step from model
/// time `t` to `r` (the next grid point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecondTime {
    /// No second time input.
    #[default]
    None,
    /// `r`, the end time of the step (mean flows `u(x, r, t)`), scaled like `t`.
    R,
    /// `h = t − r`, the signed length of the step toward data (MeanFlow's official `h`),
    /// scaled like `t`.
    H,
    /// The step size `|r − t|` (shortcut models fed `d`).
    StepSize,
    /// `log2(1 / |r − t|)`, the log2 step count on a uniform grid (the official shortcut
    /// models' `dt_base`: 0 for one step, 3 for eight).
    Log2Steps,
}

impl SecondTime {
    /// Code in the `TIME` section (0 none, 1 r, 2 h, 3 step size, 4 log2 steps).
    pub fn code(self) -> u8 {
        match self {
            SecondTime::None => 0,
            SecondTime::R => 1,
            SecondTime::H => 2,
            SecondTime::StepSize => 3,
            SecondTime::Log2Steps => 4,
        }
    }

    /// The form for a code; `None` if unknown.
    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => SecondTime::None,
            1 => SecondTime::R,
            2 => SecondTime::H,
            3 => SecondTime::StepSize,
            4 => SecondTime::Log2Steps,
            _ => return None,
        })
    }

    /// The command-line name (`none`, `r`, `h`, `step-size`, `log2-steps`).
    pub fn name(self) -> &'static str {
        match self {
            SecondTime::None => "none",
            SecondTime::R => "r",
            SecondTime::H => "h",
            SecondTime::StepSize => "step-size",
            SecondTime::Log2Steps => "log2-steps",
        }
    }

    /// Parses a command-line name.
    ///
    /// Errors: [`Error::BadSolverConfig`] for an unknown name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        [
            SecondTime::None,
            SecondTime::R,
            SecondTime::H,
            SecondTime::StepSize,
            SecondTime::Log2Steps,
        ]
        .into_iter()
        .find(|f| f.name() == s)
        .ok_or(Error::BadSolverConfig {
            what: "unknown second-time form (expected none, r, h, step-size or log2-steps)",
        })
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
    /// The form of the second time input (few-step models), or none.
    pub second: SecondTime,
}

impl Default for TimeConvention {
    fn default() -> Self {
        TimeConvention {
            axis: TimeAxis::T,
            scale: 1.0,
            negate_output: false,
            second: SecondTime::None,
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

    /// The second time input's value for a step from model time `t` to `r`; `None` when the
    /// convention has none.
    pub fn second_time(&self, t: f32, r: f32) -> Option<f32> {
        Some(match self.second {
            SecondTime::None => return None,
            SecondTime::R => self.network_time(r),
            SecondTime::H => self.network_time(t - r),
            SecondTime::StepSize => (r - t).abs(),
            SecondTime::Log2Steps => libm::log2(1.0 / f64::from((r - t).abs())) as f32,
        })
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
