//! Adaptive Dormand–Prince 5(4) (`dopri5`), for reference solutions.
//!
//! The tableau, the embedded error estimate, the error norm and the step-size controller are
//! torchdiffeq 0.2.5's (`Dopri5Solver`): Dormand–Prince coefficients with Shampine's error
//! weights, FSAL (the 7th stage of an accepted step is the next step's 1st), the RMS norm of
//! `err / (atol + rtol · max(|y0|, |y1|))`, accept when it is ≤ 1, and the next step
//! `dt · min(10, max(0.9 / ratio^(1/5), 0.2))` (no lower bound after an accepted step);
//! the first step is torchdiffeq's `_select_initial_step` (Hairer–Wanner II.4). As in
//! torchdiffeq, time and step size are kept in f64 (the stages see them in f32), the solver
//! steps past each requested time and the output there is the 4th-order dense output of
//! the step that covers it (Shampine's midpoint weights `DPS_C_MID`); the integration
//! continues from the step's end, not from the interpolated value. The step sequence —
//! and so the evaluation count — is torchdiffeq's; the values differ from it only by float
//! summation order.
//!
//! The grid's points are the output times (usually just `t_0` and `t_N`); the solver chooses
//! its own steps in between. The observer's `on_step` sees the dense output at each grid
//! point (changing it does not feed back). Everything runs through [`StateOps`], with no
//! allocation.

use super::{check_start, eval_hooked, StepObserver, Workspace, MAX_STAGES, NO_BUFFER, NO_POINT};
use crate::field::{StateOps, VelocityField};
use crate::grid::TimeGrid;
use crate::Error;

/// Error tolerances and limits of [`dopri5`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    /// Relative tolerance (torchdiffeq's default `1e-7`).
    pub rtol: f32,
    /// Absolute tolerance (torchdiffeq's default `1e-9`).
    pub atol: f32,
    /// Most attempted steps (accepted + rejected) before giving up (default 2^16: the
    /// fixtures need at most a few hundred; a network whose error estimate never falls,
    /// such as a corrupted file, is stopped after 393,216 evaluations instead of running
    /// for minutes).
    pub max_steps: usize,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            rtol: 1e-7,
            atol: 1e-9,
            max_steps: 1 << 16,
        }
    }
}

/// What an adaptive integration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Velocity evaluations.
    pub evaluations: usize,
    /// Accepted steps.
    pub accepted: usize,
    /// Rejected steps.
    pub rejected: usize,
}

const C: [f32; 7] = [0.0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0];

