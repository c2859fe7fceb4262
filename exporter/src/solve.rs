//! The command line's solver plumbing: `--method/--steps/--grid/...` resolved against the
//! model's baked-in defaults, the velocity backend, trajectories, inversion and SDE runs.
//! Everything numeric happens in the runtime crate; this module only wires it up.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use flowrt::field::ConventionField;
use flowrt::grid::{Explicit, Grid, GridSpec, TimeGrid};
use flowrt::sde::{Diffusion, NoiseSource, PhiloxNoise, Score, SliceNoise};
use flowrt::solver::{adaptive, integrate_observed, Method, StepObserver, Workspace};
use flowrt::{CpuOps, Model, VelocityField};

/// Solver options shared by `sample` and `invert`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SolveArgs {
    /// Solver: euler, midpoint, heun, ralston, rk4 (classic), rk4-38 (torchdiffeq's rk4),
    /// rk4-torchdyn (torchdyn's rk4, for reproducing it), ab2, ab3, ab4 (Adams-Bashforth,
    /// variable step, lower-order start-up), heun-reuse (FlowTurbo pseudo-corrector),
    /// dopri5 (adaptive, --rtol/--atol). Default: the model's baked-in method, else euler.
    #[arg(long)]
    pub method: Option<String>,
    /// Number of steps. Default: the model's baked-in value, else 1. Ignored by explicit
    /// grids, --step-size and dopri5.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Time grid: uniform | shift:S | dynamic-shift:MU | dynamic-shift-linear:MU |
    /// diffusers | diffusers:S | diffusers-dynamic:MU[:linear] | flux:MU[:linear] |
    /// t0,t1,...,tN (an explicit list of model times; sets the step count). Named grids run
    /// from the model's noise end to its data end. Default: the model's baked-in grid,
    /// else uniform.
    #[arg(long, allow_hyphen_values = true)]
    pub grid: Option<String>,
    /// Explicit grid from a file: .npy (float) or text with numbers separated by commas or
    /// whitespace.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["grid", "step_size"])]
    pub grid_file: Option<PathBuf>,
    /// torchdiffeq's step-size grid: ceil(span/H + 1) points, the last one overwritten by
    /// the end time (so --step-size 0.1 gives 10 steps, 1/61 gives 62).
    #[arg(long, value_name = "H", conflicts_with = "grid")]
    pub step_size: Option<f32>,
    /// dopri5 relative tolerance.
    #[arg(long, default_value_t = 1e-7)]
    pub rtol: f32,
    /// dopri5 absolute tolerance.
    #[arg(long, default_value_t = 1e-9)]
    pub atol: f32,
}

/// A grid the CLI owns: a spec, plus the points of an explicit list.
#[derive(Debug, Clone)]
pub struct OwnedGrid {
    spec: GridSpec<'static>,
    points: Option<Vec<f32>>,
    steps: usize,
    /// How it was chosen, for the summary line.
    pub label: String,
}

impl OwnedGrid {
    /// The grid (in model time) for the model's axis.
    ///
    /// Errors: invalid grid parameters.
    pub fn grid(&self, axis: flowrt::time::TimeAxis) -> Result<Grid<'_>> {
        let spec = match &self.points {
            Some(p) => GridSpec::Explicit(p),
            None => self.spec,
        };
        spec.build(self.steps, axis)
            .map_err(|e| anyhow!("grid {}: {e}", self.label))
    }

    /// All points of the grid.
    ///
    /// Errors: as [`OwnedGrid::grid`].
    pub fn points(&self, axis: flowrt::time::TimeAxis) -> Result<Vec<f32>> {
        let g = self.grid(axis)?;
        (0..=g.steps())
            .map(|i| g.point(i).ok_or_else(|| anyhow!("grid point {i} missing")))
            .collect()
    }
}

/// Parses an explicit list `t0,t1,...`.
///
/// Errors: a malformed number or fewer than two points.
pub fn parse_points(s: &str) -> Result<Vec<f32>> {
    let pts: Vec<f32> = s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<f32>()
                .map_err(|_| anyhow!("`{p}` is not a number"))
        })
        .collect::<Result<_>>()?;
    if pts.len() < 2 {
        bail!(
            "an explicit grid needs at least two times, got {}",
            pts.len()
        );
    }
    Ok(pts)
}

