//! `flowrt-ort`: flowrt's velocity field evaluated by ONNX Runtime.
//!
//! The ODE loop, the time grid and the noise stay flowrt's ([`flowrt::solver::integrate`]);
//! only the velocity evaluation `v(x, t)` goes through an `ort` session built from the
//! model's ONNX (embedded in the `.frt` with `flowrt export --embed-onnx`, or a file). Inputs
//! are fed by role exactly as [`flowrt::exec::CpuField`] does — `x` as is, `t` filled with the
//! time (one value, `[B]` or `[B, 1]` per the signature), `xt` rows `[x_row, t]` assembled,
//! and the conditioning of a [`Conditioning`]: `label` as the ONNX input's integer type
//! (int64, or int32 / float if the model declares that), `cond` and `guidance` as f32 —
//! so `--backend ort` differs from `--backend cpu` only in the kernels.
//!
//! ONNX Runtime is loaded at run time (`ort`'s `load-dynamic`): [`library_path`] looks at
//! `ORT_DYLIB_PATH`, then at a project-local `.venv-ort/` (from `scripts/test.sh`, or
//! `python3 -m venv .venv-ort && .venv-ort/bin/pip install onnxruntime==1.31.1`). Every
//! failure — no library, a library that does not load, a bad model, a failed run — is an
//! [`OrtError`], never a panic.

use std::borrow::Cow;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use flowrt::field::Conditioning;
use flowrt::format::InputRole;
use flowrt::grid::TimeGrid;
use flowrt::solver::{Method, Workspace};
use flowrt::{CpuOps, Model, VelocityField};
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{TensorElementType, TensorRef};

/// The ONNX Runtime version this crate is built for (`ort` 2.0.0-rc.15 pairs with 1.31).
pub const ORT_VERSION: &str = "1.31.1";

/// File name of the library inside the `onnxruntime` wheel.
pub const LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";

/// Everything that can go wrong on the ONNX Runtime path.
#[derive(Debug, Clone, PartialEq)]
pub enum OrtError {
    /// No ONNX Runtime library was found; the message says where flowrt looked and how to
    /// install one.
    LibraryNotFound(String),
    /// The library exists but could not be loaded or initialised.
    Load(String),
    /// ONNX Runtime rejected the model or failed while running it.
    Ort(String),
    /// The ONNX model's inputs / outputs do not match the `.frt` signature.
    Signature(String),
    /// An error from flowrt itself (solver, grid, sizes).
    Flowrt(flowrt::Error),
}

impl fmt::Display for OrtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrtError::LibraryNotFound(m) => write!(f, "flowrt-ort: {m}"),
            OrtError::Load(m) => write!(f, "flowrt-ort: cannot load ONNX Runtime: {m}"),
            OrtError::Ort(m) => write!(f, "flowrt-ort: ONNX Runtime error: {m}"),
            OrtError::Signature(m) => write!(f, "flowrt-ort: {m}"),
            OrtError::Flowrt(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OrtError {}

impl From<flowrt::Error> for OrtError {
    fn from(e: flowrt::Error) -> Self {
        OrtError::Flowrt(e)
    }
}

impl<R> From<ort::Error<R>> for OrtError {
    fn from(e: ort::Error<R>) -> Self {
        OrtError::Ort(e.to_string())
    }
}

/// The `onnxruntime` wheel's library inside a virtual environment `venv`, if present.
fn venv_library(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let entries = std::fs::read_dir(&lib).ok()?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| {
            e.path()
                .join("site-packages/onnxruntime/capi")
                .join(LIBRARY_FILE)
        })
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// Where the ONNX Runtime library is: `ORT_DYLIB_PATH` if set and not empty (it must then
/// exist), else
/// `.venv-ort/` in the current directory or one of its ancestors, else the `.venv-ort/` of
/// the flowrt checkout this crate was built from.
///
/// Errors: [`OrtError::LibraryNotFound`] with installation instructions.
pub fn library_path() -> Result<PathBuf, OrtError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(OrtError::LibraryNotFound(format!(
            "ORT_DYLIB_PATH={} does not exist (point it at the onnxruntime wheel's \
             onnxruntime/capi/{LIBRARY_FILE}, e.g. after pip install onnxruntime=={ORT_VERSION})",
            p.display()
        )));
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    // runtime/ort -> the workspace root.
    roots.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    for root in &roots {
        if let Some(p) = venv_library(&root.join(".venv-ort")) {
            return Ok(p);
        }
    }
    Err(OrtError::LibraryNotFound(format!(
        "ONNX Runtime library not found (set ORT_DYLIB_PATH or run scripts/test.sh / \
         python3 -m venv .venv-ort && .venv-ort/bin/pip install onnxruntime=={ORT_VERSION}; \
         ORT_DYLIB_PATH is the wheel's onnxruntime/capi/{LIBRARY_FILE})"
    )))
}

