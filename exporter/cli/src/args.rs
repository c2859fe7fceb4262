//! The sampling flags shared by `sample`, `invert` and `rollout`, and how they become a
//! [`flowrt_host::Request`] (files such as `--label Y.npy` are read here; the host checks
//! what they hold against the model).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use flowrt::Model;
use flowrt_export::npy;
use flowrt_host::{
    CondRequest, Frt, GridChoice, GuidanceRequest, Labels, Request, ScoreKind, SdeRequest,
    SolverRequest,
};

/// Velocity backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// flowrt's own CPU executor.
    Cpu,
    /// ONNX Runtime (flowrt-ort), from the embedded ONNX or --onnx.
    Ort,
    /// flowrt's cubecl kernels through wgpu (Vulkan / Metal / DX12; `sample`, `bench`).
    Wgpu,
    /// flowrt's cubecl kernels through CUDA (`sample`, `bench`).
    Cuda,
    /// A GPU when one is found and the model is large enough, else the CPU executor.
    Auto,
}

impl From<BackendArg> for flowrt_host::Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Cpu => flowrt_host::Backend::Cpu,
            BackendArg::Ort => flowrt_host::Backend::Ort,
            BackendArg::Wgpu => flowrt_host::Backend::Wgpu,
            BackendArg::Cuda => flowrt_host::Backend::Cuda,
            BackendArg::Auto => flowrt_host::Backend::Auto,
        }
    }
}

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
    /// dopri5: most attempted steps (accepted + rejected) before failing.
    #[arg(long, default_value_t = 1 << 16, value_name = "N")]
    pub max_steps: usize,
}

impl SolveArgs {
    /// The solver part of the request (grid files are read here).
    ///
    /// Errors: an unknown method or grid, an unreadable grid file.
    pub fn request(&self) -> Result<SolverRequest> {
        let method = match &self.method {
            Some(m) => Some(m.parse().map_err(|e| anyhow!("--method {m}: {e}"))?),
            None => None,
        };
        let grid = if let Some(h) = self.step_size {
            Some((GridChoice::StepSize(h), format!("step-size {h}")))
        } else if let Some(p) = &self.grid_file {
            Some((
                GridChoice::Points(read_points(p)?),
                format!("file {}", p.display()),
            ))
        } else if let Some(g) = &self.grid {
            Some((GridChoice::parse(g)?, g.clone()))
        } else {
            None
        };
        // Checked whatever the method (an ignored NaN tolerance is still a mistake).
        for (flag, v) in [("--rtol", self.rtol), ("--atol", self.atol)] {
            if !v.is_finite() || v < 0.0 {
                bail!("{flag} {v}: a tolerance must be finite and non-negative");
            }
        }
        if self.rtol == 0.0 && self.atol == 0.0 {
            bail!("--rtol and --atol are both 0: dopri5 could never accept a step");
        }
        if self.max_steps == 0 {
            bail!("--max-steps 0: dopri5 needs at least one step");
        }
        if let Some(n) = self.steps.filter(|&n| n > flowrt::grid::MAX_GRID_STEPS) {
            bail!(
                "--steps {n}: at most {} steps (2^24)",
                flowrt::grid::MAX_GRID_STEPS
            );
        }
        Ok(SolverRequest {
            method,
            steps: self.steps,
            grid,
            tol: Some(flowrt::solver::adaptive::Tolerances {
                rtol: self.rtol,
                atol: self.atol,
                max_steps: self.max_steps,
            }),
        })
    }
}

/// Reads an explicit grid file (.npy or text).
fn read_points(path: &Path) -> Result<Vec<f32>> {
    if path.extension().is_some_and(|e| e == "npy") {
        return Ok(npy::read_f32(path)?.0);
    }
    // A grid is at most a few thousand numbers: 16 MiB of text is plenty.
    let bytes = npy::read_capped(path, 16 << 20)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow!("{}: the grid file is not UTF-8 text", path.display()))?;
    flowrt_host::plan::parse_points(&text).with_context(|| format!("{}", path.display()))
}

/// Conditioning and classifier-free guidance flags of `sample` and `invert`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CondFlags {
    /// Class labels for a model with a `label` input (.npy int64 / int32, or floats with
    /// integer values, shape [N]).
    #[arg(long, value_name = "Y.npy", conflicts_with = "label_value")]
    pub label: Option<PathBuf>,
    /// One class label for every sample (e.g. with --seed/--num).
    #[arg(long, value_name = "K", allow_negative_numbers = true)]
    pub label_value: Option<i64>,
    /// Labels 0, 1, ..., N-1, 0, 1, ...: sample i gets class i % N (e.g. a grid of every
    /// class with --png).
    #[arg(long, value_name = "N", conflicts_with_all = ["label", "label_value"])]
    pub label_cycle: Option<i64>,
    /// Conditioning vectors for a model with a `cond` input (.npy float, shape [N, C]).
    #[arg(long, value_name = "C.npy")]
    pub cond: Option<PathBuf>,
    /// Value of a model's embedded `guidance` input (Flux-style), for every sample. This is
    /// not classifier-free guidance (see --guidance).
    #[arg(long, value_name = "G", allow_negative_numbers = true)]
    pub guidance_value: Option<f32>,
    /// Classifier-free guidance scale w: v = v_u + w (v_c - v_u), evaluated as one doubled
    /// batch (conditional rows, then the null label / null conditioning). Default: the
    /// model's baked-in scale, else none.
    #[arg(long, value_name = "W", allow_negative_numbers = true)]
    pub guidance: Option<f32>,
    /// The null (unconditional) label for --guidance. Default: the model's baked-in one.
    #[arg(long, value_name = "K")]
    pub null_label: Option<i64>,
    /// The null conditioning vector for --guidance on a `cond` model (.npy [C]; default
    /// zeros).
    #[arg(long, value_name = "C.npy")]
    pub null_cond: Option<PathBuf>,
    /// Apply guidance only for model times in [A, B] (conditional velocity elsewhere).
    /// Default: the model's baked-in interval, else always.
    #[arg(long, value_name = "A,B")]
    pub guidance_interval: Option<String>,
}