/// Reads an explicit grid file (.npy or text).
///
/// Errors: unreadable file or malformed contents.
pub fn read_points(path: &std::path::Path) -> Result<Vec<f32>> {
    if path.extension().is_some_and(|e| e == "npy") {
        let (v, _) = crate::npy::read_f32(path)?;
        return Ok(v);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_points(&text).with_context(|| format!("{}", path.display()))
}

/// Parses a `--grid` value: a named grid or an explicit list.
///
/// Errors: an unknown name or malformed numbers.
pub fn parse_grid(s: &str) -> Result<(GridSpec<'static>, Option<Vec<f32>>)> {
    let first = s.trim_start().chars().next().unwrap_or(' ');
    if first.is_ascii_digit() || first == '-' || first == '.' {
        return Ok((GridSpec::Uniform, Some(parse_points(s)?)));
    }
    GridSpec::parse_named(s)
        .map(|g| (g, None))
        .map_err(|e| anyhow!("--grid {s}: {e}"))
}

/// A spec that owns its points (explicit lists are copied out).
fn to_static(spec: GridSpec<'_>) -> (GridSpec<'static>, Option<Vec<f32>>) {
    match spec {
        GridSpec::Explicit(p) => (GridSpec::Uniform, Some(p.to_vec())),
        GridSpec::Uniform => (GridSpec::Uniform, None),
        GridSpec::StepSize(h) => (GridSpec::StepSize(h), None),
        GridSpec::Shift(s) => (GridSpec::Shift(s), None),
        GridSpec::DynamicShift { mu, kind } => (GridSpec::DynamicShift { mu, kind }, None),
        GridSpec::Diffusers { shift, flux_sigmas } => {
            (GridSpec::Diffusers { shift, flux_sigmas }, None)
        }
    }
}

/// The resolved solver of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The method.
    pub method: Method,
    /// The grid.
    pub grid: OwnedGrid,
    /// dopri5 tolerances.
    pub tol: adaptive::Tolerances,
}

impl SolveArgs {
    /// Resolves the options against the model's solver defaults (command line first).
    ///
    /// Errors: unknown method or grid, zero steps.
    pub fn plan(&self, model: &Model<'_>) -> Result<Plan> {
        let defaults = model.solver_defaults().unwrap_or_default();
        let method = match &self.method {
            Some(m) => m.parse().map_err(|e| anyhow!("--method {m}: {e}"))?,
            None => defaults.method.unwrap_or(Method::Euler),
        };
        let steps = self.steps.or(defaults.steps).unwrap_or(1);
        if steps == 0 {
            bail!("--steps must be at least 1");
        }
        let (spec, points, label) = if let Some(h) = self.step_size {
            (GridSpec::StepSize(h), None, format!("step-size {h}"))
        } else if let Some(p) = &self.grid_file {
            (
                GridSpec::Uniform,
                Some(read_points(p)?),
                format!("file {}", p.display()),
            )
        } else if let Some(g) = &self.grid {
            let (spec, points) = parse_grid(g)?;
            (spec, points, g.clone())
        } else {
            match defaults.grid {
                Some(spec) => {
                    let (owned, points) = to_static(spec);
                    (owned, points, format!("baked-in {spec:?}"))
                }
                None => (GridSpec::Uniform, None, "uniform".into()),
            }
        };
        let grid = OwnedGrid {
            spec,
            points,
            steps,
            label,
        };
        let tol = adaptive::Tolerances {
            rtol: self.rtol,
            atol: self.atol,
            ..Default::default()
        };
        Ok(Plan { method, grid, tol })
    }
}