static ENV: OnceLock<Result<Environment, OrtError>> = OnceLock::new();

/// Loads ONNX Runtime from `path` and creates an environment, catching panics.
fn init_env(path: &Path) -> Result<Environment, OrtError> {
    if !path.is_file() {
        return Err(OrtError::LibraryNotFound(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let built = catch_unwind(AssertUnwindSafe(|| {
        let builder = ort::init_from(path).map_err(|e| OrtError::Load(e.to_string()))?;
        builder.build().map_err(|e| OrtError::Load(e.to_string()))
    }));
    match built {
        Ok(r) => r,
        Err(_) => Err(OrtError::Load(format!(
            "ONNX Runtime panicked while loading {}",
            path.display()
        ))),
    }
}

/// The process-wide ONNX Runtime environment (loaded once from [`library_path`]).
///
/// Errors: the library is missing or does not load. The result is cached: the library can
/// be loaded only once per process.
pub fn environment() -> Result<&'static Environment, OrtError> {
    ENV.get_or_init(|| init_env(&library_path()?))
        .as_ref()
        .map_err(Clone::clone)
}

/// Session settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrtOptions {
    /// Intra-op threads (1 = the same as flowrt's single-threaded CPU executor).
    pub intra_threads: usize,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions { intra_threads: 1 }
    }
}

/// An ONNX Runtime session for one model, with its inputs mapped to the `.frt` signature.
pub struct OrtSession {
    session: Session,
    /// ONNX input name for each `.frt` signature input, in signature order.
    input_names: Vec<String>,
    state_dim: usize,
    /// The `.frt` signature: (role, shape) in signature order.
    signature: Vec<(InputRole, flowrt::format::Shape)>,
    /// The `.frt` time convention (applied by [`sample`], not by raw evaluations).
    time: flowrt::time::TimeConvention,
    /// Element type the ONNX model declares for each signature input (label: int64, int32
    /// or float), in signature order.
    element_types: Vec<Option<TensorElementType>>,
    /// What conditioning is checked against, by the same rules as every backend.
    sig: flowrt::field::Signature,
    /// What a run of this model needs to know.
    facts: flowrt::run::Facts,
}

impl fmt::Debug for OrtSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrtSession")
            .field("inputs", &self.input_names)
            .field("state_dim", &self.state_dim)
            .finish()
    }
}

fn builder(opts: &OrtOptions) -> Result<ort::session::builder::SessionBuilder, OrtError> {
    let env = environment()?;
    let threads = opts.intra_threads.max(1);
    let b = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(threads)?
        .with_inter_threads(1)?;
    Ok(b)
}

impl OrtSession {
    /// A session from ONNX bytes with all weights inline (what `export --embed-onnx` stores).
    ///
    /// Errors: no library, ONNX Runtime rejects the bytes, or the inputs do not match.
    pub fn from_bytes(model: &Model<'_>, onnx: &[u8], opts: &OrtOptions) -> Result<Self, OrtError> {
        let session = catch_ort(|| builder(opts)?.commit_from_memory(onnx).map_err(Into::into))?;
        Self::bind(model, session)
    }

    /// A session from an ONNX file (external data is read next to it).
    ///
    /// Errors: as [`OrtSession::from_bytes`], or the file does not exist.
    pub fn from_file(model: &Model<'_>, onnx: &Path, opts: &OrtOptions) -> Result<Self, OrtError> {
        if !onnx.is_file() {
            return Err(OrtError::Ort(format!("{} does not exist", onnx.display())));
        }
        let session = catch_ort(|| builder(opts)?.commit_from_file(onnx).map_err(Into::into))?;
        Self::bind(model, session)
    }

