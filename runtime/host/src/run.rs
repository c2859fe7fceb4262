//! Requests and the runs behind [`Frt::sample`], [`Frt::invert`] and [`Frt::rollout`]: the
//! backend is chosen and opened, the request resolved against the file's defaults, and the
//! runtime's solvers, guidance, few-step rule, SDE sampler and pipelines do the numbers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use flowrt::field::ConditionalField;
use flowrt::format::{AlignedBytes, Dim, InputRole};
use flowrt::grid::{Explicit, TimeGrid};
use flowrt::guidance::Guidance;
use flowrt::run::{with_field, Buffers, Facts, Stats};
use flowrt::solver::{Method, StepObserver, Workspace};
use flowrt::time::SecondTime;
use flowrt::{CpuOps, Model};

use crate::conditioning::{CondInputs, CondRequest, GuidanceRequest, Labels};
use crate::plan::{GridChoice, Plan, SolverRequest};
use crate::progress::{units, Observer, Progress, Ticker, TickingField};
use crate::sde::SdeRequest;
use crate::{Backend, Frt, HostError, Result};

/// The noise a run starts from.
#[derive(Debug, Clone, PartialEq)]
pub enum Noise {
    /// `num` samples drawn with flowrt's deterministic RNG (Philox4x32-10 + Box–Muller, the
    /// same bits on every platform) from `seed`.
    Seed {
        /// The seed.
        seed: u64,
        /// Number of samples.
        num: usize,
    },
    /// Given noise: a whole number of rows of the model's state, row-major.
    Given(Vec<f32>),
}

/// What to run: every field is an override of the file's defaults or an option, so
/// `Request::default()` samples with what the file says (else euler, 1 step, uniform grid).
#[derive(Debug, Default)]
pub struct Request {
    /// Method, steps, grid, tolerances.
    pub solver: SolverRequest,
    /// Labels, cond vectors, embedded guidance values.
    pub conditioning: CondRequest,
    /// Classifier-free guidance.
    pub guidance: GuidanceRequest,
    /// Sample the SDE instead of the ODE.
    pub sde: Option<SdeRequest>,
    /// Record every step's state ([`Samples::trajectory`]).
    pub trajectory: bool,
    /// With [`Backend::Ort`]: this ONNX file instead of the one embedded in the `.frt`.
    pub onnx: Option<PathBuf>,
    /// CPU threads: flowrt's executor splits the rows of each evaluation across this many
    /// (byte-identical to one thread; small evaluations use fewer), ONNX Runtime uses as many
    /// intra-op threads. 0 (the default): the machine's physical cores.
    pub threads: usize,
}

/// Builder methods that each set one field of a [`Request`] and return it.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty)?) => $($field:ident).+ = $value:expr;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $($arg: $ty)?) -> Self {
                self.$($field).+ = $value;
                self
            }
        )*
    };
}

impl Request {
    setters! {
        /// Sets the method.
        method(m: Method) => solver.method = Some(m);
        /// Sets the step count.
        steps(n: usize) => solver.steps = Some(n);
        /// One label for every sample.
        label(k: i64) => conditioning.labels = Some(Labels::All(k));
        /// One label per sample.
        labels(v: Vec<i64>) => conditioning.labels = Some(Labels::PerRow(v));
        /// Labels `i % n`.
        label_cycle(n: i64) => conditioning.labels = Some(Labels::Cycle(n));
        /// Classifier-free guidance with scale `w` (null label and interval from the file
        /// unless set in [`Request::guidance`]).
        guidance(w: f32) => guidance.scale = Some(w);
        /// The null label of classifier-free guidance.
        null_label(k: i64) => guidance.null_label = Some(k);
        /// Samples the SDE with diffusion `g` (`const:W`, `linear:W`) instead of the ODE.
        sde(g: &str) => sde = Some(SdeRequest::new(g));
        /// Records the trajectory.
        trajectory() => trajectory = true;
        /// CPU threads (0: the physical cores; see [`Request::threads`](Request#structfield.threads)).
        threads(n: usize) => threads = n;
    }

    /// Sets the grid (a name or a list of times, as [`GridChoice::parse`] reads it).
    ///
    /// Errors: an unknown name or malformed numbers.
    pub fn grid(mut self, g: &str) -> Result<Self> {
        self.solver.grid = Some((GridChoice::parse(g)?, g.to_string()));
        Ok(self)
    }
}

