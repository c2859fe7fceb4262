//! The CLI's GPU glue: `--backend wgpu|cuda|auto` for `sample` and `bench`, over
//! `flowrt-cubecl` (one function per use, dispatching to the cubecl runtime of the backend).

use std::time::Duration;

use anyhow::{anyhow, Result};
use flowrt::Model;
use flowrt_cubecl::cubecl::Runtime;
use flowrt_cubecl::sample::{Recorder, SampleReport, SampleRequest, Sampler};
use flowrt_cubecl::{Gpu, GpuBackend, GpuError, GpuField, GpuOps};

/// The device of `backend`.
fn ops_of<R: Runtime>(gpu: Result<Gpu<R>, GpuError>) -> Result<GpuOps<R>> {
    gpu.map(GpuOps::new).map_err(|e| anyhow!("{e}"))
}

/// Samples `x` on `backend` (noise in, samples out); with `trajectory`, every step's state
/// is read back into it (the initial state is the caller's to add).
///
/// Errors: no device (naming the backend and what was looked for), or whatever sampling
/// reports.
pub fn sample(
    backend: GpuBackend,
    model: &Model<'_>,
    x: &mut [f32],
    req: &SampleRequest<'_>,
    trajectory: Option<&mut Recorder>,
) -> Result<SampleReport> {
    fn go<R: Runtime>(
        mut ops: GpuOps<R>,
        model: &Model<'_>,
        x: &mut [f32],
        req: &SampleRequest<'_>,
        trajectory: Option<&mut Recorder>,
    ) -> Result<SampleReport> {
        let batch = x.len() / model.state_dim().max(1);
        let e = |e: GpuError| anyhow!("sampling failed: {e}");
        let mut sampler = Sampler::new(&mut ops, model, batch, req).map_err(e)?;
        match trajectory {
            Some(r) => sampler.run_observed(&mut ops, x, req, r),
            None => sampler.run(&mut ops, x, req),
        }
        .map_err(e)
    }
    match backend {
        GpuBackend::Wgpu => go(ops_of(Gpu::wgpu())?, model, x, req, trajectory),
        GpuBackend::Cuda => go(ops_of(Gpu::cuda())?, model, x, req, trajectory),
    }
}

/// Timed runs of one backend: `warmup` untimed then `runs` timed calls of `run`.
pub type Measure<'a> =
    dyn FnMut(&mut dyn FnMut() -> Result<()>) -> Result<super::bench::Timing> + 'a;

/// What [`bench`] measured on the GPU.
pub struct GpuBench {
    /// The timing of the runs.
    pub timing: super::bench::Timing,
    /// The output of the last run.
    pub out: Vec<f32>,
    /// The device, kernel launches and evaluations of the last run.
    pub report: Option<SampleReport>,
    /// The device name.
    pub device: String,
}

/// Times sampling (or one evaluation, `eval`, with `req`'s conditioning) of `noise` on
/// `backend` with `measure`.
/// Weights are uploaded and the graph planned once, outside the timed runs; each timed
/// sampling run uploads the noise, runs the whole loop on the device and reads back.
///
/// Errors: no device, or a failing run.
pub fn bench(
    backend: GpuBackend,
    model: &Model<'_>,
    req: &SampleRequest<'_>,
    noise: &[f32],
    eval: bool,
    measure: &mut Measure<'_>,
) -> Result<GpuBench> {
    fn go<R: Runtime>(
        mut ops: GpuOps<R>,
        model: &Model<'_>,
        req: &SampleRequest<'_>,
        noise: &[f32],
        eval: bool,
        measure: &mut Measure<'_>,
    ) -> Result<GpuBench> {
        let device = ops.gpu.info().name.clone();
        let batch = noise.len() / model.state_dim().max(1);
        let e = |e: GpuError| anyhow!("{e}");
        if eval {
            let mut field = GpuField::new(&ops, model, batch).map_err(e)?;
            field.set_conditioning(&ops, &req.cond).map_err(e)?;
            let x = ops.upload(noise);
            let mut v = ops.buffer(noise.len());
            let timing = measure(&mut || {
                flowrt::VelocityField::eval(&mut field, &mut ops, 0.5, &x, &mut v).map_err(
                    |err| {
                        anyhow!(
                            "{}",
                            field
                                .take_error()
                                .map_or(err.to_string(), |g| g.to_string())
                        )
                    },
                )?;
                ops.gpu.sync().map_err(e)
            })?;
            let out = ops.read(&v).map_err(e)?;
            return Ok(GpuBench {
                timing,
                out,
                report: None,
                device,
            });
        }
        let mut sampler = Sampler::new(&mut ops, model, batch, req).map_err(e)?;
        let mut out = noise.to_vec();
        let mut report = None;
        let timing = measure(&mut || {
            out.copy_from_slice(noise);
            report = Some(sampler.run(&mut ops, &mut out, req).map_err(e)?);
            Ok(())
        })?;
        Ok(GpuBench {
            timing,
            out,
            report,
            device,
        })
    }
    match backend {
        GpuBackend::Wgpu => go(ops_of(Gpu::wgpu())?, model, req, noise, eval, measure),
        GpuBackend::Cuda => go(ops_of(Gpu::cuda())?, model, req, noise, eval, measure),
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