    /// Maps the `.frt` signature inputs to the session's inputs: by tensor name when the
    /// `.frt` has names that all match, else by position.
    fn bind(model: &Model<'_>, session: Session) -> Result<Self, OrtError> {
        let ort_inputs: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        if ort_inputs.len() != model.input_count() {
            return Err(OrtError::Signature(format!(
                "the ONNX model has {} inputs ({}) but the .frt signature has {}",
                ort_inputs.len(),
                ort_inputs.join(", "),
                model.input_count()
            )));
        }
        if session.outputs().is_empty() {
            return Err(OrtError::Signature("the ONNX model has no output".into()));
        }
        let frt_names: Vec<Option<&str>> = model
            .inputs()
            .map(|i| model.tensor(i.tensor).and_then(|t| t.name))
            .collect();
        let by_name = frt_names
            .iter()
            .all(|n| n.is_some_and(|n| ort_inputs.iter().any(|o| o == n)));
        let input_names: Vec<String> = if by_name {
            frt_names
                .iter()
                .map(|n| n.unwrap_or_default().to_string())
                .collect()
        } else {
            ort_inputs
        };
        let element_types = input_names
            .iter()
            .map(|n| {
                session
                    .inputs()
                    .iter()
                    .find(|i| i.name() == n)
                    .and_then(|i| i.dtype().tensor_type())
            })
            .collect();
        Ok(OrtSession {
            time: model.time_convention(),
            session,
            input_names,
            state_dim: model.state_dim(),
            signature: model.inputs().map(|i| (i.role, i.shape)).collect(),
            element_types,
            sig: flowrt::field::Signature::of(model),
            facts: flowrt::run::Facts::of(model),
        })
    }

    /// ONNX input names in `.frt` signature order.
    pub fn input_names(&self) -> &[String] {
        &self.input_names
    }

    /// The time convention of the `.frt` the session was bound to.
    pub fn time_convention(&self) -> flowrt::time::TimeConvention {
        self.time
    }

    /// A velocity field for up to `batch` rows per evaluation driven by this session.
    ///
    /// Errors: batch size 0.
    pub fn field(&mut self, batch: usize) -> Result<OrtField<'_>, OrtError> {
        if batch == 0 {
            return Err(flowrt::Error::BadArgument {
                what: "batch size must be at least 1",
            }
            .into());
        }
        let mut bufs = Vec::with_capacity(self.signature.len());
        for ((role, _), ty) in self.signature.iter().zip(&self.element_types) {
            bufs.push(match (role, ty) {
                (InputRole::Label, Some(TensorElementType::Int64) | None) => Buf::I64(Vec::new()),
                (InputRole::Label, Some(TensorElementType::Int32)) => Buf::I32(Vec::new()),
                _ => Buf::F32(Vec::new()),
            });
        }
        Ok(OrtField {
            session: self,
            batch,
            bufs,
            error: None,
        })
    }

    /// Evaluates `v(x, t)` once for `batch = x.len() / state_dim` rows.
    ///
    /// Errors: sizes, or ONNX Runtime failing.
    pub fn eval(&mut self, t: f32, x: &[f32], v: &mut [f32]) -> Result<(), OrtError> {
        let batch = (x.len() / self.state_dim.max(1)).max(1);
        self.field(batch)?.eval_into(t, x, v)
    }
}

/// One input buffer of an [`OrtField`], in the element type the ONNX input declares.
enum Buf {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
}

/// Runs `f`, turning a panic inside `ort` into an [`OrtError::Ort`].
fn catch_ort<T>(f: impl FnOnce() -> Result<T, OrtError>) -> Result<T, OrtError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(OrtError::Ort("ONNX Runtime panicked".into())),
    }
}

/// The ONNX Runtime velocity field for one batch size: a [`VelocityField<CpuOps>`] that the
/// flowrt solvers drive. The detailed ONNX Runtime message of a failed evaluation is kept
/// and returned by [`OrtField::take_error`] (the solver itself only sees
/// [`flowrt::Error::Backend`]).
pub struct OrtField<'s> {
    session: &'s mut OrtSession,
    batch: usize,
    /// One buffer per signature input (`x` and `cond` use the caller's buffers instead).
    bufs: Vec<Buf>,
    error: Option<OrtError>,
}