/// The state after every step (and the initial state), step-major: `[steps + 1, len]`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Trajectory {
    /// The recorded states.
    pub states: Vec<f32>,
    /// The time of each recorded state.
    pub times: Vec<f32>,
}

impl StepObserver<CpuOps> for Trajectory {
    fn on_step(
        &mut self,
        _: &mut CpuOps,
        _: usize,
        t: f32,
        x: &mut [f32],
    ) -> Result<(), flowrt::Error> {
        self.states.extend_from_slice(x);
        self.times.push(t);
        Ok(())
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The backend that ran (never `Auto`).
    pub backend: Backend,
    /// The method's name (`euler-maruyama` for the SDE).
    pub method: String,
    /// Steps taken (accepted steps for dopri5).
    pub steps: usize,
    /// Rejected steps (dopri5).
    pub rejected: usize,
    /// Network evaluations (a guided evaluation of the doubled batch counts once).
    pub evaluations: usize,
    /// How the grid was chosen.
    pub grid: String,
    /// The classifier-free guidance applied.
    pub guidance: Option<Guidance>,
    /// A multi-network file's stages, in words, and the arena it used.
    pub pipeline: Option<(String, usize)>,
    /// Why the backend was chosen, the GPU device and its launches (for `-v`).
    pub notes: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// The result of [`Frt::sample`].
#[derive(Debug, Clone)]
pub struct Samples {
    /// `rows × row_len` values (a decoder's output for a latent pipeline).
    pub data: Vec<f32>,
    /// The shape of one sample (the model's output dims without the batch dim).
    pub row_shape: Vec<usize>,
    /// Every step's state, when asked for.
    pub trajectory: Option<Trajectory>,
    /// What ran.
    pub report: Report,
}

impl Samples {
    /// Number of samples.
    pub fn rows(&self) -> usize {
        let len: usize = self.row_shape.iter().product();
        self.data.len() / len.max(1)
    }
}

/// The result of [`Frt::invert`].
#[derive(Debug, Clone)]
pub struct Inverted {
    /// The recovered noise.
    pub noise: Vec<f32>,
    /// The noise integrated forward again (compare with the data for the round-trip error).
    pub roundtrip: Vec<f32>,
    /// What ran (the backward integration).
    pub report: Report,
}

/// A zeroed 16-byte aligned buffer of `bytes` bytes.
///
/// Errors: [`HostError::Alloc`].
pub(crate) fn arena(bytes: usize) -> Result<AlignedBytes> {
    AlignedBytes::try_zeroed(bytes).ok_or(HostError::Alloc(bytes))
}

/// Opens an ONNX Runtime session for `model`: from `onnx` if given, else from the ONNX
/// embedded in the `.frt` (`export --embed-onnx`).
///
/// Errors: neither is available (the message says how to get one), a file whose weights are
/// stored as f16 / bf16 / int8 (ONNX Runtime would run the f32 ONNX weights instead: a
/// different model), or ONNX Runtime fails (missing library, bad model).
#[cfg(feature = "ort")]
pub fn open_ort(
    model: &Model<'_>,
    onnx: Option<&std::path::Path>,
    threads: usize,
) -> Result<flowrt_ort::OrtSession> {
    use flowrt_ort::{OrtOptions, OrtSession};
    let typed = model.constants().find(|w| w.as_f32().is_none());
    if let Some(w) = typed {
        return Err(HostError::Unsupported(format!(
            "this .frt stores {} weights; ONNX Runtime would run the ONNX file's f32 weights \
             instead (a different model): use --backend cpu, wgpu or cuda",
            w.type_name()
        )));
    }
    let opts = OrtOptions {
        intra_threads: crate::parallel::resolve_threads(threads),
    };
    Ok(match (onnx, model.embedded_onnx()) {
        (Some(p), _) => OrtSession::from_file(model, p, &opts),
        (None, Some(bytes)) => OrtSession::from_bytes(model, bytes, &opts),
        (None, None) => {
            return Err(HostError::Unsupported(
                "this .frt has no embedded ONNX model for --backend ort: re-export it with \
                 `flowrt export --embed-onnx`, or pass the ONNX file with --onnx MODEL.onnx"
                    .into(),
            ))
        }
    }?)
}

/// A request resolved against a model for `batch` rows: the solver plan, the conditioning
/// and, with guidance, the doubled conditioning.
struct Resolved {
    plan: Plan,
    inputs: CondInputs,
    guided: Option<(Guidance, CondInputs)>,
    /// Rows per network evaluation (twice the batch with guidance).
    rows: usize,
}

impl Resolved {
    /// Resolves `req` against `m` for `batch` rows.
    ///
    /// Errors: a solver, conditioning or guidance the model cannot take.
    fn new(m: &Model<'_>, req: &Request, batch: usize) -> Result<Resolved> {
        let plan = req.solver.resolve(m)?;
        let inputs = req.conditioning.resolve(m, batch)?;
        let guided = req.guidance.resolve(m, &inputs)?;
        let rows = if guided.is_some() { 2 * batch } else { batch };
        Ok(Resolved {
            plan,
            inputs,
            guided,
            rows,
        })
    }
}

/// What one host-memory integration does: the ODE (with guidance when set) or the SDE.
struct HostRun<'r> {
    model: Model<'r>,
    res: &'r Resolved,
    sde: Option<&'r SdeRequest>,
}

impl HostRun<'_> {
    /// Integrates `x` with `net` (a CPU or ORT network for the run's rows) along `grid`:
    /// the runtime's request-driven run, or the SDE sampler. Every step is reported to
    /// `progress` as part of a run of `total` units, `offset` of them done before this
    /// integration.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        net: &mut dyn ConditionalField<CpuOps>,
        grid: &dyn TimeGrid,
        x: &mut [f32],
        mut trajectory: Option<&mut Trajectory>,
        progress: &mut dyn FnMut(Progress),
        offset: u64,
        total: u64,
    ) -> Result<Stats> {
        let facts = Facts::of(&self.model);
        let adaptive = self.res.plan.method == Method::Dopri5 && self.sde.is_none();
        let span = match (adaptive, grid.point(0), grid.point(grid.steps())) {
            (true, Some(t0), Some(t1)) => Some((t0, t1)),
            _ => None,
        };
        let ticker = Ticker {
            f: progress,
            offset,
            total,
            span,
            high: 0,
        };
        let guided = self.res.guided.as_ref();
        let n = x.len();
        let (mut x2, mut v2) = match guided {
            Some(_) => (vec![0f32; 2 * n], vec![0f32; 2 * n]),
            None => (Vec::new(), Vec::new()),
        };
        let req = flowrt::run::Request {
            method: self.res.plan.method,
            grid,
            tol: self.res.plan.tol,
            cond: self.res.inputs.as_conditioning(),
            guidance: guided.map(|(g, d)| (*g, d.as_conditioning())),
        };
        let doubled = guided.map(|_| [&mut x2[..], &mut v2[..]]);
        if let Some(sde) = self.sde {
            if facts.conv.second != SecondTime::None {
                return Err(HostError::Unsupported(
                    "--sde is not available for models with a second time input".into(),
                ));
            }
            let batch = n / facts.state_dim.max(1);
            // The field applies the time convention itself.
            let evaluations =
                with_field(&mut CpuOps, net, &facts, &req, batch, doubled, |_, f| {
                    let mut ticking = TickingField {
                        inner: f,
                        ticker,
                        count: 0,
                    };
                    sde.run(&self.model, &mut ticking, true, grid, x)
                })?;
            return Ok(Stats {
                steps: grid.steps(),
                rejected: 0,
                evaluations,
            });
        }
        let wb = self.res.plan.method.work_buffers();
        let mut flat = vec![0f32; n * wb];
        let work = Workspace::from_slice(&mut flat, n, wb)?;
        let mut bufs = Buffers {
            work,
            guided: doubled,
        };
        if let Some(t) = trajectory.as_deref_mut() {
            t.states.extend_from_slice(x);
            t.times.push(grid.point(0).unwrap_or(f32::NAN));
        }
        let mut observer = Observer { trajectory, ticker };
        Ok(flowrt::run::run(
            &mut CpuOps,
            net,
            &facts,
            &req,
            x,
            &mut bufs,
            &mut observer,
        )?)
    }
}

