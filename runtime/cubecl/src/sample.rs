//! Sampling on the device in one call: the noise is uploaded once, the runtime's own solver
//! loop (`flowrt::solver`, multistep and adaptive loops included) runs every stage and update
//! as kernels, and the samples are read back once.

use std::time::{Duration, Instant};

use cubecl::prelude::*;
use flowrt::run::{run, Buffers, Facts, Request};
use flowrt::solver::{NoObserver, StepObserver, Workspace};
use flowrt::{Error, Model};

use crate::field::DEVICE_FAILED;
use crate::{DeviceInfo, GpuBuf, GpuError, GpuField, GpuOps};

/// What a [`sample`] call did.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleReport {
    /// The device.
    pub device: DeviceInfo,
    /// Solver steps taken (accepted steps for the adaptive method).
    pub steps: usize,
    /// Rejected steps (adaptive method).
    pub rejected: usize,
    /// Network evaluations (a guided evaluation of the doubled batch counts once).
    pub evaluations: usize,
    /// Kernel launches of the whole run (graph, state operations, input fills, checks).
    pub launches: u64,
    /// Graph launches of one network evaluation.
    pub graph_launches: usize,
    /// Weight upload, planning and the conditioning upload ([`Sampler::new`]).
    pub setup: Duration,
    /// Noise upload, the ODE loop and the read-back of the samples.
    pub run: Duration,
}

impl SampleReport {
    /// Kernel launches per solver step (all of them, divided by the steps).
    pub fn launches_per_step(&self) -> f64 {
        self.launches as f64 / self.steps.max(1) as f64
    }
}

/// Maps an error out of the solver to the GPU error that caused it.
fn cause<R: Runtime>(e: Error, ops: &mut GpuOps<R>, field: &mut GpuField<'_>) -> GpuError {
    if e == DEVICE_FAILED {
        if let Some(g) = field.take_error().or_else(|| ops.take_error()) {
            return g;
        }
    }
    if let Some(g) = ops.take_error() {
        return g;
    }
    GpuError::Flowrt(e)
}

/// A model ready to sample on the device: weights uploaded, the graph planned and the
/// conditioning checked and uploaded once ([`Sampler::new`]); each [`Sampler::run`] then
/// uploads the noise, runs the solver loop on the device and reads the samples back.
pub struct Sampler<'m> {
    model: Model<'m>,
    field: GpuField<'m>,
    batch: usize,
    guided: bool,
    setup: Duration,
}

impl<'m> Sampler<'m> {
    /// Prepares `model` for `batch` rows with `req`'s conditioning (the doubled one when
    /// guided).
    ///
    /// Errors: a multi-network file ([`GpuError::Unsupported`]), conditioning problems and
    /// launches the device cannot take.
    pub fn new<R: Runtime>(
        ops: &mut GpuOps<R>,
        model: &Model<'m>,
        batch: usize,
        req: &Request<'_>,
    ) -> Result<Self, GpuError> {
        crate::guard(|| Self::prepare(ops, model, batch, req))
    }

    fn prepare<R: Runtime>(
        ops: &mut GpuOps<R>,
        model: &Model<'m>,
        batch: usize,
        req: &Request<'_>,
    ) -> Result<Self, GpuError> {
        let start = Instant::now();
        if model.pipeline().is_some() {
            return Err(GpuError::Unsupported(
                "multi-network files sample on the CPU backend".into(),
            ));
        }
        let rows = if req.guidance.is_some() {
            2 * batch
        } else {
            batch
        };
        let mut field = GpuField::new(ops, model, rows)?;
        match &req.guidance {
            Some((_, doubled)) => field.set_conditioning(ops, rows, doubled)?,
            None => field.set_conditioning(ops, rows, &req.cond)?,
        }
        Ok(Sampler {
            model: *model,
            field,
            batch,
            guided: req.guidance.is_some(),
            setup: start.elapsed(),
        })
    }

    /// Samples `x` (noise in, `batch × state_dim` values; samples out) with `req`'s method,
    /// grid, tolerances and guidance scale (its conditioning was set by [`Sampler::new`]).
    ///
    /// The model's time convention is applied (grids are in model time), as by the CPU
    /// samplers; a model with a second time input (mean flow, shortcut) takes its own
    /// one-step rule per grid step (method Euler), as `flowrt::fewstep::sample_two_time`
    /// does.
    ///
    /// Errors: as the CPU sampler (non-finite noise [`Error::NonFiniteInput`], non-finite
    /// result, bad grids and settings) inside [`GpuError::Flowrt`]; device failures as the
    /// other variants.
    pub fn run<R: Runtime>(
        &mut self,
        ops: &mut GpuOps<R>,
        x: &mut [f32],
        req: &Request<'_>,
    ) -> Result<SampleReport, GpuError> {
        self.run_observed(ops, x, req, &mut NoObserver)
    }