impl CondFlags {
    /// The conditioning and guidance parts of the request for `batch` samples (files read
    /// and their shapes checked here).
    ///
    /// Errors: unreadable files or files of the wrong shape, a malformed interval.
    pub fn request(&self, batch: usize) -> Result<(CondRequest, GuidanceRequest)> {
        let labels = match (&self.label, self.label_value, self.label_cycle) {
            (Some(p), _, _) => {
                let (data, shape) = npy::read_labels(p)?;
                if shape.len() != 1 || shape[0] != batch {
                    bail!(
                        "{}: labels of shape {shape:?}; need [{batch}] (one per sample)",
                        p.display()
                    );
                }
                Some(Labels::PerRow(data))
            }
            (None, Some(k), _) => Some(Labels::All(k)),
            (None, None, Some(n)) => Some(Labels::Cycle(n)),
            (None, None, None) => None,
        };
        let cond = match &self.cond {
            Some(p) => {
                let (data, shape) = npy::read_f32(p)?;
                if shape.len() != 2 || shape[0] != batch {
                    bail!(
                        "{}: cond of shape {shape:?}; need [{batch}, C]",
                        p.display()
                    );
                }
                Some(data)
            }
            None => None,
        };
        let null_cond = match &self.null_cond {
            Some(p) => Some(npy::read_f32(p)?.0),
            None => None,
        };
        let interval = self
            .guidance_interval
            .as_deref()
            .map(flowrt_host::conditioning::parse_interval)
            .transpose()?;
        Ok((
            CondRequest {
                labels,
                cond,
                guidance_value: self.guidance_value,
            },
            GuidanceRequest {
                scale: self.guidance,
                null_label: self.null_label,
                null_cond,
                interval,
            },
        ))
    }
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
    #[arg(long, value_enum, default_value_t = ScoreArg::Noise, requires = "score_model")]
    pub score_kind: ScoreArg,
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
pub enum ScoreArg {
    /// The noise eps ~ E[x0 | x_t]: score = -eps / (1 - t).
    #[default]
    Noise,
    /// The score itself.
    Score,
}

impl SdeArgs {
    /// The SDE part of the request (score model and noise files read here).
    ///
    /// Errors: unreadable files.
    pub fn request(&self) -> Result<Option<SdeRequest>> {
        let Some(diffusion) = &self.sde else {
            return Ok(None);
        };
        let score_model = match &self.score_model {
            Some(p) => {
                let kind = match self.score_kind {
                    ScoreArg::Noise => ScoreKind::Noise,
                    ScoreArg::Score => ScoreKind::Score,
                };
                let f = Frt::open(p).map_err(|e| anyhow!("--score-model: {e}"))?;
                Some((f, kind))
            }
            None => None,
        };
        let noise = match &self.sde_noise {
            Some(p) => Some(npy::read_f32(p)?.0),
            None => None,
        };
        Ok(Some(SdeRequest {
            diffusion: diffusion.clone(),
            score_model,
            noise,
            seed: self.sde_seed,
        }))
    }
}

/// A whole request from the flags of `sample` / `invert` for `batch` samples.
///
/// Errors: as the parts.
pub fn request(
    solve: &SolveArgs,
    cond: &CondFlags,
    sde: Option<&SdeArgs>,
    onnx: Option<&Path>,
    threads: usize,
    batch: usize,
) -> Result<Request> {
    let (conditioning, guidance) = cond.request(batch)?;
    Ok(Request {
        solver: solve.request()?,
        conditioning,
        guidance,
        sde: sde.map(SdeArgs::request).transpose()?.flatten(),
        trajectory: false,
        onnx: onnx.map(Path::to_path_buf),
        threads,
    })
}

/// Reads `[N, ...]` rows of the model's state (`what`: noise, data) from an .npy file.
pub fn read_rows(p: &Path, m: &Model<'_>, what: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    let dim = m.state_dim();
    let (data, shape) = npy::read_f32(p)?;
    let row: usize = shape.iter().skip(1).product();
    if shape.len() < 2 || row != dim {
        use flowrt::format::InputRole;
        let x_shape = m
            .inputs()
            .find(|i| matches!(i.role, InputRole::X | InputRole::Xt))
            .map(|i| i.shape.to_string().trim().to_string())
            .unwrap_or_default();
        bail!(
            "{}: {what} shape {:?} does not fit the model's state (rows of {dim} values, \
             input shape {x_shape})",
            p.display(),
            shape
        );
    }
    Ok((data, shape))
}
