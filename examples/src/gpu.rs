//! Sampling a `.frt` model with flowrt's GPU backend from a Rust application, with the same
//! automatic choice `flowrt sample --backend auto` makes:
//!
//! ```sh
//! cargo run --release -p flowrt-examples --bin gpu -- model.frt [batch] [wgpu|cuda|auto]
//! ```
//!
//! `auto` (the default) asks `flowrt_cubecl::select::choose` and prints its reason; on the CPU
//! branch it samples with the no_std runtime, on a GPU branch with `flowrt_cubecl`.

use flowrt::grid::Uniform;
use flowrt::solver::Method;
use flowrt::Model;
use flowrt_cubecl::cubecl::Runtime;
use flowrt_cubecl::sample::{sample, SampleRequest};
use flowrt_cubecl::select::{choose, Chosen};
use flowrt_cubecl::{Gpu, GpuBackend, GpuError, GpuOps};

fn on_gpu<R: Runtime>(
    gpu: Result<Gpu<R>, GpuError>,
    model: &Model<'_>,
    x: &mut [f32],
    req: &SampleRequest<'_>,
) -> Result<String, GpuError> {
    let mut ops = GpuOps::new(gpu?);
    let report = sample(&mut ops, model, x, req)?;
    Ok(format!(
        "{} ({} launches per step)",
        report.device.name,
        report.launches_per_step()
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: gpu MODEL.frt [batch] [wgpu|cuda|auto]")?;
    let batch: usize = args.next().map_or(Ok(4096), |b| b.parse())?;
    let wanted = args.next().unwrap_or_else(|| "auto".into());
    let bytes = flowrt::format::AlignedBytes::copy_from(&std::fs::read(&path)?);
    let model = Model::from_bytes(bytes.as_slice())?;
    let mut x = vec![0f32; batch * model.state_dim()];
    flowrt::rng::fill_normal(0, &mut x);
    let grid = Uniform::unit(8)?;
    let method = Method::Rk4_38;

    let backend = match wanted.as_str() {
        "wgpu" => Chosen::Gpu(GpuBackend::Wgpu),
        "cuda" => Chosen::Gpu(GpuBackend::Cuda),
        _ => {
            let sel = choose(&model, batch);
            println!("auto: {} ({})", sel.backend.name(), sel.reason);
            sel.backend
        }
    };
    let req = SampleRequest {
        method,
        grid: &grid,
        tol: Default::default(),
        cond: Default::default(),
        guided: None,
    };
    let device = match backend {
        Chosen::Cpu => {
            let need = flowrt::sampler::sample_arena_bytes(&model, method, batch)?;
            let mut arena = flowrt::format::AlignedBytes::zeroed(need);
            flowrt::sampler::sample(&model, method, &grid, &mut x, arena.as_mut_slice())?;
            "the CPU executor".to_string()
        }
        Chosen::Gpu(GpuBackend::Wgpu) => on_gpu(Gpu::wgpu(), &model, &mut x, &req)?,
        Chosen::Gpu(GpuBackend::Cuda) => on_gpu(Gpu::cuda(), &model, &mut x, &req)?,
    };
    let mean: f32 = x.iter().sum::<f32>() / x.len() as f32;
    println!("sampled {batch} rows with rk4-38 x 8 on {device}; mean value {mean:.4}");
    Ok(())
}