/// Records the state after every step (and the initial state): `[steps + 1, len]`.
#[derive(Debug, Default)]
pub struct Trajectory {
    /// The recorded states, step-major.
    pub states: Vec<f32>,
    /// Times of the recorded states.
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

/// The observer of a run: the trajectory, after recording the initial state `x` at the
/// grid's first point, or `none`.
pub fn observer<'t>(
    trajectory: Option<&'t mut Trajectory>,
    none: &'t mut flowrt::solver::NoObserver,
    x: &[f32],
    grid: &dyn TimeGrid,
) -> &'t mut dyn StepObserver<CpuOps> {
    match trajectory {
        Some(t) => {
            t.states.extend_from_slice(x);
            t.times.push(grid.point(0).unwrap_or(f32::NAN));
            t
        }
        None => none,
    }
}

/// What a solve did, for the summary line.
#[derive(Debug, Clone, Copy, Default)]
pub struct SolveReport {
    /// Steps taken (accepted steps for dopri5).
    pub steps: usize,
    /// Velocity evaluations.
    pub evaluations: usize,
    /// Rejected steps (dopri5).
    pub rejected: usize,
}

/// Counts evaluations of an inner field.
struct Counting<'f> {
    inner: &'f mut dyn VelocityField<CpuOps>,
    count: usize,
}

impl VelocityField<CpuOps> for Counting<'_> {
    fn eval(
        &mut self,
        ops: &mut CpuOps,
        t: f32,
        x: &[f32],
        v: &mut [f32],
    ) -> Result<(), flowrt::Error> {
        self.count += 1;
        self.inner.eval(ops, t, x, v)
    }
}

/// Integrates `x` along `grid` with the plan's method, through the time convention `conv`
/// (pass the default when `net` applies it itself, as guidance does), optionally recording
/// the trajectory.
///
/// Errors: whatever the solver or the field returns.
pub fn integrate(
    conv: flowrt::time::TimeConvention,
    net: &mut dyn VelocityField<CpuOps>,
    plan: &Plan,
    grid: &dyn TimeGrid,
    x: &mut [f32],
    trajectory: Option<&mut Trajectory>,
) -> Result<SolveReport, flowrt::Error> {
    let method = plan.method;
    let mut flat = vec![0f32; x.len() * method.work_buffers()];
    let mut work = Workspace::from_slice(&mut flat, x.len(), method.work_buffers())?;
    let mut counting = Counting {
        inner: net,
        count: 0,
    };
    let mut field = ConventionField::new(&mut counting, conv);
    let mut none = flowrt::solver::NoObserver;
    let observer = observer(trajectory, &mut none, x, grid);
    let mut report = SolveReport {
        steps: grid.steps(),
        ..Default::default()
    };
    if method == Method::Dopri5 {
        let stats = adaptive::dopri5(
            &mut CpuOps,
            &mut field,
            &plan.tol,
            grid,
            x,
            &mut work,
            observer,
        )?;
        report.steps = stats.accepted;
        report.rejected = stats.rejected;
    } else {
        integrate_observed(
            &mut CpuOps,
            &mut field,
            method,
            grid,
            x,
            &mut work,
            observer,
        )?;
    }
    report.evaluations = counting.count;
    Ok(report)
}

/// The grid reversed (data → noise), for inversion.
///
/// Errors: a grid whose points are not strictly monotone (e.g. torchdiffeq's degenerate
/// last step).
pub fn reversed(points: &[f32]) -> Result<Vec<f32>> {
    let r: Vec<f32> = points.iter().rev().copied().collect();
    Explicit::new(&r).map_err(|e| anyhow!("cannot reverse the grid: {e}"))?;
    Ok(r)
}

/// SDE options of `sample`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SdeArgs {
    /// Sample the SDE with Euler-Maruyama instead of the ODE: diffusion g(t) = const:W or
    /// linear:W (= W (1 - t)). The model must use the t axis (0 = noise), path
    /// x_t = t x1 + (1 - t) x0 with Gaussian noise x0.
    #[arg(long, value_name = "SCHEDULE")]
    pub sde: Option<String>,
    /// A second .frt predicting the noise (--score-kind noise, default) or the score;
    /// without it the score is derived from the velocity.
    #[arg(long, value_name = "FRT", requires = "sde")]
    pub score_model: Option<PathBuf>,
    /// What --score-model predicts.
    #[arg(long, value_enum, default_value_t = ScoreKind::Noise, requires = "score_model")]
    pub score_kind: ScoreKind,
    /// Brownian increments as .npy [steps, N, ...] standard normals (to reproduce a Python
    /// run); default: flowrt's Philox generator with --sde-seed.
    #[arg(long, value_name = "NPY", requires = "sde")]
    pub sde_noise: Option<PathBuf>,
    /// Seed of the SDE noise (streams 1.. of the Philox generator).
    #[arg(long, default_value_t = 0, requires = "sde")]
    pub sde_seed: u64,
}