// f64 expressions rounded once to f32, as torchdiffeq converts its float64 tableau to the
// state's dtype.
const A: [[f32; 6]; 7] = [
    [0.0; 6],
    [(1.0f64 / 5.0) as f32, 0.0, 0.0, 0.0, 0.0, 0.0],
    [
        (3.0f64 / 40.0) as f32,
        (9.0f64 / 40.0) as f32,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    [
        (44.0f64 / 45.0) as f32,
        (-56.0f64 / 15.0) as f32,
        (32.0f64 / 9.0) as f32,
        0.0,
        0.0,
        0.0,
    ],
    [
        (19372.0f64 / 6561.0) as f32,
        (-25360.0f64 / 2187.0) as f32,
        (64448.0f64 / 6561.0) as f32,
        (-212.0f64 / 729.0) as f32,
        0.0,
        0.0,
    ],
    [
        (9017.0f64 / 3168.0) as f32,
        (-355.0f64 / 33.0) as f32,
        (46732.0f64 / 5247.0) as f32,
        (49.0f64 / 176.0) as f32,
        (-5103.0f64 / 18656.0) as f32,
        0.0,
    ],
    B6,
];

/// The 5th-order weights (= the last row of `A`: first same as last).
const B6: [f32; 6] = [
    (35.0f64 / 384.0) as f32,
    0.0,
    (500.0f64 / 1113.0) as f32,
    (125.0f64 / 192.0) as f32,
    (-2187.0f64 / 6784.0) as f32,
    (11.0f64 / 84.0) as f32,
];

/// Error weights `b − b̂` (Shampine's), as torchdiffeq's `c_error`.
const E: [f32; 7] = [
    (35.0f64 / 384.0 - 1951.0 / 21600.0) as f32,
    0.0,
    (500.0f64 / 1113.0 - 22642.0 / 50085.0) as f32,
    (125.0f64 / 192.0 - 451.0 / 720.0) as f32,
    (-2187.0f64 / 6784.0 + 12231.0 / 42400.0) as f32,
    (11.0f64 / 84.0 - 649.0 / 6300.0) as f32,
    (-1.0f64 / 60.0) as f32,
];

/// torchdiffeq's `DPS_C_MID`: weights of the midpoint value `y(t + h/2)` used by the
/// dense output (Shampine), in f32.
const MID: [f32; 7] = [
    (6025192743.0f64 / 30085553152.0 / 2.0) as f32,
    0.0,
    (51252292925.0f64 / 65400821598.0 / 2.0) as f32,
    (-2691868925.0f64 / 45128329728.0 / 2.0) as f32,
    (187940372067.0f64 / 1594534317056.0 / 2.0) as f32,
    (-1776094331.0f64 / 19743644256.0 / 2.0) as f32,
    (11237099.0f64 / 235043384.0 / 2.0) as f32,
];

const SAFETY: f64 = 0.9;
const IFACTOR: f64 = 10.0;
const DFACTOR: f64 = 0.2;
const ORDER: f64 = 5.0;

/// torchdiffeq's `_optimal_step_size`.
fn next_step(dt: f64, ratio: f64) -> f64 {
    if ratio == 0.0 {
        return dt * IFACTOR;
    }
    let dfactor = if ratio < 1.0 { 1.0 } else { DFACTOR };
    let factor = (SAFETY / libm::pow(ratio, 1.0 / ORDER))
        .max(dfactor)
        .min(IFACTOR);
    dt * factor
}

/// Integrates `x` adaptively through every point of `grid` (see the module docs) and returns
/// the step statistics. `work` needs 8 buffers ([`super::Method::Dopri5`]'s
/// `work_buffers()`); the observer's `on_step` is called at every grid point, its
/// `on_velocity` after every evaluation (with the grid interval index as `step`).
///
/// Errors: as [`super::integrate`]; [`Error::BadSolverConfig`] for non-positive or
/// non-finite tolerances, more than `max_steps` attempted steps, or a step size that
/// underflows; [`Error::NonFiniteOutput`] when the error estimate is not finite.
pub fn dopri5<S, F>(
    ops: &mut S,
    field: &mut F,
    tol: &Tolerances,
    grid: &dyn TimeGrid,
    x: &mut S::Buf,
    work: &mut Workspace<'_, S::Buf>,
    observer: &mut dyn StepObserver<S>,
) -> Result<Stats, Error>
where
    S: StateOps + ?Sized,
    F: VelocityField<S> + ?Sized,
{
    if !(tol.rtol.is_finite() && tol.atol.is_finite() && tol.rtol >= 0.0 && tol.atol >= 0.0)
        || (tol.rtol == 0.0 && tol.atol == 0.0)
    {
        return Err(Error::BadSolverConfig {
            what: "dopri5 tolerances must be finite, non-negative and not both zero",
        });
    }
    check_start(ops, grid, x, work, MAX_STAGES + 1)?;
    let (tmp_slot, k_slots) = work.bufs.split_first_mut().ok_or(NO_BUFFER)?;
    let tmp: &mut S::Buf = tmp_slot.as_deref_mut().ok_or(NO_BUFFER)?;
    let mut ks = k_slots.iter_mut();
    let mut next_k = || ks.next().and_then(|k| k.as_deref_mut()).ok_or(NO_BUFFER);
    let mut k: [&mut S::Buf; 7] = [
        next_k()?,
        next_k()?,
        next_k()?,
        next_k()?,
        next_k()?,
        next_k()?,
        next_k()?,
    ];

    let mut stats = Stats::default();
    {
        let mut cur: &mut S::Buf = &mut *x;
        let mut nxt: &mut S::Buf = &mut *tmp;
        let t_start = grid.point(0).ok_or(NO_POINT)?;
        let t_end = grid.point(grid.steps()).ok_or(NO_POINT)?;
        let dir: f32 = if t_end > t_start { 1.0 } else { -1.0 };
        let (rtol, atol) = (tol.rtol, tol.atol);

        // f0 and torchdiffeq's initial step selection.
        let [k1, k2, ..] = &mut k;
        eval_hooked(ops, field, observer, 0, t_start, &*cur, &mut **k1)?;
        stats.evaluations += 1;
        let d0 = ops.scaled_rms(&[(1.0, &*cur)], &*cur, &*cur, atol, rtol);
        let d1 = ops.scaled_rms(&[(1.0, &**k1)], &*cur, &*cur, atol, rtol);
        let h0: f64 = if d0 < 1e-5 || d1 < 1e-5 {
            1e-6
        } else {
            0.01 * d0 / d1
        };
        let h0f = h0 as f32;
        ops.lincomb(nxt, &*cur, &[(h0f * dir, &**k1)]);
        eval_hooked(
            ops,
            field,
            observer,
            0,
            t_start + h0f * dir,
            &*nxt,
            &mut **k2,
        )?;
        stats.evaluations += 1;
        let d2 = ops.scaled_rms(&[(1.0, &**k2), (-1.0, &**k1)], &*cur, &*cur, atol, rtol) / h0;
        let h1 = if d1 <= 1e-15 && d2 <= 1e-15 {
            (h0 * 1e-3).max(1e-6)
        } else {
            libm::pow(0.01 / d1.max(d2), 1.0 / ORDER)
        };
        // Step sizes and times in f64, as torchdiffeq keeps them; stages see them in f32.
        let mut dt: f64 = (100.0 * h0).min(h1);
        if !dt.is_finite() || dt <= 0.0 {
            return Err(Error::NonFiniteOutput {
                what: "dopri5 initial step",
            });
        }
        let dir64 = f64::from(dir);
        // The last accepted step [t_prev, t] (for the dense output); `None` before the first.
        let mut t = f64::from(t_start);
        let mut last: Option<(f64, f64)> = None;
        for n in 0..grid.steps() {
            let target = grid.point(n + 1).ok_or(NO_POINT)?;
            let target64 = f64::from(target);
            while (target64 - t) * dir64 > 0.0 {
                if stats.accepted + stats.rejected >= tol.max_steps {
                    return Err(Error::BadSolverConfig {
                        what: "dopri5 needed more than max_steps steps",
                    });
                }
                let t_new64 = t + dt * dir64;
                if t_new64 == t {
                    return Err(Error::BadSolverConfig {
                        what: "dopri5 step size underflow",
                    });
                }
                let (t32, h, t_new) = (t as f32, (dt * dir64) as f32, t_new64 as f32);
                // Stages 2..=7 (k[0] holds f(t, cur)).
                for i in 1..7 {
                    let (done, rest) = k.split_at_mut(i);
                    let ki: &mut S::Buf = rest.first_mut().ok_or(NO_BUFFER)?;
                    let row = A.get(i).ok_or(NO_BUFFER)?;
                    let mut terms: [(f32, &S::Buf); 6] = [(0.0, &*cur); 6];
                    let mut count = 0;
                    for (coef, kj) in row.iter().zip(done.iter()) {
                        if *coef != 0.0 {
                            if let Some(slot) = terms.get_mut(count) {
                                *slot = (h * *coef, &**kj);
                                count += 1;
                            }
                        }
                    }
                    ops.lincomb(nxt, &*cur, terms.get(..count).ok_or(NO_BUFFER)?);
                    let ci = C.get(i).copied().ok_or(NO_BUFFER)?;
                    let ti = if ci == 1.0 { t_new } else { t32 + ci * h };
                    eval_hooked(ops, field, observer, n, ti, &*nxt, ki)?;
                    stats.evaluations += 1;
                }
                // nxt = y1 (stage 7's input), k[6] = f(t_new, y1).
                let mut eterms: [(f32, &S::Buf); 7] = [(0.0, &*cur); 7];
                let mut count = 0;
                for (e, kj) in E.iter().zip(k.iter()) {
                    if *e != 0.0 {
                        if let Some(slot) = eterms.get_mut(count) {
                            *slot = (h * *e, &**kj);
                            count += 1;
                        }
                    }
                }
                let ratio = ops.scaled_rms(
                    eterms.get(..count).ok_or(NO_BUFFER)?,
                    &*cur,
                    &*nxt,
                    atol,
                    rtol,
                );
                if !ratio.is_finite() {
                    return Err(Error::NonFiniteOutput {
                        what: "dopri5 error estimate",
                    });
                }
                let proposal = next_step(dt, ratio);
                if ratio <= 1.0 {
                    stats.accepted += 1;
                    // cur = y1, nxt = y0; k[0] = f1 (first same as last), k[6] = f0.
                    core::mem::swap(&mut cur, &mut nxt);
                    k.swap(0, 6);
                    // y_mid = y0 + h Σ mid_i k_i into k[1] (mid_1 = 0, so k[1] is free).
                    let (head, tail) = k.split_at_mut(2);
                    let (f1, kmid) = head.split_at_mut(1);
                    let f1: &S::Buf = f1.first().map(|b| &**b).ok_or(NO_BUFFER)?;
                    let kmid: &mut S::Buf = kmid.first_mut().ok_or(NO_BUFFER)?;
                    let [k2, k3, k4, k5, f0] = tail else {
                        return Err(NO_BUFFER);
                    };
                    let mid_terms = [
                        (h * MID[0], &**f0),
                        (h * MID[2], &**k2),
                        (h * MID[3], &**k3),
                        (h * MID[4], &**k4),
                        (h * MID[5], &**k5),
                        (h * MID[6], f1),
                    ];
                    ops.lincomb(kmid, &*nxt, &mid_terms);
                    last = Some((t, t_new64));
                    t = t_new64;
                } else {
                    stats.rejected += 1;
                }
                dt = proposal;
            }
            // Dense output at the grid point inside the last accepted step, into k[2].
            let (t_prev, t_end) = last.ok_or(NO_POINT)?;
            let xs = (target64 - t_prev) / (t_end - t_prev);
            let h = (t_end - t_prev) as f32;
            let (x2, x3, x4) = (xs * xs, xs * xs * xs, xs * xs * xs * xs);
            let c_y0 = (-11.0 * x2 + 18.0 * x3 - 8.0 * x4) as f32;
            let c_y1 = (-5.0 * x2 + 14.0 * x3 - 8.0 * x4) as f32;
            let c_mid = (16.0 * x2 - 32.0 * x3 + 16.0 * x4) as f32;
            let c_f0 = (xs - 4.0 * x2 + 5.0 * x3 - 2.0 * x4) as f32;
            let c_f1 = (x2 - 3.0 * x3 + 2.0 * x4) as f32;
            let [f1, kmid, out, _, _, _, f0] = &mut k;
            ops.lincomb(
                out,
                &*nxt,
                &[
                    (c_y0, &*nxt),
                    (c_y1, &*cur),
                    (c_mid, &**kmid),
                    (h * c_f0, &**f0),
                    (h * c_f1, &**f1),
                ],
            );
            observer.on_step(ops, n, target, &mut **out)?;
        }
    }
    let [_, _, out, ..] = &k;
    ops.copy(x, &**out);
    if !ops.all_finite(x) {
        return Err(Error::NonFiniteOutput {
            what: "solver result",
        });
    }
    Ok(stats)
}
