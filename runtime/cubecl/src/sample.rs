//! Sampling on the device in one call: the noise is uploaded once, the runtime's own solver
//! loop (`flowrt::solver`, multistep and adaptive loops included) runs every stage and update
//! as kernels, and the samples are read back once.

use std::time::{Duration, Instant};

use cubecl::prelude::*;
use flowrt::field::Conditioning;
use flowrt::field::ConventionField;
use flowrt::grid::TimeGrid;
use flowrt::guidance::Guidance;
use flowrt::solver::{adaptive, integrate_observed, Method, NoObserver, StepObserver, Workspace};
use flowrt::time::SecondTime;
use flowrt::{Error, Model, StateOps, VelocityField};

use crate::field::DEVICE_FAILED;
use crate::{DeviceInfo, GpuBuf, GpuCfgField, GpuError, GpuField, GpuOps};

/// What to sample.
#[derive(Clone, Copy)]
pub struct SampleRequest<'a> {
    /// The solver (any fixed-step method, or `Dopri5` with [`SampleRequest::tol`]).
    pub method: Method,
    /// The time grid, in model time.
    pub grid: &'a dyn TimeGrid,
    /// Tolerances of the adaptive method.
    pub tol: adaptive::Tolerances,
    /// Per-row conditioning (labels, vectors, embedded guidance) for the batch.
    pub cond: Conditioning<'a>,
    /// Classifier-free guidance with the doubled conditioning (conditional rows first,
    /// then the null rows), or `None`.
    pub guided: Option<(Guidance, Conditioning<'a>)>,
}

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
        req: &SampleRequest<'_>,
    ) -> Result<Self, GpuError> {
        crate::guard(|| Self::prepare(ops, model, batch, req))
    }

    fn prepare<R: Runtime>(
        ops: &mut GpuOps<R>,
        model: &Model<'m>,
        batch: usize,
        req: &SampleRequest<'_>,
    ) -> Result<Self, GpuError> {
        let start = Instant::now();
        if model.pipeline().is_some() {
            return Err(GpuError::Unsupported(
                "multi-network files sample on the CPU backend".into(),
            ));
        }
        let rows = if req.guided.is_some() {
            2 * batch
        } else {
            batch
        };
        let mut field = GpuField::new(ops, model, rows)?;
        match &req.guided {
            Some((_, doubled)) => field.set_conditioning(ops, doubled)?,
            None => field.set_conditioning(ops, &req.cond)?,
        }
        Ok(Sampler {
            model: *model,
            field,
            batch,
            guided: req.guided.is_some(),
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
        req: &SampleRequest<'_>,
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
        req: &SampleRequest<'_>,
        observer: &mut dyn StepObserver<GpuOps<R>>,
    ) -> Result<SampleReport, GpuError> {
        crate::guard(|| self.run_unguarded(ops, x, req, observer))
    }

    fn run_unguarded<R: Runtime>(
        &mut self,
        ops: &mut GpuOps<R>,
        x: &mut [f32],
        req: &SampleRequest<'_>,
        observer: &mut dyn StepObserver<GpuOps<R>>,
    ) -> Result<SampleReport, GpuError> {
        let d = self.model.state_dim();
        if x.len() != self.batch * d {
            return Err(Error::ShapeMismatch {
                what: "noise (batch x state dim, the batch the sampler was made for)",
                expected: self.batch * d,
                found: x.len(),
            }
            .into());
        }
        if req.guided.is_some() != self.guided {
            return Err(Error::BadArgument {
                what: "guidance on or off must match the request the sampler was made with",
            }
            .into());
        }
        let conv = self.model.time_convention();
        let rows = if self.guided {
            2 * self.batch
        } else {
            self.batch
        };
        let field = &mut self.field;
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
        let result = if conv.second != SecondTime::None {
            if req.method != Method::Euler {
                return Err(Error::BadSolverConfig {
                    what: "a model with a second time input (mean flow, shortcut) samples with \
                           its own one-step rule: use --method euler",
                }
                .into());
            }
            if req.guided.is_some() {
                return Err(Error::BadSolverConfig {
                    what: "guidance is not available for models with a second time input",
                }
                .into());
            }
            two_time(ops, field, &conv, req.grid, &mut xs, observer)
        } else {
            let mut bufs: Vec<GpuBuf> = (0..req.method.work_buffers())
                .map(|_| ops.buffer(x.len()))
                .collect();
            let mut work = Workspace::default();
            for b in bufs.iter_mut() {
                work.push(b)?;
            }
            let r = match &req.guided {
                Some((g, _)) => {
                    let mut cfg = GpuCfgField::new(ops, field, conv, *g, self.batch)?;
                    run_solver(ops, &mut cfg, req, &mut xs, &mut work, observer)
                }
                None => {
                    let mut f = ConventionField::new(&mut *field, conv);
                    run_solver(ops, &mut f, req, &mut xs, &mut work, observer)
                }
            };
            r.map(|(steps, rejected)| {
                if let Some(s) = steps {
                    report.steps = s;
                    report.rejected = rejected;
                }
            })
        };
        if let Err(e) = result {
            return Err(cause(e, ops, field));
        }
        let out = ops.read(&xs)?;
        x.copy_from_slice(&out);
        report.run = run_start.elapsed();
        report.evaluations = field.evaluations() - evaluations0;
        report.launches = ops.gpu.launches() - launches0;
        Ok(report)
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
    req: &SampleRequest<'_>,
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

/// The fixed-step or adaptive loop; returns the adaptive method's (accepted, rejected).
fn run_solver<R: Runtime, F: VelocityField<GpuOps<R>> + ?Sized>(
    ops: &mut GpuOps<R>,
    field: &mut F,
    req: &SampleRequest<'_>,
    x: &mut GpuBuf,
    work: &mut Workspace<'_, GpuBuf>,
    observer: &mut dyn StepObserver<GpuOps<R>>,
) -> Result<(Option<usize>, usize), Error> {
    if req.method == Method::Dopri5 {
        let stats = adaptive::dopri5(ops, field, &req.tol, req.grid, x, work, observer)?;
        Ok((Some(stats.accepted), stats.rejected))
    } else {
        integrate_observed(ops, field, req.method, req.grid, x, work, observer)?;
        Ok((None, 0))
    }
}

/// A few-step model's rule on the device: per grid step, one evaluation with the second time
/// input set, then `x += dt · v` (as `flowrt::fewstep::sample_two_time`).
fn two_time<R: Runtime>(
    ops: &mut GpuOps<R>,
    field: &mut GpuField<'_>,
    conv: &flowrt::time::TimeConvention,
    grid: &dyn TimeGrid,
    x: &mut GpuBuf,
    observer: &mut dyn StepObserver<GpuOps<R>>,
) -> Result<(), Error> {
    flowrt::grid::validate(grid)?;
    if !ops.all_finite(x) {
        return Err(if ops.has_error() {
            DEVICE_FAILED
        } else {
            Error::NonFiniteInput {
                what: "initial state",
            }
        });
    }
    let mut v = ops.buffer(x.len());
    let mut next = ops.buffer(x.len());
    const NO_POINT: Error = Error::BadSolverConfig {
        what: "grid point out of range",
    };
    for n in 0..grid.steps() {
        let t0 = grid.point(n).ok_or(NO_POINT)?;
        let t1 = grid.point(n + 1).ok_or(NO_POINT)?;
        field.set_step(conv.second_time(t0, t1));
        field.eval(ops, conv.network_time(t0), x, &mut v)?;
        if conv.negate_output {
            ops.scale(&mut v, -1.0);
        }
        observer.on_velocity(ops, n, t0, x, &mut v)?;
        ops.lincomb(&mut next, x, &[(t1 - t0, &v)]);
        std::mem::swap(x, &mut next);
        observer.on_step(ops, n, t1, x)?;
    }
    if !ops.all_finite(x) {
        return Err(if ops.has_error() {
            DEVICE_FAILED
        } else {
            Error::NonFiniteOutput {
                what: "solver result",
            }
        });
    }
    Ok(())
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
