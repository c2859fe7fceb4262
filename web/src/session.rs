//! The sampling the page asks for, in safe Rust: a validated model held in aligned memory, a
//! request (method, steps, seed, count, labels, guidance) resolved against the model's
//! baked-in defaults exactly as `flowrt sample` resolves it, and one run of the runtime's
//! request-driven loop ([`flowrt::run::run`]) on the CPU executor — the same call the native
//! CLI makes, so the samples are the same bytes.

use flowrt::exec::CpuField;
use flowrt::field::Conditioning;
use flowrt::format::{AlignedBytes, InputRole};
use flowrt::grid::GridSpec;
use flowrt::guidance::Guidance;
use flowrt::run::{Buffers, Facts};
use flowrt::solver::{adaptive, Method, StepObserver, Workspace};
use flowrt::{CpuOps, Model};

/// Everything a web request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The `.frt` bytes do not load (the runtime's validation error).
    #[error("the .frt file does not load: {0}")]
    BadFile(flowrt::Error),
    /// No model has been loaded yet.
    #[error("no model loaded")]
    NoModel,
    /// A request that does not fit the model (missing label, bad method name, ...).
    #[error("{0}")]
    Request(String),
    /// The runtime refused or failed the computation (sizes, non-finite values, ...).
    #[error("sampling failed: {0}")]
    Flowrt(flowrt::Error),
    /// A buffer of this many bytes could not be allocated.
    #[error("cannot allocate {0} bytes")]
    Alloc(usize),
}

impl From<flowrt::Error> for WebError {
    fn from(e: flowrt::Error) -> Self {
        WebError::Flowrt(e)
    }
}

fn bad<T>(msg: impl Into<String>) -> Result<T, WebError> {
    Err(WebError::Request(msg.into()))
}

/// A validated `.frt` image in 16-byte aligned memory.
pub struct Loaded {
    bytes: AlignedBytes,
}

impl Loaded {
    /// Copies and validates `raw`.
    ///
    /// Errors: [`WebError::BadFile`] with the runtime's reason (magic, checksum, bounds...).
    pub fn new(raw: &[u8]) -> Result<Loaded, WebError> {
        let bytes = AlignedBytes::copy_from(raw);
        Model::from_bytes(bytes.as_slice()).map_err(WebError::BadFile)?;
        Ok(Loaded { bytes })
    }

    /// The model (validated in [`Loaded::new`]).
    ///
    /// Errors: none in practice (the same bytes validated before); the runtime's error
    /// otherwise.
    pub fn model(&self) -> Result<Model<'_>, WebError> {
        Model::from_bytes(self.bytes.as_slice()).map_err(WebError::BadFile)
    }
}

/// Class labels for a model with a `label` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    /// The model takes no label.
    None,
    /// The same label for every sample (`--label-value K`).
    All(i64),
    /// Sample `i` gets class `i % N` (`--label-cycle N`).
    Cycle(i64),
}

/// One sampling request (the page's controls; each field mirrors a `flowrt sample` flag).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// `--method`.
    pub method: Method,
    /// `--steps` (`None`: the file's default, else 1).
    pub steps: Option<usize>,
    /// `--seed`.
    pub seed: u64,
    /// `--num`.
    pub num: usize,
    /// `--label-value` / `--label-cycle`.
    pub labels: Labels,
    /// `--guidance W` (`None`: the file's default scale, else no guidance).
    pub guidance: Option<f32>,
    /// `--null-label K` (`None`: the file's default).
    pub null_label: Option<i64>,
    /// Record every step's state (`--trajectory`).
    pub trajectory: bool,
}

/// The result of [`sample`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// `num × state_dim` samples, row-major.
    pub samples: Vec<f32>,
    /// With [`Options::trajectory`]: the initial noise, then the state after every step
    /// (`states × num × state_dim`), as `flowrt sample --trajectory` writes it.
    pub trajectory: Vec<f32>,
    /// The number of states in [`Output::trajectory`] (0 without one).
    pub states: usize,
    /// Network evaluations (a guided evaluation of the doubled batch counts once).
    pub evaluations: usize,
}