/// The backend [`with_net`] runs for `b`: `auto` is the CPU executor.
fn host_memory_backend(b: Backend) -> Backend {
    if b == Backend::Auto {
        Backend::Cpu
    } else {
        b
    }
}

/// Runs `f` with the backend's raw network for up to `rows` rows per evaluation (host
/// memory backends: cpu, ort), turning the backend's own error into a [`HostError`].
fn with_net<R>(
    m: &Model<'_>,
    backend: Backend,
    req: &Request,
    rows: usize,
    f: impl FnOnce(&mut dyn ConditionalField<CpuOps>) -> Result<R>,
) -> Result<R> {
    match backend {
        Backend::Wgpu | Backend::Cuda => Err(HostError::Unsupported(format!(
            "--backend {} is available for sample and bench",
            backend.name()
        ))),
        Backend::Cpu | Backend::Auto => {
            if req.onnx.is_some() {
                return Err(HostError::request("--onnx is only used with --backend ort"));
            }
            // Rows split across threads when that pays (byte-identical results).
            crate::parallel::with_cpu_field(m, rows, req.threads, f)?
        }
        #[cfg(feature = "ort")]
        Backend::Ort => {
            let mut session = open_ort(m, req.onnx.as_deref(), req.threads)?;
            let mut field = session.field(rows)?;
            let r = f(&mut field);
            match (r, field.take_error()) {
                (Err(_), Some(ort)) => Err(ort.into()),
                (r, _) => r,
            }
        }
        #[cfg(not(feature = "ort"))]
        Backend::Ort => Err(HostError::Unsupported(
            "this build has no ONNX Runtime backend (feature `ort`)".into(),
        )),
    }
}

