//! `flowrt-cubecl`: flowrt's GPU backend. Every graph op of a `.frt` runs as a cubecl kernel
//! (one source for wgpu — Vulkan / Metal / DX12, lavapipe in CI — and CUDA), and the
//! solver's state operations ([`flowrt::StateOps`]) are kernels too, so the runtime's
//! solvers, grids, time conventions and guidance drive the device **unchanged** and the whole
//! ODE loop stays on it: the noise is uploaded once, every stage and update runs there, and
//! the samples are read back once (plus one finite check at each end).
//!
//! * [`Gpu`]: a device client ([`Gpu::wgpu`], [`Gpu::cuda`]; a missing device is a
//!   [`GpuError::NoDevice`] naming the backend and what was looked for, never a panic).
//! * [`GpuOps`]: [`flowrt::StateOps`] on [`GpuBuf`] device buffers.
//! * [`GpuField`]: the model as a [`flowrt::field::ConditionalField`] on the device (inputs fed by role
//!   as the CPU executor does; guidance and the few-step rule are the runtime's own).
//! * [`sample`]: noise in, samples out, one call ([`sample::sample`]).

pub mod field;
pub mod graph;
pub mod kernels;
pub mod sample;
pub mod state;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use cubecl::prelude::*;
use cubecl::server::Handle;

/// The cubecl version this crate is built on (for `Runtime` bounds in dependents).
pub use cubecl;
pub use field::GpuField;
pub use state::{GpuBuf, GpuOps};

/// Everything that can go wrong on the GPU path.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuError {
    /// No device for the backend: `backend` is `"wgpu"` or `"cuda"`, `looked_for` says
    /// what was searched and how to get one.
    NoDevice {
        /// The backend asked for.
        backend: &'static str,
        /// What was looked for, and why it was not found.
        looked_for: String,
    },
    /// The device failed (a launch, a read-back).
    Device(String),
    /// A model or request this backend cannot run, with the reason.
    Unsupported(String),
    /// An error of flowrt itself (solver, grid, sizes, non-finite values).
    Flowrt(flowrt::Error),
}

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuError::NoDevice {
                backend,
                looked_for,
            } => write!(f, "no {backend} device: {looked_for}"),
            GpuError::Device(m) => write!(f, "GPU error: {m}"),
            GpuError::Unsupported(m) => write!(f, "not supported on the GPU backend: {m}"),
            GpuError::Flowrt(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for GpuError {}

impl From<flowrt::Error> for GpuError {
    fn from(e: flowrt::Error) -> Self {
        GpuError::Flowrt(e)
    }
}

/// The GPU backends this crate was built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GpuBackend {
    /// wgpu: any Vulkan / Metal / DX12 adapter (feature `wgpu`).
    Wgpu,
    /// CUDA: NVIDIA GPUs (feature `cuda`).
    Cuda,
}

impl GpuBackend {
    /// `"wgpu"` or `"cuda"`.
    pub fn name(self) -> &'static str {
        match self {
            GpuBackend::Wgpu => "wgpu",
            GpuBackend::Cuda => "cuda",
        }
    }
}

/// What a probed device is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The backend.
    pub backend: GpuBackend,
    /// The adapter's name (e.g. `"NVIDIA H200"`, `"llvmpipe (LLVM 15.0.6, 256 bits)"`).
    pub name: String,
    /// `true` for a software rasterizer running on the CPU (lavapipe / llvmpipe, SwiftShader,
    /// WARP): correct, but never faster than flowrt's CPU executor.
    pub software: bool,
}

/// A device client: uploads, buffers, launches (counted) and read-backs.
pub struct Gpu<R: Runtime> {
    pub(crate) client: ComputeClient<R>,
    /// Kernel launches made through this client so far.
    pub(crate) launches: u64,
    info: DeviceInfo,
}

impl<R: Runtime> fmt::Debug for Gpu<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu")
            .field("info", &self.info)
            .field("launches", &self.launches)
            .finish()
    }
}

impl<R: Runtime> Gpu<R> {
    /// What the device is.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Kernel launches made so far (every graph op, state operation and input fill).
    pub fn launches(&self) -> u64 {
        self.launches
    }

    /// Uploads f32 values.
    pub fn upload(&self, data: &[f32]) -> Handle {
        if data.is_empty() {
            return self.client.create_from_slice(f32::as_bytes(&[0.0]));
        }
        self.client.create_from_slice(f32::as_bytes(data))
    }

    pub(crate) fn upload_u32(&self, data: &[u32]) -> Handle {
        self.client.create_from_slice(u32::as_bytes(data))
    }

    /// A new uninitialised buffer of `len` f32 values.
    pub fn empty(&self, len: usize) -> Handle {
        self.client.empty(len.max(1) * 4)
    }