/// Records the states the way the host API does (initial state pushed by the caller) when
/// its flag is set: (states, count, recording).
struct Recorder<'a>(&'a mut Vec<f32>, usize, bool);

impl StepObserver<CpuOps> for Recorder<'_> {
    fn on_step(
        &mut self,
        _: &mut CpuOps,
        _: usize,
        _: f32,
        x: &mut [f32],
    ) -> Result<(), flowrt::Error> {
        if self.2 {
            self.0.extend_from_slice(x);
            self.1 += 1;
        }
        Ok(())
    }
}

/// A zeroed `Vec<T>` of `n` elements.
///
/// Errors: [`WebError::Alloc`] when the memory is not there (a huge `num`).
fn zeroed<T: Clone + Default>(n: usize) -> Result<Vec<T>, WebError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| WebError::Alloc(n.saturating_mul(core::mem::size_of::<T>())))?;
    v.resize(n, T::default());
    Ok(v)
}

/// The labels of `batch` rows (checked against the model's classes), or `None` for a model
/// without a label input.
///
/// Errors: labels missing or given for a model without a label input, out of range.
fn resolve_labels(
    m: &Model<'_>,
    labels: Labels,
    batch: usize,
) -> Result<Option<Vec<i64>>, WebError> {
    let has = m.input_by_role(InputRole::Label).is_some();
    let v = match (has, labels) {
        (false, Labels::None) => return Ok(None),
        (false, _) => return bad("a label was given, but the model has no label input"),
        (true, Labels::None) => return bad("the model has a label input: choose a label"),
        (true, Labels::All(k)) => vec![k; batch],
        (true, Labels::Cycle(n)) if n < 1 => {
            return bad(format!("label cycle {n}: need at least 1"))
        }
        (true, Labels::Cycle(n)) => (0..batch as i64).map(|i| i % n).collect(),
    };
    if let Some(n) = m.label_classes() {
        if let Some(bad_label) = v.iter().find(|l| !(0..n as i64).contains(l)) {
            return bad(format!(
                "label {bad_label} is out of range: the model has {n} classes (0..{n})"
            ));
        }
    }
    Ok(Some(v))
}

/// Classifier-free guidance (the request's scale, else the file's) with the doubled labels
/// (conditional rows, then the null label), or `None`.
///
/// Errors: guidance without labels, a missing or out-of-range null label, a bad scale.
fn resolve_guidance(
    m: &Model<'_>,
    opts: &Options,
    labels: Option<&[i64]>,
) -> Result<Option<(Guidance, Vec<i64>)>, WebError> {
    let defaults = m.solver_defaults().unwrap_or_default().guidance;
    let Some(scale) = opts.guidance.or(defaults.scale) else {
        return Ok(None);
    };
    let g = Guidance {
        scale,
        interval: defaults.interval,
    };
    g.validate()
        .map_err(|e| WebError::Request(format!("guidance: {e}")))?;
    let Some(labels) = labels else {
        return bad("guidance is classifier-free guidance: the model needs a label input");
    };
    let Some(null) = opts.null_label.or(defaults.null_label.map(i64::from)) else {
        return bad("guidance on a label model needs a null label (the unconditional class)");
    };
    if let Some(n) = m.label_classes() {
        if !(0..n as i64).contains(&null) {
            return bad(format!(
                "null label {null} is out of range: the model has {n} classes (0..{n})"
            ));
        }
    }
    let mut doubled = labels.to_vec();
    doubled.extend(core::iter::repeat_n(null, labels.len()));
    Ok(Some((g, doubled)))
}

