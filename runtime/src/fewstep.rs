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

use crate::field::{ConditionalField, Conditioning, StateOps};
use crate::grid::{self, TimeGrid};
use crate::solver::StepObserver;
use crate::time::{SecondTime, TimeConvention};
use crate::Error;

const NO_POINT: Error = Error::BadSolverConfig {
    what: "time grid is missing a point",
};

/// `Ok` when every element of `x` is finite, else `err`.
fn finite<S: StateOps + ?Sized>(ops: &mut S, x: &S::Buf, err: Error) -> Result<(), Error> {
    if ops.all_finite(x) {
        Ok(())
    } else {
        Err(err)
    }
}

/// `Ok` when `buf` has `len` elements, else a [`Error::ShapeMismatch`] naming `what`.
fn same_len<S: StateOps + ?Sized>(
    ops: &S,
    buf: &S::Buf,
    len: usize,
    what: &'static str,
) -> Result<(), Error> {
    let found = ops.len(buf);
    if found == len {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what,
            expected: len,
            found,
        })
    }
}

/// Samples a model with a second time input along `grid` on any backend (see the module
/// docs). `v` and `next` are state-sized scratch. The observer sees every velocity and step.
///
/// Errors: [`Error::BadSolverConfig`] when the convention declares no second time input,
/// sizes, non-finite values, or whatever the network returns.
#[allow(clippy::too_many_arguments)]
pub fn sample_two_time<S, F>(
    ops: &mut S,
    net: &mut F,
    conv: &TimeConvention,
    cond: &Conditioning<'_>,
    grid: &dyn TimeGrid,
    x: &mut S::Buf,
    [v, next]: [&mut S::Buf; 2],
    observer: &mut dyn StepObserver<S>,
) -> Result<(), Error>
where
    S: StateOps + ?Sized,
    F: ConditionalField<S> + ?Sized,
{
    if conv.second == SecondTime::None {
        return Err(Error::BadSolverConfig {
            what: "the model has no second time input",
        });
    }
    grid::validate(grid)?;
    let n = ops.len(x);
    same_len(ops, v, n, "few-step velocity scratch")?;
    same_len(ops, next, n, "few-step state scratch")?;
    finite(
        ops,
        x,
        Error::NonFiniteInput {
            what: "initial state",
        },
    )?;
    for step in 0..grid.steps() {
        let t0 = grid.point(step).ok_or(NO_POINT)?;
        let t1 = grid.point(step + 1).ok_or(NO_POINT)?;
        let c = Conditioning {
            step: conv.second_time(t0, t1),
            ..*cond
        };
        net.eval_cond(ops, conv.network_time(t0), x, &c, v)?;
        if conv.negate_output {
            ops.scale(v, -1.0);
        }
        observer.on_velocity(ops, step, t0, x, v)?;
        ops.lincomb(next, x, &[(t1 - t0, v)]);
        ops.copy(x, next);
        observer.on_step(ops, step, t1, x)?;
    }
    finite(
        ops,
        x,
        Error::NonFiniteOutput {
            what: "solver result",
        },
    )
}

/// Applies a state-to-state network `steps` times to `x` (autoregressive rollout) on any
/// backend, with `next` as state-sized scratch; the observer's `on_step` sees every state
/// (its `t` is the step number).
///
/// Errors: sizes, non-finite states ([`Error::NonFiniteOutput`] names the first bad step's
/// result), or whatever the network returns.
pub fn rollout<S, F>(
    ops: &mut S,
    net: &mut F,
    cond: &Conditioning<'_>,
    steps: usize,
    x: &mut S::Buf,
    next: &mut S::Buf,
    observer: &mut dyn StepObserver<S>,
) -> Result<(), Error>
where
    S: StateOps + ?Sized,
    F: ConditionalField<S> + ?Sized,
{
    let n = ops.len(x);
    same_len(ops, next, n, "rollout scratch")?;
    finite(
        ops,
        x,
        Error::NonFiniteInput {
            what: "initial state",
        },
    )?;
    for step in 0..steps {
        net.eval_cond(ops, 0.0, x, cond, next)?;
        finite(
            ops,
            next,
            Error::NonFiniteOutput {
                what: "rollout state",
            },
        )?;
        ops.copy(x, next);
        observer.on_step(ops, step, (step + 1) as f32, x)?;
    }
    Ok(())
}