    /// Reads `len` f32 values back (waits for every queued launch).
    ///
    /// Errors: [`GpuError::Device`] when the device fails.
    pub fn read(&self, h: &Handle, len: usize) -> Result<Vec<f32>, GpuError> {
        let bytes = self
            .client
            .read_one(h.clone())
            .map_err(|e| GpuError::Device(format!("read-back failed: {e:?}")))?;
        let v = f32::from_bytes(&bytes);
        v.get(..len)
            .map(<[f32]>::to_vec)
            .ok_or(GpuError::Device("read-back returned too few values".into()))
    }

    pub(crate) fn read_u32(&self, h: &Handle) -> Result<u32, GpuError> {
        let bytes = self
            .client
            .read_one(h.clone())
            .map_err(|e| GpuError::Device(format!("read-back failed: {e:?}")))?;
        u32::from_bytes(&bytes)
            .first()
            .copied()
            .ok_or(GpuError::Device("read-back returned no value".into()))
    }

    /// Waits until every queued launch has finished.
    ///
    /// Errors: [`GpuError::Device`] when the device reports a failure.
    pub fn sync(&self) -> Result<(), GpuError> {
        cubecl::future::block_on(self.client.sync())
            .map_err(|e| GpuError::Device(format!("device failed: {e:?}")))
    }
}

/// The message of a caught panic, first line only.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let msg = p
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| p.downcast_ref::<&str>().copied())
        .unwrap_or("the runtime panicked");
    msg.lines().next().unwrap_or(msg).to_string()
}

/// Runs `f`, turning a panic inside the device runtime (a kernel that does not compile for
/// the device, a lost device) into [`GpuError::Device`]: the GPU path returns errors, it
/// does not unwind into the caller.
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T, GpuError>) -> Result<T, GpuError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(GpuError::Device(format!(
            "the GPU runtime panicked: {}",
            panic_message(p.as_ref())
        )))
    })
}

/// Runs `f`, turning a panic inside the device runtime into [`GpuError::NoDevice`].
#[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(dead_code))]
fn probe<T>(backend: GpuBackend, looked_for: &str, f: impl FnOnce() -> T) -> Result<T, GpuError> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    r.map_err(|p| GpuError::NoDevice {
        backend: backend.name(),
        looked_for: format!("{looked_for} ({})", panic_message(p.as_ref())),
    })
}

/// What the wgpu probes look for, in their "no device" errors.
#[cfg(feature = "wgpu")]
const WGPU_LOOKED_FOR: &str = "looked for a Vulkan, Metal or DX12 adapter through wgpu; on \
                               Linux without a GPU install Mesa's software Vulkan driver \
                               (apt-get install mesa-vulkan-drivers libvulkan1)";

#[cfg(feature = "wgpu")]
impl Gpu<cubecl::wgpu::WgpuRuntime> {
    /// The default wgpu adapter (the most powerful one; `CUBECL_WGPU_DEFAULT_DEVICE` picks
    /// another), with its name and whether it is a software rasterizer.
    ///
    /// Errors: [`GpuError::NoDevice`] when no Vulkan / Metal / DX12 adapter exists (for
    /// software Vulkan on Linux: `apt-get install mesa-vulkan-drivers libvulkan1`).
    pub fn wgpu() -> Result<Self, GpuError> {
        use cubecl::wgpu::{init_setup, AutoGraphicsApi, WgpuDevice, WgpuRuntime};
        static SETUP: std::sync::OnceLock<Result<DeviceInfo, GpuError>> =
            std::sync::OnceLock::new();
        let looked_for = WGPU_LOOKED_FOR;
        let info = SETUP
            .get_or_init(|| {
                probe(GpuBackend::Wgpu, looked_for, || {
                    let setup = init_setup::<AutoGraphicsApi>(
                        &WgpuDevice::DefaultDevice,
                        Default::default(),
                    );
                    let a = setup.adapter.get_info();
                    let software = format!("{:?}", a.device_type) == "Cpu"
                        || a.name.contains("llvmpipe")
                        || a.name.contains("SwiftShader");
                    DeviceInfo {
                        backend: GpuBackend::Wgpu,
                        name: a.name,
                        software,
                    }
                })
            })
            .clone()?;
        let client = WgpuRuntime::client(&WgpuDevice::DefaultDevice);
        Ok(Gpu {
            client,
            launches: 0,
            info,
        })
    }
}

