//! [`crate::Backend::Auto`]: which backend samples a model fastest here, and why — one
//! function, [`choose`], for the CLI and for Rust applications alike.
//!
//! The rule is a cost model of one network evaluation at the requested batch:
//! * CPU: `macs / CPU_MACS_PER_S` — flowrt's single-threaded executor, whose throughput
//!   ([`CPU_MACS_PER_S`]) is measured on this project's benchmark machine
//!   (`docs/benchmarks.md`: 23–35 G multiply-adds/s on the MLP fixtures at 4,096 rows);
//! * GPU: `launches · GPU_LAUNCH_S + macs / GPU_MACS_PER_S`, with one launch per graph node
//!   plus the input fill and the stage combination (an upper bound: fusion removes some).
//!
//! A hardware GPU (CUDA first, then a wgpu adapter that is not a software rasterizer) is
//! chosen when its estimate is at most half the CPU's ([`GPU_MARGIN`]: the estimate leaves
//! out uploads and the finite checks); otherwise flowrt's CPU executor. The GPU constants
//! are typical figures for a current NVIDIA part, **not yet measured with flowrt**
//! (`scripts/bench-gpu.sh` does that). GPUs are probed only when the model is large enough
//! for one to win. `multiply-adds` are those of Dense, MatMul and Conv nodes.
//!
//! The CPU executor runs every op a `.frt` can hold, so `auto` never needs ONNX Runtime
//! (`--backend ort` stays available). Software Vulkan (lavapipe) is never chosen: it runs
//! the kernels on the same CPU cores, slower than the CPU executor.

use flowrt::format::NodeOp;
use flowrt::Model;

#[cfg(feature = "gpu")]
use flowrt_cubecl::{DeviceInfo, GpuBackend, GpuError};

/// Stand-ins for the GPU crate's types when this build has no GPU backend.
#[cfg(not(feature = "gpu"))]
mod no_gpu {
    /// A GPU backend (none in this build).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum GpuBackend {}
    impl GpuBackend {
        /// Never called: there is no value.
        pub fn name(self) -> &'static str {
            match self {}
        }
    }
    /// A probed device (none in this build).
    #[derive(Debug, Clone, PartialEq)]
    pub struct DeviceInfo {
        /// The device name.
        pub name: String,
        /// A software rasterizer.
        pub software: bool,
    }
    /// A probe failure (none in this build).
    pub type GpuError = String;
}
#[cfg(not(feature = "gpu"))]
use no_gpu::GpuError;
#[cfg(not(feature = "gpu"))]
pub use no_gpu::{DeviceInfo, GpuBackend};

/// flowrt's CPU executor: multiply-adds per second on one core (measured, see the module
/// docs).
pub const CPU_MACS_PER_S: f64 = 2.5e10;
/// Seconds per kernel launch on a GPU (typical CUDA launch-to-completion of a small kernel).
pub const GPU_LAUNCH_S: f64 = 5e-6;
/// Multiply-adds per second of flowrt's fp32 GEMM on a data-centre GPU (an estimate: ~30 %
/// of an H100's fp32 peak).
pub const GPU_MACS_PER_S: f64 = 1e13;
/// The GPU must be estimated this many times faster than the CPU to be chosen.
pub const GPU_MARGIN: f64 = 2.0;

/// Estimated seconds of one evaluation of `rows` rows: `(cpu, gpu)` (see the module docs).
pub fn estimate(model: &Model<'_>, rows: usize) -> (f64, f64) {
    let macs = macs_per_eval(model, rows) as f64;
    let launches = model.node_count() as f64 + 2.0;
    (
        macs / CPU_MACS_PER_S,
        launches * GPU_LAUNCH_S + macs / GPU_MACS_PER_S,
    )
}

/// A backend [`choose`] can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chosen {
    /// flowrt's CPU executor.
    Cpu,
    /// A GPU through this crate.
    Gpu(GpuBackend),
}

impl Chosen {
    /// `"cpu"`, `"wgpu"` or `"cuda"`.
    pub fn name(self) -> &'static str {
        match self {
            Chosen::Cpu => "cpu",
            Chosen::Gpu(b) => b.name(),
        }
    }
}

/// The outcome of [`choose`]: the backend, the probed device, and the reason in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// The chosen backend.
    pub backend: Chosen,
    /// The GPU that was found (also when the CPU was chosen over it).
    pub device: Option<DeviceInfo>,
    /// Multiply-adds per network evaluation at the requested batch.
    pub macs_per_eval: u64,
    /// Why, in one sentence (printed by `flowrt sample -v`).
    pub reason: String,
}