impl OrtField<'_> {
    /// The batch size.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The error of the last failed evaluation, if any.
    pub fn take_error(&mut self) -> Option<OrtError> {
        self.error.take()
    }

    /// Writes `v(x, t)` into `v` for a model without conditioning: [`OrtField::eval_cond`]
    /// with [`Conditioning::default`].
    ///
    /// Errors: as [`OrtField::eval_cond`].
    pub fn eval_into(&mut self, t: f32, x: &[f32], v: &mut [f32]) -> Result<(), OrtError> {
        self.eval_cond(t, x, &Conditioning::default(), v)
    }

    /// Writes `v(x, t)` with conditioning into `v`, like
    /// [`flowrt::exec::CpuField::eval_cond`]: `x` and `v` hold the same whole number of rows,
    /// at most [`OrtField::batch`]; the conditioning is sized for those rows.
    ///
    /// Errors: the CPU field's errors for sizes, missing / extra conditioning, labels out of
    /// range and non-finite values (as [`OrtError::Flowrt`]), or ONNX Runtime failing /
    /// returning the wrong output size.
    pub fn eval_cond(
        &mut self,
        t: f32,
        x: &[f32],
        cond: &Conditioning<'_>,
        v: &mut [f32],
    ) -> Result<(), OrtError> {
        let d = self.session.state_dim;
        let rows = self
            .session
            .sig
            .check_eval(x.len(), v.len(), self.batch, cond)?;
        let mut dims_all: Vec<Vec<i64>> = Vec::with_capacity(self.bufs.len());
        for ((role, shape), buf) in self.session.signature.iter().zip(self.bufs.iter_mut()) {
            let dims = shape.concrete(rows);
            let len = dims.elements().ok_or(flowrt::Error::BadArgument {
                what: "batch size too large",
            })?;
            dims_all.push(dims.as_slice().iter().map(|d| *d as i64).collect());
            match (role, buf) {
                (InputRole::X | InputRole::Cond, _) => {}
                (InputRole::T, Buf::F32(b)) => {
                    b.clear();
                    b.resize(len, t);
                }
                (InputRole::Step, Buf::F32(b)) => {
                    let value = cond.step.ok_or(flowrt::Error::BadArgument {
                        what: "model needs a step input (a few-step model: sample it with \
                               the few-step sampler)",
                    })?;
                    b.clear();
                    b.resize(len, value);
                }
                (InputRole::Xt, Buf::F32(b)) => {
                    b.clear();
                    b.resize(len, 0.0);
                    for (row, xr) in b.chunks_exact_mut(d + 1).zip(x.chunks_exact(d)) {
                        if let Some((last, head)) = row.split_last_mut() {
                            head.copy_from_slice(xr);
                            *last = t;
                        }
                    }
                }
                // Checked by `Signature::check`: rows finite values (all equal without a batch
                // dim), and rows labels in range (so exact in i32 and f32).
                (InputRole::Guidance, Buf::F32(b)) => {
                    let g = cond.guidance.unwrap_or_default();
                    b.clear();
                    if shape.has_batch() {
                        b.extend_from_slice(g);
                    } else {
                        b.resize(len, g.first().copied().unwrap_or(0.0));
                    }
                }
                (InputRole::Label, buf) => {
                    let l = cond.label.unwrap_or_default();
                    match buf {
                        Buf::I64(b) => {
                            b.clear();
                            b.extend_from_slice(l);
                        }
                        // In range of 2^24 (checked above), so exact in i32 and f32.
                        Buf::I32(b) => {
                            b.clear();
                            b.extend(l.iter().map(|v| *v as i32));
                        }
                        Buf::F32(b) => {
                            b.clear();
                            b.extend(l.iter().map(|v| *v as f32));
                        }
                    }
                }
                _ => {
                    return Err(OrtError::Signature(format!(
                        "the ONNX input for role `{}` has an unsupported element type",
                        role.name()
                    )))
                }
            }
        }
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(self.bufs.len());
        for ((((role, _), buf), name), dims) in self
            .session
            .signature
            .iter()
            .zip(self.bufs.iter())
            .zip(&self.session.input_names)
            .zip(&dims_all)
        {
            let value: SessionInputValue<'_> = match (role, buf) {
                (InputRole::X, _) => TensorRef::from_array_view((dims.as_slice(), x))?.into(),
                // Checked by `Signature::check`.
                (InputRole::Cond, _) => {
                    let c = cond.cond.unwrap_or_default();
                    TensorRef::from_array_view((dims.as_slice(), c))?.into()
                }
                (_, Buf::F32(b)) => TensorRef::from_array_view((dims.as_slice(), &b[..]))?.into(),
                (_, Buf::I64(b)) => TensorRef::from_array_view((dims.as_slice(), &b[..]))?.into(),
                (_, Buf::I32(b)) => TensorRef::from_array_view((dims.as_slice(), &b[..]))?.into(),
            };
            inputs.push((Cow::Borrowed(name.as_str()), value));
        }
        let outputs = self.session.session.run(inputs)?;
        let (_, out) = outputs[0].try_extract_tensor::<f32>()?;
        if out.len() != v.len() {
            return Err(OrtError::Signature(format!(
                "ONNX Runtime returned {} values for a velocity of {} (batch {rows} x state dim {d})",
                out.len(),
                v.len(),
            )));
        }
        v.copy_from_slice(out);
        Ok(())
    }

    /// The [`VelocityField::eval`] body with conditioning: ORT failures are kept for
    /// [`OrtField::take_error`].
    fn eval_field(
        &mut self,
        t: f32,
        x: &[f32],
        cond: &Conditioning<'_>,
        v: &mut [f32],
    ) -> Result<(), flowrt::Error> {
        match catch_ort(|| self.eval_cond(t, x, cond, v)) {
            Ok(()) => Ok(()),
            Err(OrtError::Flowrt(e)) => Err(e),
            Err(e) => {
                self.error = Some(e);
                Err(flowrt::Error::Backend {
                    what: "ONNX Runtime evaluation failed",
                })
            }
        }
    }
}

