//! The GPU backends (`wgpu`, `cuda`) over `flowrt-cubecl`: one function per use, dispatching
//! to the cubecl runtime of the backend.

use std::time::Duration;

use flowrt::run::Request;
use flowrt::Model;
use flowrt_cubecl::cubecl::Runtime;
use flowrt_cubecl::sample::{Recorder, SampleReport, Sampler};
use flowrt_cubecl::{Gpu, GpuBackend, GpuError, GpuOps};

use crate::Result;

/// The device of `backend`.
fn ops_of<R: Runtime>(gpu: Result<Gpu<R>, GpuError>) -> Result<GpuOps<R>> {
    Ok(gpu.map(GpuOps::new)?)
}

/// Samples `x` on `backend` (noise in, samples out); with `trajectory`, every step's state
/// is read back into it (the initial state is the caller's to add).
///
/// Errors: no device (naming the backend and what was looked for), or whatever sampling
/// reports.
pub(crate) fn sample(
    backend: GpuBackend,
    model: &Model<'_>,
    x: &mut [f32],
    req: &Request<'_>,
    trajectory: Option<&mut Recorder>,
) -> Result<SampleReport> {
    fn go<R: Runtime>(
        mut ops: GpuOps<R>,
        model: &Model<'_>,
        x: &mut [f32],
        req: &Request<'_>,
        trajectory: Option<&mut Recorder>,
    ) -> Result<SampleReport> {
        let batch = x.len() / model.state_dim().max(1);
        let mut sampler = Sampler::new(&mut ops, model, batch, req)?;
        Ok(match trajectory {
            Some(r) => sampler.run_observed(&mut ops, x, req, r),
            None => sampler.run(&mut ops, x, req),
        }?)
    }
    match backend {
        GpuBackend::Wgpu => go(ops_of(Gpu::wgpu())?, model, x, req, trajectory),
        GpuBackend::Cuda => go(ops_of(Gpu::cuda())?, model, x, req, trajectory),
    }
}

/// One line about a GPU run for `-v`: device, evaluations, launches.
pub fn describe(r: &SampleReport) -> String {
    format!(
        "device {}{}: {} evaluations, {} graph launches per evaluation, {} launches in all \
         ({:.1} per step); setup {:.3} ms, run {:.3} ms",
        r.device.name,
        if r.device.software {
            " (software rasterizer)"
        } else {
            ""
        },
        r.evaluations,
        r.graph_launches,
        r.launches,
        r.launches_per_step(),
        ms(r.setup),
        ms(r.run)
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
