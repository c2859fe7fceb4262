//! SDE sampling for stochastic interpolants: Euler–Maruyama on the CPU.
//!
//! For the linear Gaussian path `x_t = t·x1 + (1 − t)·x0`, `x0 ~ N(0, I)` (t: 0 = noise →
//! 1 = data, the `t` axis), every diffusion coefficient `g(t)` gives an SDE with the same
//! marginals as the flow ODE:
//!
//! ```text
//! dx = [v(x, t) + ½ g(t)² s(x, t)] dt + g(t) dW
//! ```
//!
//! with the score `s = ∇ log p_t`. The score comes from one of ([`Score`]):
//!
//! * the velocity itself: for this path `E[x0 | x] = x − t·v`, so `s = (t·v − x)/(1 − t)`;
//! * a second network predicting the noise `ε̂ ≈ E[x0 | x_t]`: `s = −ε̂/(1 − t)`;
//! * a second network predicting the score directly.
//!
//! One step from `t_n` to `t_{n+1}`, in f32, with `dt = t_{n+1} − t_n` and `z_n ~ N(0, I)`:
//! `c = (½·g)·g`, `x ← x + dt·(v + c·s) + (g·√dt)·z_n` (every step, the last included, adds
//! noise). The noise comes from a [`NoiseSource`]: flowrt's Philox generator
//! ([`PhiloxNoise`], bit-identical on every target and independent of the batch size) or a
//! caller's array ([`SliceNoise`], for reproducing a Python run). With `g = 0` the result is
//! bit-identical to the Euler ODE solver.

use crate::field::{CpuOps, VelocityField};
use crate::grid::{self, TimeGrid};
use crate::Error;

/// The diffusion coefficient `g(t)` (t axis).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Diffusion {
    /// `const:W`: `g(t) = W`.
    Const(f32),
    /// `linear:W`: `g(t) = W·(1 − t)` (vanishes at the data end).
    Linear(f32),
}

impl Diffusion {
    /// `g(t)`.
    pub fn at(&self, t: f32) -> f32 {
        match *self {
            Diffusion::Const(w) => w,
            Diffusion::Linear(w) => w * (1.0 - t),
        }
    }

    /// Parses `const:W` or `linear:W`.
    ///
    /// Errors: [`Error::BadSolverConfig`] for another form, a malformed, negative or
    /// non-finite `W`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = Error::BadSolverConfig {
            what: "diffusion schedule must be const:W or linear:W with a finite W >= 0",
        };
        let (kind, w) = s.split_once(':').ok_or(bad)?;
        let w: f32 = w.trim().parse().map_err(|_| bad)?;
        if !w.is_finite() || w < 0.0 {
            return Err(bad);
        }
        match kind {
            "const" => Ok(Diffusion::Const(w)),
            "linear" => Ok(Diffusion::Linear(w)),
            _ => Err(bad),
        }
    }
}

/// Where the score `s(x, t)` comes from (see the module docs).
pub enum Score<'f> {
    /// Derived from the velocity: `s = (t·v − x)/(1 − t)`.
    FromVelocity,
    /// A network predicting the noise `ε̂`: `s = −ε̂/(1 − t)`.
    Noise(&'f mut dyn VelocityField<CpuOps>),
    /// A network predicting the score.
    Direct(&'f mut dyn VelocityField<CpuOps>),
}

/// Standard normal noise for step `step` of an SDE solve.
pub trait NoiseSource {
    /// Fills `z` (one state's worth) with the noise of step `step`.
    ///
    /// Errors: whatever the source reports (e.g. a too-short array).
    fn fill(&mut self, step: usize, z: &mut [f32]) -> Result<(), Error>;
}

/// Philox noise: step `n` uses stream `n + 1` of [`crate::rng`] with this seed (stream 0 is
/// what `--seed` draws the initial noise from), element `i` of the state = normal `i`, so a
/// row's noise does not depend on the batch size.
#[derive(Debug, Clone, Copy)]
pub struct PhiloxNoise(pub u64);

impl NoiseSource for PhiloxNoise {
    fn fill(&mut self, step: usize, z: &mut [f32]) -> Result<(), Error> {
        crate::rng::fill_normal_stream(self.0, step as u64 + 1, 0, z);
        Ok(())
    }
}

/// Noise from an array of `steps × state_len` values (step-major), e.g. a `.npy` file
/// written next to a Python reference run.
#[derive(Debug, Clone, Copy)]
pub struct SliceNoise<'a>(pub &'a [f32]);

