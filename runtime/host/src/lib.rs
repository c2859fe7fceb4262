//! `flowrt-host`: sampling `.frt` models from a Rust application on a host, the API the
//! `flowrt` command line is a thin layer over.
//!
//! ```
//! use flowrt_host::{Backend, Frt, Noise, Request};
//!
//! # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/moons_icfm.frt");
//! let frt = Frt::open(path)?; // read and validated once
//! let req = Request::default().steps(8).grid("shift:2")?; // overrides of the file's defaults
//! let out = frt.sample(Backend::Cpu, &req, Noise::Seed { seed: 0, num: 16 })?;
//! println!("{} samples of {:?} by {} on {}", out.rows(), out.row_shape, out.report.method, out.report.backend.name());
//! assert_eq!((out.rows(), out.report.steps), (16, 8));
//! // A class-conditional model takes labels and guidance the same way:
//! // Request::default().label_cycle(10).guidance(2.0).null_label(10)
//! # Ok::<(), flowrt_host::HostError>(())
//! ```
//!
//! * [`Frt`]: a validated `.frt` file held in memory.
//! * [`Request`]: what to run — solver, grid, conditioning, classifier-free guidance, SDE,
//!   trajectory — as typed overrides of the defaults baked into the file ([`plan`]).
//! * [`Backend`]: `cpu` (flowrt's executor), `ort` (ONNX Runtime, feature `ort`), `wgpu` /
//!   `cuda` (flowrt's cubecl kernels, features `wgpu`, `cuda`) or `auto` ([`select`]).
//! * [`Frt::sample`], [`Frt::invert`], [`Frt::rollout`]: run it; every failure is a
//!   [`HostError`] naming its cause, whichever backend it came from.
//!   [`Frt::sample_with_progress`], [`Frt::invert_with_progress`] and
//!   [`Frt::rollout_with_progress`] also report every step ([`Progress`]).

pub mod conditioning;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod parallel;
pub mod plan;
pub mod progress;
mod run;
pub mod sde;
pub mod select;

use std::fmt;
use std::path::{Path, PathBuf};

use flowrt::format::AlignedBytes;
use flowrt::Model;

pub use conditioning::{CondInputs, CondRequest, GuidanceRequest, Labels};
pub use plan::{GridChoice, Plan, SolverRequest};
pub use progress::Progress;
#[cfg(feature = "ort")]
pub use run::open_ort;
pub use run::{sample_row_shape, Inverted, Noise, Report, Request, Samples, Trajectory};
pub use sde::{ScoreKind, SdeRequest};

/// Every way a host call can fail, whichever backend it ran on.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A file could not be read.
    // The cause is in the message, not also a `source` (an error chain would print it twice).
    #[error("reading {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A `.frt` file that does not load (the runtime's validation error).
    #[error("{path}: {source}")]
    BadFile {
        /// The file (or `<memory>`).
        path: String,
        /// The runtime's reason.
        source: flowrt::Error,
    },
    /// A request that does not fit the model (a missing label, a bad grid, ...).
    #[error("{0}")]
    Request(String),
    /// A request the chosen backend cannot run (with the reason and what can).
    #[error("{0}")]
    Unsupported(String),
    /// The runtime refused or failed a computation (sizes, non-finite values, ...).
    // The cause is in the message, not also a `source` (an error chain would print it twice).
    #[error("sampling failed: {0}")]
    Flowrt(flowrt::Error),
    /// ONNX Runtime failed (missing library, bad model, a failed run).
    #[cfg(feature = "ort")]
    #[error("sampling failed: {0}")]
    Ort(flowrt_ort::OrtError),
    /// The GPU backend failed (no device, a launch, a read-back).
    #[cfg(feature = "gpu")]
    #[error("sampling failed: {0}")]
    Gpu(flowrt_cubecl::GpuError),
    /// Memory for a buffer of this many bytes could not be allocated.
    #[error("cannot allocate {0} bytes")]
    Alloc(usize),
}

impl From<flowrt::Error> for HostError {
    fn from(e: flowrt::Error) -> Self {
        HostError::Flowrt(e)
    }
}