/// Resolves `auto` for `rows` rows per evaluation (noting the choice and its reason);
/// other backends are returned as they are.
fn resolve_backend(b: Backend, m: &Model<'_>, rows: usize, notes: &mut Vec<String>) -> Backend {
    if b != Backend::Auto {
        return b;
    }
    let sel = crate::select::choose(m, rows);
    notes.push(format!(
        "backend auto: {} ({})",
        sel.backend.name(),
        sel.reason
    ));
    match sel.backend {
        crate::select::Chosen::Cpu => Backend::Cpu,
        #[cfg(feature = "gpu")]
        crate::select::Chosen::Gpu(flowrt_cubecl::GpuBackend::Wgpu) => Backend::Wgpu,
        #[cfg(feature = "gpu")]
        crate::select::Chosen::Gpu(flowrt_cubecl::GpuBackend::Cuda) => Backend::Cuda,
        #[cfg(not(feature = "gpu"))]
        crate::select::Chosen::Gpu(g) => match g {},
    }
}

/// The shape of one sample of `out` holding `len` values: its output dims without the batch
/// dim, or `[len]` when those do not hold `len` values.
fn row_shape(out: &Model<'_>, len: usize) -> Vec<usize> {
    let dims: Vec<usize> = out
        .output_shape()
        .dims()
        .filter_map(|d| match d {
            Dim::Fixed(n) => usize::try_from(n).ok(),
            Dim::Batch => None,
        })
        .collect();
    if dims.iter().product::<usize>() == len {
        dims
    } else {
        vec![len]
    }
}

/// The shape of one sample [`Frt::sample`] returns for `model` (a latent pipeline's decoder
/// output). Takes the model, not the [`Frt`], so a caller that holds it does not validate the
/// file again.
pub fn sample_row_shape(model: &Model<'_>) -> Vec<usize> {
    match model.pipeline() {
        Some(p) => row_shape(p.decoder().unwrap_or(model), p.output_dim()),
        None => row_shape(model, model.state_dim()),
    }
}

