//! `--backend auto`: which backend samples a model fastest here, and why — one function,
//! [`choose`], for the CLI and for Rust applications alike.
//!
//! The rule: a hardware GPU (CUDA first, then a wgpu adapter that is not a software
//! rasterizer) when the model's work per network evaluation — multiply-adds of its Dense,
//! MatMul and Conv nodes at the requested batch — is at least [`GPU_MIN_MACS`]; otherwise
//! flowrt's CPU executor. Below that size a step costs less on one CPU core than the ~10 µs
//! launch latency of each of the step's kernels. The CPU executor runs every op a `.frt`
//! can hold, so `auto` never needs ONNX Runtime (`--backend ort` stays available).
//! Software Vulkan (lavapipe) is never chosen: it runs the kernels on the same CPU cores,
//! slower than the CPU executor.

use flowrt::format::NodeOp;
use flowrt::Model;

use crate::{DeviceInfo, GpuBackend, GpuError};

/// Multiply-adds per network evaluation from which a hardware GPU is chosen.
pub const GPU_MIN_MACS: u64 = 1 << 24;

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

#[allow(unused_mut)] // with neither GPU feature the list stays empty
fn probe_order() -> Vec<(GpuBackend, Probe)> {
    let mut v: Vec<(GpuBackend, Probe)> = Vec::new();
    #[cfg(feature = "cuda")]
    v.push((GpuBackend::Cuda, || {
        crate::Gpu::cuda().map(|g| g.info().clone())
    }));
    #[cfg(feature = "wgpu")]
    v.push((GpuBackend::Wgpu, || {
        crate::Gpu::wgpu().map(|g| g.info().clone())
    }));
    v
}

/// Picks the backend for sampling `model` at `batch` rows per evaluation (see the module
/// docs); GPUs are probed only for a model large enough, and a missing GPU is not an error,
/// it is a reason.
pub fn choose(model: &Model<'_>, batch: usize) -> Selection {
    let macs = macs_per_eval(model, batch);
    if macs < GPU_MIN_MACS {
        return Selection {
            backend: Chosen::Cpu,
            device: None,
            macs_per_eval: macs,
            reason: format!(
                "the model does {macs} multiply-adds per evaluation at batch {batch} (< \
                 {GPU_MIN_MACS}): kernel launch latency would dominate on any GPU, so the CPU \
                 executor, without probing for one"
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
                if macs >= GPU_MIN_MACS {
                    return Selection {
                        backend: Chosen::Gpu(backend),
                        reason: format!(
                            "{} GPU {} found and the model does {} multiply-adds per \
                             evaluation at batch {batch} (>= {GPU_MIN_MACS}, where kernels \
                             outweigh launch latency)",
                            backend.name(),
                            info.name,
                            macs
                        ),
                        device: Some(info),
                        macs_per_eval: macs,
                    };
                }
                return Selection {
                    backend: Chosen::Cpu,
                    reason: format!(
                        "{} GPU {} found, but the model does only {} multiply-adds per \
                         evaluation at batch {batch} (< {GPU_MIN_MACS}): launch latency would \
                         dominate, the CPU executor is faster",
                        backend.name(),
                        info.name,
                        macs
                    ),
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
        reason: format!("{why}: the CPU executor"),
        device: found,
        macs_per_eval: macs,
    }
}