    /// [`Sampler::run`] with a step observer on the device state (e.g. [`Recorder`], which
    /// reads every step's state back for `--trajectory`).
    ///
    /// Errors: as [`Sampler::run`], plus the observer's.
    pub fn run_observed<R: Runtime>(
        &mut self,
        ops: &mut GpuOps<R>,
        x: &mut [f32],
        req: &Request<'_>,
        observer: &mut dyn StepObserver<GpuOps<R>>,
    ) -> Result<SampleReport, GpuError> {
        crate::guard(|| {
            let d = self.model.state_dim();
            if x.len() != self.batch * d {
                return Err(Error::ShapeMismatch {
                    what: "noise (batch x state dim, the batch the sampler was made for)",
                    expected: self.batch * d,
                    found: x.len(),
                }
                .into());
            }
            if req.guidance.is_some() != self.guided {
                return Err(Error::BadArgument {
                    what: "guidance on or off must match the request the sampler was made with",
                }
                .into());
            }
            let rows = if self.guided {
                2 * self.batch
            } else {
                self.batch
            };
            let field = &mut self.field;
            field.forget_checked();
            let launches0 = ops.gpu.launches();
            let evaluations0 = field.evaluations();
            let run_start = Instant::now();
            let mut xs = ops.upload(x);
            let mut report = SampleReport {
                device: ops.gpu.info().clone(),
                steps: req.grid.steps(),
                rejected: 0,
                evaluations: 0,
                launches: 0,
                graph_launches: field.launches_per_eval(rows).unwrap_or(0),
                setup: self.setup,
                run: Duration::ZERO,
            };
            let mut bufs: Vec<GpuBuf> = (0..req.method.work_buffers().max(2))
                .map(|_| ops.buffer(x.len()))
                .collect();
            let mut doubled: Vec<GpuBuf> = (0..if self.guided { 2 } else { 0 })
                .map(|_| ops.buffer(2 * x.len()))
                .collect();
            let mut work = Workspace::default();
            for b in bufs.iter_mut() {
                work.push(b)?;
            }
            let guided = match doubled.as_mut_slice() {
                [x2, v2] => Some([x2, v2]),
                _ => None,
            };
            let mut b = Buffers { work, guided };
            let facts = Facts::of(&self.model);
            match run(ops, &mut *field, &facts, req, &mut xs, &mut b, observer) {
                Ok(stats) => {
                    report.steps = stats.steps;
                    report.rejected = stats.rejected;
                }
                Err(e) => return Err(cause(e, ops, field)),
            }
            let out = ops.read(&xs)?;
            x.copy_from_slice(&out);
            report.run = run_start.elapsed();
            report.evaluations = field.evaluations() - evaluations0;
            report.launches = ops.gpu.launches() - launches0;
            Ok(report)
        })
    }
}

/// Samples `x` (noise in, `batch × state_dim` values; samples out) on `ops`' device in one
/// call: [`Sampler::new`] then [`Sampler::run`].
///
/// Errors: as [`Sampler::new`] and [`Sampler::run`]; noise that is not a whole number of
/// rows ([`Error::ShapeMismatch`]).
pub fn sample<R: Runtime>(
    ops: &mut GpuOps<R>,
    model: &Model<'_>,
    x: &mut [f32],
    req: &Request<'_>,
) -> Result<SampleReport, GpuError> {
    let d = model.state_dim();
    let batch = x.len().checked_div(d).unwrap_or(0);
    if batch == 0 || batch * d != x.len() {
        return Err(Error::ShapeMismatch {
            what: "noise (a whole number of rows of the state)",
            expected: d,
            found: x.len(),
        }
        .into());
    }
    Sampler::new(ops, model, batch, req)?.run(ops, x, req)
}

/// A [`StepObserver`] that reads the device state back after every step: the trajectory
/// (`states`: one state per step, step-major; `times`: their grid times). One read-back per
/// step, so it costs what a host round trip costs.
#[derive(Debug, Default)]
pub struct Recorder {
    /// The recorded states, step-major.
    pub states: Vec<f32>,
    /// The time of each recorded state.
    pub times: Vec<f32>,
}

impl<R: Runtime> StepObserver<GpuOps<R>> for Recorder {
    fn on_step(
        &mut self,
        ops: &mut GpuOps<R>,
        _: usize,
        t: f32,
        x: &mut GpuBuf,
    ) -> Result<(), Error> {
        match ops.read(x) {
            Ok(v) => {
                self.states.extend_from_slice(&v);
                self.times.push(t);
                Ok(())
            }
            Err(e) => {
                ops.fail(e);
                Err(DEVICE_FAILED)
            }
        }
    }
}