impl Frt {
    /// The noise as rows of the model's state.
    fn noise_rows(&self, m: &Model<'_>, noise: Noise) -> Result<(Vec<f32>, usize)> {
        let dim = m.state_dim();
        let x = match noise {
            Noise::Seed { seed, num } => {
                if num == 0 {
                    return Err(HostError::request("--num must be at least 1"));
                }
                let len = num
                    .checked_mul(dim)
                    .ok_or_else(|| HostError::request(format!("--num {num} is too large")))?;
                let mut data = Vec::new();
                data.try_reserve_exact(len).map_err(|_| {
                    HostError::request(format!(
                        "--num {num} is too large: cannot allocate the noise"
                    ))
                })?;
                data.resize(len, 0f32);
                flowrt::rng::fill_normal(seed, &mut data);
                data
            }
            Noise::Given(v) => v,
        };
        if dim == 0 || x.is_empty() || x.len() % dim != 0 {
            return Err(HostError::request(format!(
                "{} values are not a whole number of rows of the model's state ({dim} values)",
                x.len()
            )));
        }
        let batch = x.len() / dim;
        Ok((x, batch))
    }

    /// Integrates noise to samples (the model's noise end to its data end) on `backend`.
    ///
    /// Everything the request allows runs on every backend that can run it: guidance,
    /// few-step models and trajectories on cpu, ort, wgpu and cuda; the SDE (with or without
    /// guidance) on cpu and ort; multi-network files on the cpu. Anything else is a
    /// [`HostError::Unsupported`] naming what can.
    ///
    /// Errors: a request that does not fit the model ([`HostError::Request`]), an
    /// unsupported combination, or whatever the backend reports.
    pub fn sample(&self, backend: Backend, req: &Request, noise: Noise) -> Result<Samples> {
        self.sample_with_progress(backend, req, noise, &mut |_| {})
    }

