//! One- and few-step model families that are not a plain `v(x, t)`: mean flows and shortcut
//! models (a second time input), and autoregressive rollouts (no ODE at all).
//!
//! # Mean flows and shortcut models
//!
//! These networks take a second time input (signature role `step`) whose meaning the
//! model's [`TimeConvention::second`] declares ([`SecondTime`]). They are sampled with their
//! own one-step rule, which for a grid `t_0, …, t_N` (model time, noise end first) is an
//! Euler step with the network told where the step ends:
//!
//! ```text
//! x_{n+1} = x_n + (t_{n+1} − t_n) · net(x_n, scale·t_n, second(t_n, t_{n+1}))
//! ```
//!
//! * MeanFlow (`u(z, t, h)`, t = 1 noise → 0 data, `h = t − r`): `z_r = z_t − (t − r)·u` —
//!   declare `--time sigma --second-time h`;
//! * shortcut models (`v(x, t, d)`, t = 0 noise → 1 data, `d` = log2 of the step count in the
//!   official code, or the step size): `x + d·v` — `--second-time log2-steps | step-size`.
//!
//! One step from noise is `N = 1`. Every RK/multistep method would call the network at
//! stage times that the second input cannot describe, so only this rule is offered.
//!
//! # Rollout
//!
//! A neural PDE surrogate maps `state_n → state_{n+1}` (signature: an `x` input and an
//! output of the same size, no time): [`rollout`] applies it `steps` times.

use crate::field::ConditionalField;
use crate::field::Conditioning;
use crate::field::CpuOps;
use crate::grid::{self, TimeGrid};
use crate::solver::StepObserver;
use crate::time::{SecondTime, TimeConvention};
use crate::Error;

const NO_POINT: Error = Error::BadSolverConfig {
    what: "time grid is missing a point",
};

/// Samples a model with a second time input along `grid` (see the module docs). `v` is
/// state-sized scratch. The observer sees every velocity and step.
///
/// Errors: [`Error::BadSolverConfig`] when the convention declares no second time input,
/// sizes, non-finite values, or whatever the network returns.
#[allow(clippy::too_many_arguments)]
pub fn sample_two_time<F, G, O>(
    net: &mut F,
    conv: &TimeConvention,
    cond: &Conditioning<'_>,
    grid: &G,
    x: &mut [f32],
    v: &mut [f32],
    observer: &mut O,
) -> Result<(), Error>
where
    F: ConditionalField + ?Sized,
    G: TimeGrid + ?Sized,
    O: StepObserver<CpuOps> + ?Sized,
{
    if conv.second == SecondTime::None {
        return Err(Error::BadSolverConfig {
            what: "the model has no second time input",
        });
    }
    grid::validate(grid)?;
    if v.len() != x.len() {
        return Err(Error::ShapeMismatch {
            what: "few-step velocity scratch",
            expected: x.len(),
            found: v.len(),
        });
    }
    if !x.iter().all(|e| e.is_finite()) {
        return Err(Error::NonFiniteInput {
            what: "initial state",
        });
    }
    for n in 0..grid.steps() {
        let t0 = grid.point(n).ok_or(NO_POINT)?;
        let t1 = grid.point(n + 1).ok_or(NO_POINT)?;
        let dt = t1 - t0;
        let c = Conditioning {
            step: conv.second_time(t0, t1),
            ..*cond
        };
        net.eval_cond(conv.network_time(t0), x, &c, v)?;
        if conv.negate_output {
            v.iter_mut().for_each(|e| *e = -*e);
        }
        observer.on_velocity(&mut CpuOps, n, t0, x, v)?;
        for (xi, vi) in x.iter_mut().zip(v.iter()) {
            *xi += dt * *vi;
        }
        observer.on_step(&mut CpuOps, n, t1, x)?;
    }
    if !x.iter().all(|e| e.is_finite()) {
        return Err(Error::NonFiniteOutput {
            what: "solver result",
        });
    }
    Ok(())
}

/// Applies a state-to-state network `steps` times to `x` (autoregressive rollout), with
/// `next` as state-sized scratch; the observer's `on_step` sees every state (its `t` is the
/// step number).
///
/// Errors: sizes, non-finite states ([`Error::NonFiniteOutput`] names the first bad step's
/// result), or whatever the network returns.
pub fn rollout<F, O>(
    net: &mut F,
    cond: &Conditioning<'_>,
    steps: usize,
    x: &mut [f32],
    next: &mut [f32],
    observer: &mut O,
) -> Result<(), Error>
where
    F: ConditionalField + ?Sized,
    O: StepObserver<CpuOps> + ?Sized,
{
    if next.len() != x.len() {
        return Err(Error::ShapeMismatch {
            what: "rollout scratch",
            expected: x.len(),
            found: next.len(),
        });
    }
    if !x.iter().all(|e| e.is_finite()) {
        return Err(Error::NonFiniteInput {
            what: "initial state",
        });
    }
    for n in 0..steps {
        net.eval_cond(0.0, x, cond, next)?;
        if !next.iter().all(|e| e.is_finite()) {
            return Err(Error::NonFiniteOutput {
                what: "rollout state",
            });
        }
        x.copy_from_slice(next);
        observer.on_step(&mut CpuOps, n, (n + 1) as f32, x)?;
    }
    Ok(())
}
