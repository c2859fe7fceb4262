//! Solvers that reuse velocities across steps: Adams–Bashforth 2–4 and FlowTurbo's
//! pseudo-corrector. One velocity evaluation per step.
//!
//! # Adams–Bashforth on any grid
//!
//! With `f_i = v(x_i, t_i)`, step `n` is
//!
//! ```text
//! x_{n+1} = x_n + β_0 f_n + β_1 f_{n-1} + ... + β_{m-1} f_{n-m+1},   m = min(k, n + 1)
//! β_j     = ∫_{t_n}^{t_{n+1}} ℓ_j(s) ds
//! ```
//!
//! where `ℓ_j` is the Lagrange basis polynomial over the nodes `t_n, t_{n-1}, ...,
//! t_{n-m+1}` (`ℓ_j(t_{n-i}) = δ_ij`). The coefficients are computed exactly for the actual
//! (possibly non-uniform) grid in f64 — software `f64` arithmetic, the same on every target —
//! and rounded to f32; the update is one [`StateOps::lincomb`] in the order `β_0 … β_{m-1}`.
//! The start-up uses the lower orders (step 0 is Euler, step 1 AB2, …), so no other solver is
//! involved and results are easy to reproduce elsewhere. On a uniform grid the coefficients
//! are the textbook ones (AB2: `3/2, −1/2`; AB3: `23/12, −16/12, 5/12`; AB4:
//! `55/24, −59/24, 37/24, −9/24`, times `dt`).
//!
//! # Pseudo-corrector (`heun-reuse`)
//!
//! FlowTurbo (Zhao et al., 2024) keeps Heun's predictor–corrector but replaces the velocity
//! at the start of each step by the corrector velocity of the previous step:
//!
//! ```text
//! v_0 = v(x_0, t_0)
//! x̃   = x_n + dt v_n;   w = v(x̃, t_{n+1});   x_{n+1} = x_n + (dt/2) v_n + (dt/2) w;   v_{n+1} = w
//! ```
//!
//! `steps + 1` evaluations instead of Heun's `2 · steps`.

use super::{check_start, eval_hooked, finish, StepObserver, Workspace, NO_BUFFER, NO_POINT};
use crate::field::{StateOps, VelocityField};
use crate::grid::TimeGrid;
use crate::Error;

/// Highest Adams–Bashforth order supported.
pub const MAX_AB_ORDER: usize = 4;

/// The Adams–Bashforth weights `β_0 .. β_{m-1}` (already multiplied by the step: they are
/// integrals over `[t_n, t_{n+1}]`) for the nodes `times = [t_n, t_{n-1}, ..., t_{n-m+1}]`
/// and the next point `t_next`, in f64. `m = times.len()` must be 1..=4.
///
/// Errors: [`Error::BadSolverConfig`] for more than four nodes, or two equal nodes (the
/// interpolation is then undefined).
pub fn ab_weights(times: &[f64], t_next: f64) -> Result<[f64; MAX_AB_ORDER], Error> {
    let m = times.len();
    if m == 0 || m > MAX_AB_ORDER {
        return Err(Error::BadSolverConfig {
            what: "Adams-Bashforth needs 1 to 4 nodes",
        });
    }
    let t_n = times.first().copied().ok_or(NO_POINT)?;
    let h = t_next - t_n;
    let mut out = [0f64; MAX_AB_ORDER];
    for (j, out_j) in out.iter_mut().enumerate().take(m) {
        let tau_j = times.get(j).copied().ok_or(NO_POINT)? - t_n;
        // Numerator polynomial prod_{i != j} (s - tau_i) in s = t - t_n, coefficients by degree.
        let mut poly = [1.0, 0.0, 0.0, 0.0, 0.0f64];
        let mut degree = 0usize;
        let mut denom = 1f64;
        for (i, &ti) in times.iter().enumerate() {
            if i == j {
                continue;
            }
            let tau_i = ti - t_n;
            denom *= tau_j - tau_i;
            // poly <- poly * (s - tau_i)
            let mut next = [0f64; MAX_AB_ORDER + 1];
            for (d, c) in poly.iter().enumerate().take(degree + 1) {
                if let Some(slot) = next.get_mut(d + 1) {
                    *slot += c;
                }
                if let Some(slot) = next.get_mut(d) {
                    *slot -= tau_i * c;
                }
            }
            poly = next;
            degree += 1;
        }
        if denom == 0.0 || !denom.is_finite() {
            return Err(Error::BadSolverConfig {
                what: "Adams-Bashforth nodes coincide",
            });
        }
        // ∫_0^h poly(s) ds, Horner on the integrated polynomial.
        let mut integral = 0f64;
        for d in (0..=degree).rev() {
            let c = poly.get(d).copied().unwrap_or(0.0) / (d as f64 + 1.0);
            integral = integral * h + c;
        }
        *out_j = integral * h / denom;
    }
    Ok(out)
}

