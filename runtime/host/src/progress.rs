//! Progress of a run, reported to a caller's callback after every solver step (a progress
//! bar in the `flowrt` CLI). The runtime's step hook ([`StepObserver`]) carries it, so the
//! no_std solver loops are unchanged and a run without a callback pays one no-op call a step.

use flowrt::grid::TimeGrid;
use flowrt::solver::StepObserver;
use flowrt::{CpuOps, Error, VelocityField};

use crate::run::Trajectory;

/// How far a run has got: `done` of `total` units, reported after every solver step.
///
/// A unit is one solver step on a fixed grid; an adaptive run (dopri5), whose step count is
/// not known ahead, counts thousandths of its time span instead ([`ADAPTIVE_UNITS`] per
/// integration), reported after every velocity evaluation (never going back: a rejected
/// step leaves the count where it was). A run of several integrations (an inversion: backward, then forward)
/// counts them all in `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Units done so far (at most `total`).
    pub done: u64,
    /// Units of the whole run.
    pub total: u64,
}

/// The units of one adaptive integration: its time span in thousandths.
pub const ADAPTIVE_UNITS: u64 = 1000;

/// The units one integration along `grid` counts: its steps, or [`ADAPTIVE_UNITS`].
pub(crate) fn units(grid: &dyn TimeGrid, adaptive: bool) -> u64 {
    if adaptive {
        ADAPTIVE_UNITS
    } else {
        grid.steps() as u64
    }
}

/// Reports one integration's steps to a callback, as part of a run of `total` units of
/// which `offset` were done before it.
pub(crate) struct Ticker<'a> {
    /// The caller's callback.
    pub f: &'a mut dyn FnMut(Progress),
    /// Units done before this integration.
    pub offset: u64,
    /// Units of the whole run.
    pub total: u64,
    /// `Some((t0, t1))`, the ends of the span, for an adaptive integration.
    pub span: Option<(f32, f32)>,
    /// The most units reported so far in this integration.
    pub high: u64,
}

impl Ticker<'_> {
    /// Reports that step `step` (0-based) ended at time `t`.
    fn step(&mut self, step: usize, t: f32) {
        let here = match self.span {
            Some((t0, t1)) => {
                let frac = if t1 != t0 { (t - t0) / (t1 - t0) } else { 1.0 };
                // NaN (a failed step about to be reported as an error) counts as no progress.
                (frac.clamp(0.0, 1.0) * ADAPTIVE_UNITS as f32).round() as u64
            }
            None => step as u64 + 1,
        };
        self.high = self.high.max(here);
        (self.f)(Progress {
            done: (self.offset + self.high).min(self.total),
            total: self.total,
        });
    }
}

/// A [`StepObserver`] that records the trajectory (when asked) and reports progress.
pub(crate) struct Observer<'a, 'b> {
    /// The trajectory to record into.
    pub trajectory: Option<&'a mut Trajectory>,
    /// Progress reporting.
    pub ticker: Ticker<'b>,
}

impl StepObserver<CpuOps> for Observer<'_, '_> {
    /// An adaptive run reports how far its stages have got (its steps end only at the grid
    /// points); a fixed-step one waits for the step.
    fn on_velocity(
        &mut self,
        _: &mut CpuOps,
        step: usize,
        t: f32,
        _: &[f32],
        _: &mut [f32],
    ) -> Result<(), Error> {
        if self.ticker.span.is_some() {
            self.ticker.step(step, t);
        }
        Ok(())
    }

    fn on_step(
        &mut self,
        ops: &mut CpuOps,
        step: usize,
        t: f32,
        x: &mut [f32],
    ) -> Result<(), Error> {
        if let Some(tr) = self.trajectory.as_deref_mut() {
            tr.on_step(ops, step, t, x)?;
        }
        self.ticker.step(step, t);
        Ok(())
    }
}

/// A velocity field that reports a step after every evaluation (Euler–Maruyama evaluates
/// the velocity once a step).
pub(crate) struct TickingField<'a, 'b> {
    /// The field.
    pub inner: &'a mut dyn VelocityField<CpuOps>,
    /// Progress reporting.
    pub ticker: Ticker<'b>,
    /// Evaluations so far.
    pub count: usize,
}

impl VelocityField<CpuOps> for TickingField<'_, '_> {
    fn eval(&mut self, ops: &mut CpuOps, t: f32, x: &[f32], v: &mut [f32]) -> Result<(), Error> {
        self.inner.eval(ops, t, x, v)?;
        self.ticker.step(self.count, t);
        self.count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_and_adaptive_units() {
        let mut seen = Vec::new();
        let mut f = |p: Progress| seen.push((p.done, p.total));
        let mut t = Ticker {
            f: &mut f,
            offset: 4,
            total: 8,
            span: None,
            high: 0,
        };
        t.step(0, 0.1);
        t.step(3, 0.9);
        let mut a = Ticker {
            f: t.f,
            offset: 0,
            total: 2 * ADAPTIVE_UNITS,
            span: Some((1.0, 0.0)),
            high: 0,
        };
        a.step(7, 0.75);
        a.step(8, f32::NAN);
        a.step(8, 0.9);
        a.step(9, -0.5);
        // Never back: a NaN and an earlier time keep the count.
        assert_eq!(
            seen,
            [
                (5, 8),
                (8, 8),
                (250, 2000),
                (250, 2000),
                (250, 2000),
                (1000, 2000)
            ]
        );
    }
}