/// Multiply-adds of one network evaluation of `rows` rows (Dense, MatMul and Conv nodes;
/// element-wise work is not counted).
pub fn macs_per_eval(model: &Model<'_>, rows: usize) -> u64 {
    let dims = |t: u32| {
        model
            .tensor(t)
            .map(|i| i.shape.concrete(rows).as_slice().to_vec())
            .unwrap_or_default()
    };
    let prod = |d: &[usize]| d.iter().map(|v| *v as u64).product::<u64>();
    let mut total = 0u64;
    for node in model.nodes() {
        let ins: Vec<u32> = node.inputs().collect();
        let out = dims(node.output);
        let macs = match node.op {
            NodeOp::Dense | NodeOp::MatMul => {
                let a = ins.first().map(|t| dims(*t)).unwrap_or_default();
                let k = a.last().copied().unwrap_or(0) as u64;
                prod(&out).saturating_mul(k)
            }
            NodeOp::Conv { .. } | NodeOp::ConvTranspose { .. } => {
                let w = ins.get(1).map(|t| dims(*t)).unwrap_or_default();
                let m = out.get(1).copied().unwrap_or(1).max(1) as u64;
                // Kernel elements per output element: |w| / M.
                prod(&out).saturating_mul(prod(&w) / m)
            }
            _ => 0,
        };
        total = total.saturating_add(macs);
    }
    total
}

/// The GPU backends that can be probed, in preference order, with how to probe them.
/// How one backend's device is probed.
type Probe = fn() -> Result<DeviceInfo, GpuError>;

// With neither GPU feature the list stays empty; the pushes depend on the features.
#[allow(unused_mut, clippy::vec_init_then_push)]
fn probe_order() -> Vec<(GpuBackend, Probe)> {
    let mut v: Vec<(GpuBackend, Probe)> = Vec::new();
    // The probes start no device that will not be used (a started device keeps a polling
    // thread for the rest of the process).
    #[cfg(feature = "cuda")]
    v.push((GpuBackend::Cuda, flowrt_cubecl::probe_cuda));
    #[cfg(feature = "wgpu")]
    v.push((GpuBackend::Wgpu, flowrt_cubecl::probe_wgpu));
    v
}

/// Picks the backend for sampling `model` at `batch` rows per evaluation (see the module
/// docs); GPUs are probed only for a model large enough, and a missing GPU is not an error,
/// it is a reason.
pub fn choose(model: &Model<'_>, batch: usize) -> Selection {
    let macs = macs_per_eval(model, batch);
    let (cpu_s, gpu_s) = estimate(model, batch);
    let us = |s: f64| s * 1e6;
    let costs = format!(
        "{macs} multiply-adds per evaluation at batch {batch}: about {:.1} µs on the CPU \
         executor, {:.1} µs on a GPU ({} launches)",
        us(cpu_s),
        us(gpu_s),
        model.node_count() + 2
    );
    if gpu_s * GPU_MARGIN > cpu_s {
        return Selection {
            backend: Chosen::Cpu,
            device: None,
            macs_per_eval: macs,
            reason: format!(
                "{costs}: launch latency would dominate on any GPU, so the CPU executor, \
                 without probing for one"
            ),
        };
    }
    let mut missing: Vec<String> = Vec::new();
    let mut found: Option<DeviceInfo> = None;
    for (backend, probe) in probe_order() {
        match probe() {
            Ok(info) if info.software => {
                missing.push(format!(
                    "{}: only the software rasterizer {} (runs on the CPU)",
                    backend.name(),
                    info.name
                ));
                found.get_or_insert(info);
            }
            Ok(info) => {
                return Selection {
                    backend: Chosen::Gpu(backend),
                    reason: format!("{} GPU {} found; {costs}", backend.name(), info.name),
                    device: Some(info),
                    macs_per_eval: macs,
                };
            }
            Err(e) => missing.push(e.to_string()),
        }
    }
    let why = if missing.is_empty() {
        "this build has no GPU backend".to_string()
    } else {
        format!("no hardware GPU ({})", missing.join("; "))
    };
    Selection {
        backend: Chosen::Cpu,
        reason: format!("{why}; {costs}: the CPU executor"),
        device: found,
        macs_per_eval: macs,
    }
}