/// Adams–Bashforth of order `order` (2..=4) along `grid` (see the module docs).
/// `work` needs `order + 1` buffers (one temporary, `order` velocity slots used as a ring).
///
/// Errors: as [`super::integrate`]; [`Error::BadSolverConfig`] for an order outside 2..=4.
pub fn adams_bashforth<S, F, G, O>(
    ops: &mut S,
    field: &mut F,
    order: usize,
    grid: &G,
    x: &mut S::Buf,
    work: &mut Workspace<'_, S::Buf>,
    observer: &mut O,
) -> Result<(), Error>
where
    S: StateOps + ?Sized,
    F: VelocityField<S> + ?Sized,
    G: TimeGrid + ?Sized,
    O: StepObserver<S> + ?Sized,
{
    if !(2..=MAX_AB_ORDER).contains(&order) {
        return Err(Error::BadSolverConfig {
            what: "Adams-Bashforth order must be 2, 3 or 4",
        });
    }
    check_start(ops, grid, x, work, order + 1)?;
    let (tmp_slot, k_slots) = work.bufs.split_first_mut().ok_or(NO_BUFFER)?;
    let tmp: &mut S::Buf = tmp_slot.as_deref_mut().ok_or(NO_BUFFER)?;
    let ring = k_slots.get_mut(..order).ok_or(NO_BUFFER)?;

    let mut result_in_tmp = false;
    {
        let mut cur: &mut S::Buf = &mut *x;
        let mut nxt: &mut S::Buf = &mut *tmp;
        for n in 0..grid.steps() {
            let t0 = grid.point(n).ok_or(NO_POINT)?;
            let t1 = grid.point(n + 1).ok_or(NO_POINT)?;
            let slot = n % order;
            {
                let f_n = ring
                    .get_mut(slot)
                    .and_then(|k| k.as_deref_mut())
                    .ok_or(NO_BUFFER)?;
                eval_hooked(ops, field, observer, n, t0, &*cur, f_n)?;
            }
            let m = order.min(n + 1);
            let mut times = [0f64; MAX_AB_ORDER];
            for (j, tj) in times.iter_mut().enumerate().take(m) {
                *tj = f64::from(grid.point(n - j).ok_or(NO_POINT)?);
            }
            let beta = ab_weights(times.get(..m).ok_or(NO_POINT)?, f64::from(t1))?;
            let mut terms: [(f32, &S::Buf); MAX_AB_ORDER] = [(0.0, &*cur); MAX_AB_ORDER];
            for (j, term) in terms.iter_mut().enumerate().take(m) {
                // f_{n-j} lives in ring slot (n - j) % order.
                let k = ring
                    .get((n - j) % order)
                    .and_then(|k| k.as_deref())
                    .ok_or(NO_BUFFER)?;
                *term = (beta.get(j).copied().ok_or(NO_BUFFER)? as f32, k);
            }
            ops.lincomb(nxt, &*cur, terms.get(..m).ok_or(NO_BUFFER)?);
            core::mem::swap(&mut cur, &mut nxt);
            result_in_tmp = !result_in_tmp;
            observer.on_step(ops, n, t1, &mut *cur)?;
        }
    }
    finish(ops, x, &*tmp, result_in_tmp)
}

/// FlowTurbo's pseudo-corrector (`heun-reuse`) along `grid` (see the module docs). `work`
/// needs 3 buffers.
///
/// Errors: as [`super::integrate`].
pub fn heun_reuse<S, F, G, O>(
    ops: &mut S,
    field: &mut F,
    grid: &G,
    x: &mut S::Buf,
    work: &mut Workspace<'_, S::Buf>,
    observer: &mut O,
) -> Result<(), Error>
where
    S: StateOps + ?Sized,
    F: VelocityField<S> + ?Sized,
    G: TimeGrid + ?Sized,
    O: StepObserver<S> + ?Sized,
{
    check_start(ops, grid, x, work, 3)?;
    let (tmp_slot, k_slots) = work.bufs.split_first_mut().ok_or(NO_BUFFER)?;
    let tmp: &mut S::Buf = tmp_slot.as_deref_mut().ok_or(NO_BUFFER)?;
    let (a_slot, rest) = k_slots.split_first_mut().ok_or(NO_BUFFER)?;
    let mut v_n: &mut S::Buf = a_slot.as_deref_mut().ok_or(NO_BUFFER)?;
    let mut w: &mut S::Buf = rest
        .first_mut()
        .and_then(|k| k.as_deref_mut())
        .ok_or(NO_BUFFER)?;

    let mut result_in_tmp = false;
    {
        let mut cur: &mut S::Buf = &mut *x;
        let mut nxt: &mut S::Buf = &mut *tmp;
        let t_start = grid.point(0).ok_or(NO_POINT)?;
        eval_hooked(ops, field, observer, 0, t_start, &*cur, &mut *v_n)?;
        for n in 0..grid.steps() {
            let t0 = grid.point(n).ok_or(NO_POINT)?;
            let t1 = grid.point(n + 1).ok_or(NO_POINT)?;
            let dt = t1 - t0;
            // Predictor x̃ = x_n + dt v_n, evaluated at t_{n+1}.
            ops.lincomb(nxt, &*cur, &[(dt, &*v_n)]);
            eval_hooked(ops, field, observer, n, t1, &*nxt, &mut *w)?;
            // Corrector x_{n+1} = x_n + dt/2 v_n + dt/2 w (x̃ is no longer needed).
            let half = dt * 0.5;
            ops.lincomb(nxt, &*cur, &[(half, &*v_n), (half, &*w)]);
            core::mem::swap(&mut cur, &mut nxt);
            core::mem::swap(&mut v_n, &mut w);
            result_in_tmp = !result_in_tmp;
            observer.on_step(ops, n, t1, &mut *cur)?;
        }
    }
    finish(ops, x, &*tmp, result_in_tmp)
}