    /// [`Frt::sample`], calling `progress` after every solver step with how far the run has
    /// got ([`Progress`]). On cpu and ort every step is reported as it ends; a GPU run and a
    /// multi-network file report nothing until they are done (the GPU queues its steps
    /// ahead of the device, so a count of queued steps would not be progress). The
    /// callback runs on the sampling thread: keep it short.
    ///
    /// Errors: as [`Frt::sample`].
    pub fn sample_with_progress(
        &self,
        backend: Backend,
        req: &Request,
        noise: Noise,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Samples> {
        let m = self.model();
        let (mut x, batch) = self.noise_rows(&m, noise)?;
        let res = Resolved::new(&m, req, batch)?;
        let (plan, inputs, guided, rows) = (&res.plan, &res.inputs, &res.guided, res.rows);
        let grid = plan.grid.grid(m.time_convention().axis)?;
        if req.sde.is_some() && req.trajectory {
            return Err(HostError::Unsupported(
                "--trajectory is not available with --sde".into(),
            ));
        }
        if let Some(p) = m.pipeline() {
            let cond = inputs.as_conditioning();
            return self.sample_pipeline(
                backend,
                req,
                &m,
                &p,
                plan,
                &grid,
                x,
                &cond,
                guided.is_some(),
            );
        }
        let mut report = Report {
            method: if req.sde.is_some() {
                "euler-maruyama".into()
            } else {
                plan.method.name().into()
            },
            grid: plan.grid.label.clone(),
            guidance: guided.as_ref().map(|(g, _)| *g),
            ..Default::default()
        };
        let start = Instant::now();
        let cpu_only = req.sde.is_some() || req.onnx.is_some();
        report.backend = match backend {
            Backend::Auto if cpu_only => {
                report
                    .notes
                    .push("backend auto: cpu (--sde and --onnx run on the CPU)".into());
                Backend::Cpu
            }
            b => resolve_backend(b, &m, rows, &mut report.notes),
        };
        let mut traj = req.trajectory.then(Trajectory::default);
        let counts = match report.backend {
            #[cfg(feature = "gpu")]
            Backend::Wgpu | Backend::Cuda => {
                if cpu_only {
                    return Err(HostError::Unsupported(format!(
                        "--sde and --onnx are not available with --backend {} (use cpu or ort)",
                        report.backend.name()
                    )));
                }
                let gpu = if report.backend == Backend::Wgpu {
                    flowrt_cubecl::GpuBackend::Wgpu
                } else {
                    flowrt_cubecl::GpuBackend::Cuda
                };
                let sreq = flowrt::run::Request {
                    method: plan.method,
                    grid: &grid,
                    tol: plan.tol,
                    cond: inputs.as_conditioning(),
                    guidance: guided.as_ref().map(|(g, d)| (*g, d.as_conditioning())),
                };
                let mut rec = traj
                    .as_ref()
                    .map(|_| flowrt_cubecl::sample::Recorder::default());
                let x0 = traj.as_ref().map(|_| x.clone()).unwrap_or_default();
                let r = crate::gpu::sample(gpu, &m, &mut x, &sreq, rec.as_mut())?;
                if let (Some(t), Some(rec)) = (traj.as_mut(), rec) {
                    // The initial state first, as the CPU path records it.
                    t.states = x0;
                    t.times = vec![grid.point(0).unwrap_or(f32::NAN)];
                    t.states.extend_from_slice(&rec.states);
                    t.times.extend_from_slice(&rec.times);
                }
                report.notes.push(crate::gpu::describe(&r));
                Stats {
                    steps: r.steps,
                    rejected: r.rejected,
                    evaluations: r.evaluations,
                }
            }
            #[cfg(not(feature = "gpu"))]
            Backend::Wgpu | Backend::Cuda => {
                return Err(HostError::Unsupported(format!(
                    "this build has no GPU backend (feature `{}`)",
                    report.backend.name()
                )))
            }
            b => {
                let run = HostRun {
                    model: m,
                    res: &res,
                    sde: req.sde.as_ref(),
                };
                let total = units(&grid, plan.method == Method::Dopri5 && req.sde.is_none());
                with_net(&m, b, req, rows, |net| {
                    run.run(net, &grid, &mut x, traj.as_mut(), progress, 0, total)
                })?
            }
        };
        report.steps = counts.steps;
        report.rejected = counts.rejected;
        report.evaluations = counts.evaluations;
        report.elapsed = start.elapsed();
        Ok(Samples {
            row_shape: row_shape(&m, m.state_dim()),
            data: x,
            trajectory: traj,
            report,
        })
    }

    /// A multi-network file (blocks, refiner, decoder) on the CPU executor.
    #[allow(clippy::too_many_arguments)]
    fn sample_pipeline(
        &self,
        backend: Backend,
        req: &Request,
        m: &Model<'_>,
        p: &flowrt::pipeline::Pipeline<'_>,
        plan: &Plan,
        grid: &dyn TimeGrid,
        mut x: Vec<f32>,
        cond: &flowrt::field::Conditioning<'_>,
        guided: bool,
    ) -> Result<Samples> {
        if !matches!(backend, Backend::Cpu | Backend::Auto)
            || req.sde.is_some()
            || req.trajectory
            || guided
        {
            return Err(HostError::Unsupported(
                "multi-network files sample on the CPU backend, without --sde, --guidance or \
                 --trajectory"
                    .into(),
            ));
        }
        let batch = x.len() / m.state_dim();
        let need = flowrt::pipeline::pipeline_arena_bytes(p, plan.method, batch)?;
        let mut arena = arena(need)?;
        let out_dim = p.output_dim();
        let mut decoded = vec![
            0f32;
            if p.decoder().is_some() {
                batch * out_dim
            } else {
                0
            }
        ];
        let start = Instant::now();
        flowrt::pipeline::sample_pipeline_cond(
            p,
            plan.method,
            grid,
            &mut x,
            cond,
            p.decoder().map(|_| &mut decoded[..]),
            arena.as_mut_slice(),
        )?;
        let stages: Vec<String> = p
            .stages()
            .map(|(k, _)| match k {
                flowrt::pipeline::StageKind::Block { a, b } => format!("block [{a}, {b}]"),
                flowrt::pipeline::StageKind::Refiner { from, to } => {
                    format!("refiner [{from}, {to})")
                }
                flowrt::pipeline::StageKind::Decoder => "decoder".to_string(),
            })
            .collect();
        let report = Report {
            backend: Backend::Cpu,
            method: plan.method.name().into(),
            steps: grid.steps(),
            grid: plan.grid.label.clone(),
            pipeline: Some((stages.join(", "), need)),
            elapsed: start.elapsed(),
            ..Default::default()
        };
        Ok(Samples {
            row_shape: row_shape(p.decoder().unwrap_or(m), out_dim),
            data: if p.decoder().is_some() { decoded } else { x },
            trajectory: None,
            report,
        })
    }

    /// Integrates `data` (rows of the model's state) back to noise with the request's solver
    /// and grid reversed, then forward again ([`Inverted::roundtrip`]), on cpu or ort.
    ///
    /// Errors: as [`Frt::sample`]; a grid that cannot be reversed.
    pub fn invert(&self, backend: Backend, req: &Request, data: Vec<f32>) -> Result<Inverted> {
        self.invert_with_progress(backend, req, data, &mut |_| {})
    }

    /// [`Frt::invert`], calling `progress` after every solver step of both integrations
    /// (backward, then forward: one run of twice the units, see [`Progress`]).
    ///
    /// Errors: as [`Frt::invert`].
    pub fn invert_with_progress(
        &self,
        backend: Backend,
        req: &Request,
        data: Vec<f32>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Inverted> {
        let m = self.model();
        let (x, batch) = self.noise_rows(&m, Noise::Given(data))?;
        let res = Resolved::new(&m, req, batch)?;
        let plan = &res.plan;
        let axis = m.time_convention().axis;
        let forward = plan.grid.points(axis)?;
        let backward = crate::plan::reversed(&forward)?;
        let back_grid = Explicit::new(&backward)?;
        let fwd_grid = Explicit::new(&forward)?;
        let run = HostRun {
            model: m,
            res: &res,
            sde: None,
        };
        let start = Instant::now();
        let mut z = x;
        let mut again = Vec::new();
        let each = units(&fwd_grid, plan.method == Method::Dopri5);
        let counts = with_net(&m, backend, req, res.rows, |net| {
            let c = run.run(net, &back_grid, &mut z, None, progress, 0, 2 * each)?;
            again = z.clone();
            run.run(net, &fwd_grid, &mut again, None, progress, each, 2 * each)?;
            Ok(c)
        })?;
        let report = Report {
            backend: host_memory_backend(backend),
            method: plan.method.name().into(),
            steps: counts.steps,
            rejected: counts.rejected,
            evaluations: counts.evaluations,
            grid: plan.grid.label.clone(),
            guidance: res.guided.as_ref().map(|(g, _)| *g),
            elapsed: start.elapsed(),
            ..Default::default()
        };
        Ok(Inverted {
            noise: z,
            roundtrip: again,
            report,
        })
    }

    /// Applies a state-to-state model (a neural PDE surrogate: input `x` only) `steps` times
    /// to `init`, on cpu or ort; the trajectory holds the initial state and every step's.
    ///
    /// Errors: a model with a time input, sizes, a non-finite state, or the backend's error.
    pub fn rollout(
        &self,
        backend: Backend,
        req: &Request,
        init: Vec<f32>,
        steps: usize,
    ) -> Result<(Trajectory, Report)> {
        self.rollout_with_progress(backend, req, init, steps, &mut |_| {})
    }

    /// [`Frt::rollout`], calling `progress` after every application of the model (`done` of
    /// `steps`).
    ///
    /// Errors: as [`Frt::rollout`].
    pub fn rollout_with_progress(
        &self,
        backend: Backend,
        req: &Request,
        init: Vec<f32>,
        steps: usize,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Trajectory, Report)> {
        let m = self.model();
        if m.inputs()
            .any(|i| matches!(i.role, InputRole::T | InputRole::Xt | InputRole::Step))
        {
            return Err(HostError::request(
                "rollout needs a state-to-state model (input x only); this one has a time input",
            ));
        }
        let (mut x, batch) = self.noise_rows(&m, Noise::Given(init))?;
        let mut traj = Trajectory::default();
        traj.states.extend_from_slice(&x);
        traj.times.push(0.0);
        let start = Instant::now();
        with_net(&m, backend, req, batch, |net| {
            let mut next = vec![0f32; x.len()];
            let mut observer = Observer {
                trajectory: Some(&mut traj),
                ticker: Ticker {
                    f: progress,
                    offset: 0,
                    total: steps as u64,
                    span: None,
                    high: 0,
                },
            };
            Ok(flowrt::fewstep::rollout(
                &mut CpuOps,
                net,
                &flowrt::field::Conditioning::default(),
                steps,
                &mut x,
                &mut next,
                &mut observer,
            )?)
        })?;
        let report = Report {
            backend: host_memory_backend(backend),
            steps,
            evaluations: steps,
            elapsed: start.elapsed(),
            ..Default::default()
        };
        Ok((traj, report))
    }
}