impl VelocityField<CpuOps> for OrtField<'_> {
    fn eval(
        &mut self,
        _ops: &mut CpuOps,
        t: f32,
        x: &[f32],
        v: &mut [f32],
    ) -> Result<(), flowrt::Error> {
        self.eval_field(t, x, &Conditioning::default(), v)
    }
}

impl flowrt::field::ConditionalField<CpuOps> for OrtField<'_> {
    fn eval_cond(
        &mut self,
        _: &mut CpuOps,
        t: f32,
        x: &[f32],
        cond: &Conditioning<'_>,
        v: &mut [f32],
    ) -> Result<(), flowrt::Error> {
        self.eval_field(t, x, cond, v)
    }
}

/// Integrates `x` (noise in, samples out; `batch * state_dim` values) along `grid` with
/// `method`, evaluating the velocity with ONNX Runtime — the same loop as
/// [`flowrt::sampler::sample`].
///
/// Errors: sizes, solver configuration, non-finite values, or ONNX Runtime failing (with its
/// message).
pub fn sample(
    session: &mut OrtSession,
    method: Method,
    grid: &dyn TimeGrid,
    x: &mut [f32],
) -> Result<(), OrtError> {
    sample_cond(session, method, grid, x, &Conditioning::default())
}

/// [`sample`] with conditioning fixed over the whole integration — the same loop as
/// [`flowrt::sampler::sample_cond`].
///
/// Errors: as [`sample`], plus those of [`OrtField::eval_cond`].
pub fn sample_cond(
    session: &mut OrtSession,
    method: Method,
    grid: &dyn TimeGrid,
    x: &mut [f32],
    cond: &Conditioning<'_>,
) -> Result<(), OrtError> {
    let dim = session.state_dim;
    if x.is_empty() || dim == 0 || !x.len().is_multiple_of(dim) {
        return Err(flowrt::Error::ShapeMismatch {
            what: "state (a whole number of rows of state_dim values)",
            expected: dim,
            found: x.len(),
        }
        .into());
    }
    let batch = x.len() / dim;
    let mut flat = vec![0f32; x.len() * method.work_buffers()];
    let work = Workspace::from_slice(&mut flat, x.len(), method.work_buffers())?;
    let facts = session.facts;
    let mut field = session.field(batch)?;
    let req = flowrt::run::Request {
        method,
        grid,
        tol: Default::default(),
        cond: *cond,
        guidance: None,
    };
    let mut bufs = flowrt::run::Buffers { work, guided: None };
    let r = flowrt::run::run(
        &mut CpuOps,
        &mut field,
        &facts,
        &req,
        x,
        &mut bufs,
        &mut flowrt::solver::NoObserver,
    );
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(field.take_error().unwrap_or(OrtError::Flowrt(e))),
    }
}
