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

use super::{eval_hooked, fixed_grid_loop, StepObserver, Workspace, NO_BUFFER, NO_POINT};
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
pub fn adams_bashforth<S, F>(
    ops: &mut S,
    field: &mut F,
    order: usize,
    grid: &dyn TimeGrid,
    x: &mut S::Buf,
    work: &mut Workspace<'_, S::Buf>,
    observer: &mut dyn StepObserver<S>,
) -> Result<(), Error>
where
    S: StateOps + ?Sized,
    F: VelocityField<S> + ?Sized,
{
    if !(2..=MAX_AB_ORDER).contains(&order) {
        return Err(Error::BadSolverConfig {
            what: "Adams-Bashforth order must be 2, 3 or 4",
        });
    }
    fixed_grid_loop(
        ops,
        grid,
        x,
        work,
        order + 1,
        observer,
        |ops, observer, s, cur, nxt, ring| {
            let n = s.n;
            {
                let f_n = ring
                    .get_mut(n % order)
                    .and_then(|k| k.as_deref_mut())
                    .ok_or(NO_BUFFER)?;
                eval_hooked(ops, field, observer, n, s.t0, cur, f_n)?;
            }
            let m = order.min(n + 1);
            let mut times = [0f64; MAX_AB_ORDER];
            for (j, tj) in times.iter_mut().enumerate().take(m) {
                *tj = f64::from(grid.point(n - j).ok_or(NO_POINT)?);
            }
            let beta = ab_weights(times.get(..m).ok_or(NO_POINT)?, f64::from(s.t1))?;
            let mut terms: [(f32, &S::Buf); MAX_AB_ORDER] = [(0.0, cur); MAX_AB_ORDER];
            for (j, term) in terms.iter_mut().enumerate().take(m) {
                // f_{n-j} lives in ring slot (n - j) % order.
                let k = ring
                    .get((n - j) % order)
                    .and_then(|k| k.as_deref())
                    .ok_or(NO_BUFFER)?;
                *term = (beta.get(j).copied().ok_or(NO_BUFFER)? as f32, k);
            }
            ops.lincomb(nxt, cur, terms.get(..m).ok_or(NO_BUFFER)?);
            Ok(())
        },
    )
}

/// FlowTurbo's pseudo-corrector (`heun-reuse`) along `grid` (see the module docs). `work`
/// needs 3 buffers.
///
/// Errors: as [`super::integrate`].
pub fn heun_reuse<S, F>(
    ops: &mut S,
    field: &mut F,
    grid: &dyn TimeGrid,
    x: &mut S::Buf,
    work: &mut Workspace<'_, S::Buf>,
    observer: &mut dyn StepObserver<S>,
) -> Result<(), Error>
where
    S: StateOps + ?Sized,
    F: VelocityField<S> + ?Sized,
{
    // Slot 0 holds v_n, slot 1 the corrector velocity w; they swap after every step.
    fixed_grid_loop(
        ops,
        grid,
        x,
        work,
        3,
        observer,
        |ops, observer, s, cur, nxt, slots| {
            let [v_slot, w_slot] = slots else {
                return Err(NO_BUFFER);
            };
            let v_n: &mut S::Buf = v_slot.as_deref_mut().ok_or(NO_BUFFER)?;
            let w: &mut S::Buf = w_slot.as_deref_mut().ok_or(NO_BUFFER)?;
            if s.n == 0 {
                eval_hooked(ops, field, observer, 0, s.t0, cur, &mut *v_n)?;
            }
            let dt = s.t1 - s.t0;
            // Predictor x̃ = x_n + dt v_n, evaluated at t_{n+1}.
            ops.lincomb(nxt, cur, &[(dt, &*v_n)]);
            eval_hooked(ops, field, observer, s.n, s.t1, &*nxt, &mut *w)?;
            // Corrector x_{n+1} = x_n + dt/2 v_n + dt/2 w (x̃ is no longer needed).
            let half = dt * 0.5;
            ops.lincomb(nxt, cur, &[(half, &*v_n), (half, &*w)]);
            slots.swap(0, 1);
            Ok(())
        },
    )
}