impl NoiseSource for SliceNoise<'_> {
    fn fill(&mut self, step: usize, z: &mut [f32]) -> Result<(), Error> {
        let n = z.len();
        let src = step
            .checked_mul(n)
            .and_then(|a| Some(a..a.checked_add(n)?))
            .and_then(|r| self.0.get(r))
            .ok_or(Error::ShapeMismatch {
                what: "SDE noise (steps x state values)",
                expected: step.saturating_add(1).saturating_mul(n),
                found: self.0.len(),
            })?;
        z.copy_from_slice(src);
        Ok(())
    }
}

/// f32 elements of work memory [`euler_maruyama`] needs for a state of `state_len`:
/// three state-sized buffers (velocity, score, noise); `None` on overflow.
pub fn work_len(state_len: usize) -> Option<usize> {
    state_len.checked_mul(3)
}

/// Integrates `x` (noise in, samples out) along `grid` (t axis, ascending) with
/// Euler–Maruyama (see the module docs). `field` is the velocity network (already wrapped
/// in the model's time convention), `work` at least [`work_len`] elements.
///
/// Errors: [`Error::BadSolverConfig`] for a grid that is not on `[0, 1]` ascending or a
/// negative / non-finite diffusion; [`Error::ShapeMismatch`] for short work memory;
/// [`Error::NonFiniteInput`] / [`Error::NonFiniteOutput`] for non-finite noise or results;
/// whatever the networks or the noise source return.
pub fn euler_maruyama<F, G, N>(
    field: &mut F,
    score: Score<'_>,
    diffusion: Diffusion,
    grid: &G,
    x: &mut [f32],
    work: &mut [f32],
    noise: &mut N,
) -> Result<(), Error>
where
    F: VelocityField<CpuOps> + ?Sized,
    G: TimeGrid + ?Sized,
    N: NoiseSource + ?Sized,
{
    grid::validate(grid)?;
    let w = match diffusion {
        Diffusion::Const(w) | Diffusion::Linear(w) => w,
    };
    if !w.is_finite() || w < 0.0 {
        return Err(Error::BadSolverConfig {
            what: "diffusion coefficient must be finite and non-negative",
        });
    }
    let n = x.len();
    let need = work_len(n).ok_or(Error::BadArgument {
        what: "state too large",
    })?;
    if work.len() < need {
        return Err(Error::ShapeMismatch {
            what: "SDE work memory",
            expected: need,
            found: work.len(),
        });
    }
    if !x.iter().all(|v| v.is_finite()) {
        return Err(Error::NonFiniteInput {
            what: "initial state",
        });
    }
    let (v, rest) = work.split_at_mut(n);
    let (s, rest) = rest.split_at_mut(n);
    let z = rest.get_mut(..n).ok_or(Error::BadArgument {
        what: "SDE work memory",
    })?;
    let mut score = score;
    let mut prev = None;
    for step in 0..grid.steps() {
        const NO_POINT: Error = Error::BadSolverConfig {
            what: "time grid is missing a point",
        };
        let t0 = grid.point(step).ok_or(NO_POINT)?;
        let t1 = grid.point(step + 1).ok_or(NO_POINT)?;
        if !(0.0..1.0).contains(&t0) || t1 <= t0 || t1 > 1.0 || prev.is_some_and(|p| t0 < p) {
            return Err(Error::BadSolverConfig {
                what: "SDE sampling needs an ascending grid on [0, 1] (t axis, noise at 0)",
            });
        }
        prev = Some(t1);
        let dt = t1 - t0;
        let g = diffusion.at(t0);
        field.eval(&mut CpuOps, t0, x, v)?;
        let one_minus_t = 1.0 - t0;
        match &mut score {
            Score::FromVelocity => {
                for ((s, v), x) in s.iter_mut().zip(v.iter()).zip(x.iter()) {
                    *s = (t0 * *v - *x) / one_minus_t;
                }
            }
            Score::Noise(net) => {
                net.eval(&mut CpuOps, t0, x, s)?;
                for s in s.iter_mut() {
                    *s = -*s / one_minus_t;
                }
            }
            Score::Direct(net) => net.eval(&mut CpuOps, t0, x, s)?,
        }
        noise.fill(step, z)?;
        if !z.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFiniteInput { what: "SDE noise" });
        }
        let c = (0.5 * g) * g;
        let gs = g * libm::sqrtf(dt);
        for (((x, v), s), z) in x.iter_mut().zip(v.iter()).zip(s.iter()).zip(z.iter()) {
            let drift = if c == 0.0 { *v } else { *v + c * *s };
            *x = if gs == 0.0 {
                *x + dt * drift
            } else {
                *x + dt * drift + gs * *z
            };
        }
    }
    if !x.iter().all(|v| v.is_finite()) {
        return Err(Error::NonFiniteOutput { what: "SDE result" });
    }
    Ok(())
}