#[cfg(feature = "cuda")]
impl Gpu<cubecl::cuda::CudaRuntime> {
    /// CUDA device 0.
    ///
    /// Errors: [`GpuError::NoDevice`] when the CUDA driver (`libcuda.so`) or a device is
    /// missing.
    pub fn cuda() -> Result<Self, GpuError> {
        use cubecl::cuda::{CudaDevice, CudaRuntime};
        static SETUP: std::sync::OnceLock<Result<String, GpuError>> = std::sync::OnceLock::new();
        let looked_for = "looked for CUDA device 0 through the driver library libcuda.so \
                          (an NVIDIA GPU with its driver) and NVRTC (libnvrtc.so, e.g. from the \
                          nvidia-cuda-nvrtc pip package, on LD_LIBRARY_PATH)";
        let name = SETUP
            .get_or_init(|| {
                probe(GpuBackend::Cuda, looked_for, || {
                    let client = CudaRuntime::client(&CudaDevice::new(0));
                    let sms = client.properties().hardware.num_streaming_multiprocessors;
                    cuda_device_name().unwrap_or_else(|| match sms {
                        Some(n) => format!("CUDA device 0 ({n} SMs)"),
                        None => "CUDA device 0".into(),
                    })
                })
                .map_err(|e| match find_libcuda() {
                    // The runtime's own panic says little then: name the missing library.
                    Err(searched) => GpuError::NoDevice {
                        backend: "cuda",
                        looked_for: format!(
                            "the CUDA driver library libcuda.so (installed with the NVIDIA \
                             driver) is not in {searched}, and CUDA device 0 did not start"
                        ),
                    },
                    Ok(_) => e,
                })
            })
            .clone()?;
        let client = CudaRuntime::client(&CudaDevice::new(0));
        Ok(Gpu {
            client,
            launches: 0,
            info: DeviceInfo {
                backend: GpuBackend::Cuda,
                name,
                software: false,
            },
        })
    }
}

/// What [`Gpu::cuda`] would find, without starting a device where none can start: when the
/// CUDA driver library is missing this returns its error at once (starting a CUDA client
/// spawns cubecl's device thread, which then polls for work for the rest of the process,
/// taking CPU time from a CPU run that follows the probe).
///
/// Errors: [`GpuError::NoDevice`] as [`Gpu::cuda`].
#[cfg(feature = "cuda")]
pub fn probe_cuda() -> Result<DeviceInfo, GpuError> {
    if let Err(searched) = find_libcuda() {
        return Err(GpuError::NoDevice {
            backend: "cuda",
            looked_for: format!(
                "the CUDA driver library libcuda.so (installed with the NVIDIA driver) is not \
                 in {searched}"
            ),
        });
    }
    Gpu::cuda().map(|g| g.info().clone())
}

/// What [`Gpu::wgpu`] would find, without starting a device when every adapter is a
/// software rasterizer (lavapipe / llvmpipe): the adapters are listed first, and a device
/// (with cubecl's polling device thread and the driver's worker threads) is started only
/// when a hardware adapter exists. For software-only machines the returned info names the
/// adapter kind, not the adapter, and has `software: true`.
///
/// Errors: [`GpuError::NoDevice`] when wgpu finds no adapter.
#[cfg(feature = "wgpu")]
pub fn probe_wgpu() -> Result<DeviceInfo, GpuError> {
    use cubecl::wgpu::{AutoGraphicsApi, GraphicsApi, WgpuRuntime};
    let listed = probe(
        GpuBackend::Wgpu,
        "listed the Vulkan, Metal or DX12 adapters through wgpu",
        || {
            let backend = AutoGraphicsApi::backend();
            <WgpuRuntime as Runtime>::enumerate_all_devices(&backend)
        },
    )?;
    // cubecl's device kinds: 0 discrete, 1 integrated, 2 virtual, 3 CPU, 4 other.
    let hardware = listed.iter().any(|d| d.type_id <= 2);
    if listed.is_empty() {
        return Err(GpuError::NoDevice {
            backend: GpuBackend::Wgpu.name(),
            looked_for: WGPU_LOOKED_FOR.into(),
        });
    }
    if !hardware && std::env::var_os("CUBECL_WGPU_DEFAULT_DEVICE").is_none() {
        return Ok(DeviceInfo {
            backend: GpuBackend::Wgpu,
            name: "(wgpu device type Cpu, not started)".into(),
            software: true,
        });
    }
    Gpu::wgpu().map(|g| g.info().clone())
}

/// Where NVIDIA's installers put `libcuda.so`.
#[cfg(feature = "cuda")]
const SYSTEM_DIRS: [&str; 7] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/cuda/lib64",
    "/usr/local/cuda/compat",
    "/usr/lib/wsl/lib",
];

/// Finds the CUDA driver library (`libcuda.so*`) where the dynamic loader looks for it:
/// `LD_LIBRARY_PATH`, then the usual system folders. Returns the searched folders when absent.
#[cfg(feature = "cuda")]
fn find_libcuda() -> Result<std::path::PathBuf, String> {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    for d in SYSTEM_DIRS {
        dirs.push(d.into());
    }
    for d in &dirs {
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("libcuda.so") {
                    return Ok(e.path());
                }
            }
        }
    }
    Err(format!(
        "LD_LIBRARY_PATH or {}",
        dirs.iter()
            .skip(dirs.len() - SYSTEM_DIRS.len())
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The name of CUDA device 0 as `nvidia-smi` reports it (the cubecl runtime has none).
#[cfg(feature = "cuda")]
fn cuda_device_name() -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "--id=0"])
        .output()
        .ok()?;
    let name = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !name.is_empty()).then_some(name)
}