/// What a score model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ScoreKind {
    /// The noise eps ~ E[x0 | x_t]: score = -eps / (1 - t).
    #[default]
    Noise,
    /// The score itself.
    Score,
}

/// Runs the SDE sampler for `x` with the network `net` (any backend, conditioning
/// applied); a score model runs on the CPU executor.
///
/// Errors: bad options, a model on the sigma axis, sizes, or a failed evaluation.
pub fn sample_sde(
    model: &Model<'_>,
    net: &mut dyn VelocityField<CpuOps>,
    args: &SdeArgs,
    schedule: &str,
    grid: &dyn TimeGrid,
    x: &mut [f32],
) -> Result<SolveReport> {
    let diffusion = Diffusion::parse(schedule).map_err(|e| anyhow!("--sde {schedule}: {e}"))?;
    let conv = model.time_convention();
    if conv.axis != flowrt::time::TimeAxis::T {
        bail!(
            "--sde needs a model on the t axis (0 = noise); this one uses {}",
            conv.axis.name()
        );
    }
    let batch = x.len() / model.state_dim();
    let mut field = ConventionField::new(net, conv);
    let score_bytes = match &args.score_model {
        Some(p) => Some(crate::read_frt(p)?),
        None => None,
    };
    let score_model = match &score_bytes {
        Some(b) => {
            let m = Model::from_bytes(b.as_slice()).map_err(|e| anyhow!("--score-model: {e}"))?;
            if m.state_dim() != model.state_dim() {
                bail!(
                    "--score-model has state dim {} but the model has {}",
                    m.state_dim(),
                    model.state_dim()
                );
            }
            Some(m)
        }
        None => None,
    };
    let mut score_arena = match &score_model {
        Some(m) => Some(
            flowrt::format::AlignedBytes::try_zeroed(m.required_arena_bytes(batch)?)
                .ok_or_else(|| anyhow!("cannot allocate the score arena"))?,
        ),
        None => None,
    };
    let mut score_net = match (&score_model, score_arena.as_mut()) {
        (Some(m), Some(a)) => Some(flowrt::exec::CpuField::new(m, batch, a.as_mut_slice())?),
        _ => None,
    };
    let score_conv = score_model.map(|m| m.time_convention()).unwrap_or_default();
    let mut score_field = score_net
        .as_mut()
        .map(|n| ConventionField::new(n, score_conv));
    let score = match (score_field.as_mut(), args.score_kind) {
        (None, _) => Score::FromVelocity,
        (Some(f), ScoreKind::Noise) => Score::Noise(f),
        (Some(f), ScoreKind::Score) => Score::Direct(f),
    };
    let noise_data = match &args.sde_noise {
        Some(p) => {
            let (z, shape) = crate::npy::read_f32(p)?;
            let want = grid.steps() * x.len();
            if z.len() != want {
                bail!(
                    "{}: shape {shape:?} holds {} values, the SDE needs steps x N x dim = {want}",
                    p.display(),
                    z.len()
                );
            }
            Some(z)
        }
        None => None,
    };
    let mut philox = PhiloxNoise(args.sde_seed);
    let mut slice;
    let noise: &mut dyn NoiseSource = match &noise_data {
        Some(z) => {
            slice = SliceNoise(z);
            &mut slice
        }
        None => &mut philox,
    };
    let mut work = vec![0f32; flowrt::sde::work_len(x.len()).unwrap_or(0)];
    flowrt::sde::euler_maruyama(&mut field, score, diffusion, grid, x, &mut work, noise)?;
    let per_step = if score_model.is_some() { 2 } else { 1 };
    Ok(SolveReport {
        steps: grid.steps(),
        evaluations: grid.steps() * per_step,
        ..Default::default()
    })
}