#[cfg(feature = "ort")]
impl From<flowrt_ort::OrtError> for HostError {
    fn from(e: flowrt_ort::OrtError) -> Self {
        HostError::Ort(e)
    }
}

#[cfg(feature = "gpu")]
impl From<flowrt_cubecl::GpuError> for HostError {
    fn from(e: flowrt_cubecl::GpuError) -> Self {
        HostError::Gpu(e)
    }
}

impl HostError {
    /// A [`HostError::Request`] from anything printable.
    pub fn request(msg: impl fmt::Display) -> Self {
        HostError::Request(msg.to_string())
    }
}

/// Results of this crate.
pub type Result<T, E = HostError> = std::result::Result<T, E>;

/// A validated `.frt` file held in aligned memory; [`Frt::model`] borrows it.
pub struct Frt {
    bytes: AlignedBytes,
    name: String,
}

impl fmt::Debug for Frt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frt")
            .field("name", &self.name)
            .field("bytes", &self.bytes.as_slice().len())
            .finish()
    }
}

/// The largest `.frt` file [`Frt::open`] reads: 1 GiB (the format's u32 offsets would
/// allow 4 GiB, far beyond the models flowrt targets). A longer file, or a pipe or device
/// that delivers more (`/dev/zero`), is refused after at most this many bytes.
pub const MAX_FRT_BYTES: u64 = 1 << 30;

impl Frt {
    /// Reads (up to [`MAX_FRT_BYTES`]) and validates a `.frt` file.
    ///
    /// Errors: [`HostError::Io`] (unreadable), [`HostError::BadFile`] (the runtime's
    /// validation: magic, version, checksum, bounds, ...).
    pub fn open(path: impl AsRef<Path>) -> Result<Frt> {
        let path = path.as_ref();
        let raw =
            flowrt::io::read_capped(path, MAX_FRT_BYTES, "a .frt model").map_err(|error| {
                HostError::Io {
                    path: path.to_path_buf(),
                    error,
                }
            })?;
        Frt::from_vec(&raw, path.display().to_string())
    }

    /// Validates a `.frt` image already in memory; `name` is used in messages.
    ///
    /// Errors: [`HostError::BadFile`].
    pub fn from_vec(raw: &[u8], name: impl Into<String>) -> Result<Frt> {
        let name = name.into();
        let bytes = AlignedBytes::copy_from(raw);
        Model::from_bytes(bytes.as_slice()).map_err(|source| HostError::BadFile {
            path: name.clone(),
            source,
        })?;
        Ok(Frt { bytes, name })
    }

    /// The model (validated when the file was opened). Each call validates the bytes again
    /// (the runtime's only constructor), so hold the result rather than calling this per use.
    pub fn model(&self) -> Model<'_> {
        // Validated in `from_vec`; loading again cannot fail on the same bytes.
        Model::from_bytes(self.bytes.as_slice()).unwrap_or_else(|_| unreachable!())
    }

    /// The name given when opening (the path).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Where velocities are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// flowrt's own CPU executor (always available, bit-identical across CPUs).
    Cpu,
    /// ONNX Runtime, from the ONNX embedded in the `.frt` or [`Request::onnx`] (feature `ort`).
    Ort,
    /// flowrt's cubecl kernels through wgpu (feature `wgpu`).
    Wgpu,
    /// flowrt's cubecl kernels through CUDA (feature `cuda`).
    Cuda,
    /// A GPU when one is found and the model is large enough for it to win, else the CPU
    /// ([`select::choose`]).
    #[default]
    Auto,
}

impl Backend {
    /// Every backend, in the order the CLI lists them.
    pub const ALL: [Backend; 5] = [
        Backend::Cpu,
        Backend::Ort,
        Backend::Wgpu,
        Backend::Cuda,
        Backend::Auto,
    ];

    /// `"cpu"`, `"ort"`, `"wgpu"`, `"cuda"` or `"auto"`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Ort => "ort",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
            Backend::Auto => "auto",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = HostError;

    /// Parses a backend name.
    ///
    /// Errors: [`HostError::Request`] for an unknown name.
    fn from_str(s: &str) -> Result<Backend> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                HostError::request(format!(
                    "unknown backend `{s}` (expected cpu, ort, wgpu, cuda or auto)"
                ))
            })
    }
}