/// Draws `opts.num` samples from `m`: Philox noise from `opts.seed` ([`flowrt::rng`]),
/// integrated on the model's default grid (else uniform) with `opts.method`.
///
/// Errors: a multi-network file or a model with `cond` / embedded `guidance` inputs
/// (not supported by the page), a request that does not fit the model, zero samples or
/// steps, allocation failure, or the runtime's error.
pub fn sample(m: &Model<'_>, opts: &Options) -> Result<Output, WebError> {
    if m.pipeline().is_some() {
        return bad("multi-network files (blocks, refiner, decoder) are not supported here");
    }
    if m.cond_dim().is_some() || m.input_by_role(InputRole::Guidance).is_some() {
        return bad("models with a cond or embedded guidance input are not supported here");
    }
    let dim = m.state_dim();
    if opts.num == 0 {
        return bad("num must be at least 1");
    }
    let n = opts
        .num
        .checked_mul(dim)
        .ok_or_else(|| WebError::Request(format!("num {} is too large", opts.num)))?;
    let defaults = m.solver_defaults().unwrap_or_default();
    let steps = opts.steps.or(defaults.steps).unwrap_or(1);
    if steps == 0 || steps > flowrt::grid::MAX_GRID_STEPS {
        return bad(format!(
            "steps {steps}: need 1 to {}",
            flowrt::grid::MAX_GRID_STEPS
        ));
    }
    let axis = m.time_convention().axis;
    let grid = defaults
        .grid
        .unwrap_or(GridSpec::Uniform)
        .build(steps, axis)?;

    let labels = resolve_labels(m, opts.labels, opts.num)?;
    let guided = resolve_guidance(m, opts, labels.as_deref())?;
    let too_large = || WebError::Request(format!("num {} is too large", opts.num));
    let rows = if guided.is_some() {
        opts.num.checked_mul(2).ok_or_else(too_large)?
    } else {
        opts.num
    };

    let mut x = zeroed::<f32>(n)?;
    flowrt::rng::fill_normal(opts.seed, &mut x);

    let arena_bytes = m.required_arena_bytes(rows)?;
    let mut arena = AlignedBytes::try_zeroed(arena_bytes).ok_or(WebError::Alloc(arena_bytes))?;
    let mut net = CpuField::new(m, rows, arena.as_mut_slice())?;
    let wb = opts.method.work_buffers();
    let mut flat = zeroed::<f32>(n.checked_mul(wb).ok_or_else(too_large)?)?;
    let (mut x2, mut v2) = match guided {
        Some(_) => {
            let n2 = n.checked_mul(2).ok_or_else(too_large)?;
            (zeroed::<f32>(n2)?, zeroed::<f32>(n2)?)
        }
        None => (Vec::new(), Vec::new()),
    };
    let mut bufs = Buffers {
        work: Workspace::from_slice(&mut flat, n, wb)?,
        guided: guided.as_ref().map(|_| [&mut x2[..], &mut v2[..]]),
    };
    let req = flowrt::run::Request {
        method: opts.method,
        grid: &grid,
        tol: adaptive::Tolerances {
            rtol: 1e-7,
            atol: 1e-9,
            ..Default::default()
        },
        cond: Conditioning {
            label: labels.as_deref(),
            ..Conditioning::default()
        },
        guidance: guided.as_ref().map(|(g, doubled)| {
            (
                *g,
                Conditioning {
                    label: Some(&doubled[..]),
                    ..Conditioning::default()
                },
            )
        }),
    };
    let mut trajectory = Vec::new();
    let facts = Facts::of(m);
    // Off: records nothing (no trajectory asked for).
    let mut rec = Recorder(&mut trajectory, 0, opts.trajectory);
    if opts.trajectory {
        rec.0.extend_from_slice(&x);
        rec.1 = 1;
    }
    let stats = flowrt::run::run(
        &mut CpuOps,
        &mut net,
        &facts,
        &req,
        &mut x,
        &mut bufs,
        &mut rec,
    )?;
    let states = rec.1;
    Ok(Output {
        samples: x,
        trajectory,
        states,
        evaluations: stats.evaluations,
    })
}
