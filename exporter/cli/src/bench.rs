//! `flowrt bench`: flowrt's CPU backend against ONNX Runtime, side by side in one process.
//!
//! Both backends get the same noise (flowrt's RNG from one seed), the same solver loop
//! (`flowrt::solver`), the same time grid and the same thread count (`--threads`, default the
//! physical cores): flowrt's CPU executor splits each evaluation's rows across that many
//! threads when the evaluation is big enough to pay, ONNX Runtime gets as many intra-op
//! threads. Each backend runs
//! `warmup` untimed runs, then `runs` timed ones; the report gives min and median per run and
//! per sample, and ends with `ratio flowrt/ort: R` (median over median; < 1 means flowrt is
//! faster). With `eval` a run is a single velocity evaluation instead of the full loop.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use flowrt::field::ConditionalField;
use flowrt::field::Conditioned;
use flowrt::field::Conditioning;
use flowrt::grid::Uniform;
use flowrt::run::Request;
use flowrt::solver::{integrate, Method, Workspace};
use flowrt::{CpuOps, Model};
use flowrt_cubecl::cubecl::Runtime;
use flowrt_cubecl::sample::{SampleReport, Sampler};
use flowrt_cubecl::{Gpu, GpuBackend, GpuError, GpuField, GpuOps};
use flowrt_ort::OrtSession;

use flowrt_host::open_ort;
use flowrt_host::parallel::{resolve_threads, threads_for, with_cpu_field};

use crate::args::BackendArg;
use crate::progress::Bar;

/// `flowrt bench`: time flowrt's CPU backend against ONNX Runtime in one process (same noise,
/// solver loop and threads); the last line is `ratio flowrt/ort: R` (median over median).
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The .frt file (with an embedded ONNX model, or pass --onnx).
    pub model: PathBuf,
    /// What to compare against (only `ort`, on the CPU).
    #[arg(long, value_enum, default_value_t = Against::Ort)]
    pub against: Against,
    /// flowrt's backend to time: the CPU executor, a GPU (wgpu, cuda), or auto.
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    /// With --backend auto: say which backend was chosen and why.
    #[arg(short, long)]
    pub verbose: bool,
    /// ONNX file to use instead of the one embedded in the .frt.
    #[arg(long, value_name = "PATH")]
    pub onnx: Option<PathBuf>,
    /// Rows per run.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Solver (as for `sample`).
    #[arg(long, default_value = "rk4-38")]
    pub method: String,
    /// Uniform steps over [0, 1].
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    /// CPU threads for both: flowrt's executor splits each evaluation's rows across them
    /// (byte-identical to one thread), ONNX Runtime gets as many intra-op threads.
    /// 0 (default): the machine's physical cores.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Time a single velocity evaluation instead of the full sampling loop.
    #[arg(long)]
    pub eval: bool,
    /// Timed runs per backend.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Untimed warm-up runs per backend.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Noise seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// What `bench` compares flowrt's CPU backend with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Against {
    /// ONNX Runtime.
    Ort,
}

/// Runs `flowrt bench`.
///
/// Errors: bad flags, no ONNX model to compare with, a failing backend.
pub fn command(a: BenchArgs) -> Result<()> {
    let method: Method = a
        .method
        .parse()
        .map_err(|e| anyhow!("--method {}: {e}", a.method))?;
    let cfg = BenchConfig {
        batch: a.batch,
        method,
        steps: a.steps,
        threads: a.threads,
        eval: a.eval,
        runs: a.runs,
        warmup: a.warmup,
        seed: a.seed,
        gpu: None,
    };
    bench(&a.model, a.onnx.as_deref(), cfg, a.backend, a.verbose)
}

fn bench(
    path: &Path,
    onnx: Option<&Path>,
    mut cfg: BenchConfig,
    backend: BackendArg,
    verbose: bool,
) -> Result<()> {
    let frt = flowrt_host::Frt::open(path)?;
    let m = frt.model();
    let backend = match backend {
        BackendArg::Auto => {
            let sel = flowrt_host::select::choose(&m, cfg.batch);
            if verbose {
                println!("backend auto: {} ({})", sel.backend.name(), sel.reason);
            }
            match sel.backend {
                flowrt_host::select::Chosen::Cpu => BackendArg::Cpu,
                flowrt_host::select::Chosen::Gpu(GpuBackend::Wgpu) => BackendArg::Wgpu,
                flowrt_host::select::Chosen::Gpu(GpuBackend::Cuda) => BackendArg::Cuda,
            }
        }
        b => b,
    };
    cfg.gpu = match backend {
        BackendArg::Cpu => None,
        BackendArg::Wgpu => Some(GpuBackend::Wgpu),
        BackendArg::Cuda => Some(GpuBackend::Cuda),
        BackendArg::Ort | BackendArg::Auto => {
            bail!("bench times flowrt (--backend cpu|wgpu|cuda|auto) against ONNX Runtime")
        }
    };
    let cfg = &cfg;
    let mut session = open_ort(&m, onnx, cfg.threads)?;
    println!(
        "flowrt bench {} against ONNX Runtime ({})",
        path.display(),
        match onnx {
            Some(p) => p.display().to_string(),
            None => "embedded ONNX".into(),
        }
    );
    let report = run(&m, &mut session, cfg)?;
    println!("{}", report.text);
    Ok(())
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Rows per run.
    pub batch: usize,
    /// Solver.
    pub method: Method,
    /// Uniform steps over [0, 1].
    pub steps: usize,
    /// CPU threads for flowrt's executor and ONNX Runtime's intra-op pool (0: physical
    /// cores).
    pub threads: usize,
    /// Time one velocity evaluation (at t = 0.5) instead of the whole sampling loop.
    pub eval: bool,
    /// Timed runs per backend.
    pub runs: usize,
    /// Untimed warm-up runs per backend.
    pub warmup: usize,
    /// Noise seed (flowrt's RNG).
    pub seed: u64,
    /// flowrt's backend: `None` the CPU executor, or a GPU (`flowrt-cubecl`).
    pub gpu: Option<flowrt_cubecl::GpuBackend>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            batch: 64,
            method: Method::Rk4_38,
            steps: 8,
            threads: 0,
            eval: false,
            runs: 20,
            warmup: 3,
            seed: 0,
            gpu: None,
        }
    }
}

/// Min and median of the timed runs of one backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Fastest run.
    pub min: Duration,
    /// Median run.
    pub median: Duration,
}

/// Result of [`run`].
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The report, ending with `ratio flowrt/ort: R`.
    pub text: String,
}

fn timing(mut samples: Vec<Duration>) -> Timing {
    samples.sort();
    let min = samples.first().copied().unwrap_or_default();
    let n = samples.len();
    let median = if n == 0 {
        Duration::ZERO
    } else if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2
    };
    Timing { min, median }
}

/// Human-readable duration with 3–4 significant digits.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else if s >= 1e-6 {
        format!("{:.3} µs", s * 1e6)
    } else {
        format!("{:.1} ns", s * 1e9)
    }
}

/// Times `f` `warmup` times untimed, then `runs` times, advancing `bar` after each run.
fn measure(
    warmup: usize,
    runs: usize,
    bar: &Bar,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Timing> {
    for _ in 0..warmup {
        f()?;
        bar.inc(1);
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed());
        bar.inc(1);
    }
    Ok(timing(samples))
}

/// Times ONNX Runtime on the same work as flowrt (one evaluation, or the same solver loop
/// driving the ORT session); `out` receives the last run's output.
fn time_ort(
    ort: &mut OrtSession,
    cfg: &BenchConfig,
    bar: &Bar,
    noise: &[f32],
    cond: &Conditioning<'_>,
    grid: &Uniform,
    out: &mut [f32],
) -> Result<Timing> {
    let e = |e: flowrt::Error| anyhow!("flowrt: {e}");
    let mut field = ort.field(cfg.batch).map_err(|e| anyhow!("{e}"))?;
    if cfg.eval {
        return measure(cfg.warmup, cfg.runs, bar, || {
            field
                .eval_cond(0.5, noise, cond, out)
                .map_err(|e| anyhow!("{e}"))
        });
    }
    let method = cfg.method;
    let len = noise.len();
    let mut flat = vec![0f32; len * method.work_buffers()];
    measure(cfg.warmup, cfg.runs, bar, || {
        out.copy_from_slice(noise);
        let mut work = Workspace::from_slice(&mut flat, len, method.work_buffers()).map_err(e)?;
        let mut f = Conditioned {
            field: &mut field,
            cond: *cond,
        };
        let r = integrate(&mut CpuOps, &mut f, method, grid, out, &mut work);
        r.map_err(|err| match field.take_error() {
            Some(o) => anyhow!("{o}"),
            None => e(err),
        })
    })
}

/// Runs the comparison.
///
/// Errors: bad configuration, or either backend failing.
pub fn run(model: &Model<'_>, ort: &mut OrtSession, cfg: &BenchConfig) -> Result<BenchReport> {
    if cfg.batch == 0 || cfg.runs == 0 {
        bail!("--batch and --runs must be at least 1");
    }
    let dim = model.state_dim();
    let len = cfg
        .batch
        .checked_mul(dim)
        .ok_or_else(|| anyhow!("--batch too large"))?;
    let mut noise = vec![0f32; len];
    flowrt::rng::fill_normal(cfg.seed, &mut noise);
    let grid = Uniform::new(cfg.steps, 0.0, 1.0).map_err(|e| anyhow!("--steps: {e}"))?;
    let e = |e: flowrt::Error| anyhow!("flowrt: {e}");
    // Warm-up and timed runs of both backends.
    let runs = cfg.warmup.saturating_add(cfg.runs) as u64;
    let bar = Bar::new("benchmarking", Some(2 * runs));
    let bar = &bar;

    let mut out_cpu = vec![0f32; len];
    let mut out_ort = vec![0f32; len];
    // Class-conditional models get labels `i % classes` (the same for both backends).
    let labels: Option<Vec<i64>> =
        model
            .input_by_role(flowrt::format::InputRole::Label)
            .map(|_| {
                let classes = model.label_classes().unwrap_or(1).max(1) as i64;
                (0..cfg.batch as i64).map(|i| i % classes).collect()
            });
    let cond = Conditioning {
        label: labels.as_deref(),
        ..Default::default()
    };
    let mut gpu_line = None;
    let (t_cpu, t_ort) = if let Some(backend) = cfg.gpu {
        let req = flowrt::run::Request {
            method: cfg.method,
            grid: &grid,
            tol: Default::default(),
            cond,
            guidance: None,
        };
        let job = GpuJob {
            model,
            req: &req,
            noise: &noise,
            eval: cfg.eval,
        };
        let g = gpu_bench(backend, &job, &mut |f| {
            measure(cfg.warmup, cfg.runs, bar, f)
        })?;
        out_cpu.copy_from_slice(&g.out);
        gpu_line = Some(match &g.report {
            Some(r) => format!(
                "flowrt backend: {} on {} (whole loop on the device: noise upload, every stage \
                 and update, one read-back); {}",
                backend.name(),
                g.device,
                flowrt_host::gpu::describe(r)
            ),
            None => format!("flowrt backend: {} on {}", backend.name(), g.device),
        });
        let t_ort = time_ort(ort, cfg, bar, &noise, &cond, &grid, &mut out_ort)?;
        (g.timing, t_ort)
    } else if cfg.eval {
        let t = 0.5f32;
        let t_cpu = with_cpu_field(model, cfg.batch, cfg.threads, |field| {
            measure(cfg.warmup, cfg.runs, bar, || {
                field
                    .eval_cond(&mut CpuOps, t, &noise, &cond, &mut out_cpu)
                    .map_err(e)
            })
        })??;
        let t_ort = time_ort(ort, cfg, bar, &noise, &cond, &grid, &mut out_ort)?;
        (t_cpu, t_ort)
    } else {
        let method = cfg.method;
        let mut flat = vec![0f32; len * method.work_buffers()];
        let t_cpu = with_cpu_field(model, cfg.batch, cfg.threads, |cpu| {
            measure(cfg.warmup, cfg.runs, bar, || {
                out_cpu.copy_from_slice(&noise);
                let mut work =
                    Workspace::from_slice(&mut flat, len, method.work_buffers()).map_err(e)?;
                let mut field = Conditioned { field: cpu, cond };
                integrate(
                    &mut CpuOps,
                    &mut field,
                    method,
                    &grid,
                    &mut out_cpu,
                    &mut work,
                )
                .map_err(e)
            })
        })??;
        let t_ort = time_ort(ort, cfg, bar, &noise, &cond, &grid, &mut out_ort)?;
        (t_cpu, t_ort)
    };
    let max_abs_diff = flowrt_export::max_abs_diff(&out_cpu, &out_ort);
    let ort_threads = resolve_threads(cfg.threads);
    let ratio = t_cpu.median.as_secs_f64() / t_ort.median.as_secs_f64().max(1e-12);

    let mut text = String::new();
    let what = if cfg.eval {
        "one velocity evaluation at t = 0.5".to_string()
    } else {
        format!(
            "{} x {} steps ({} velocity evaluations)",
            cfg.method.name(),
            cfg.steps,
            cfg.steps * cfg.method.stages()
        )
    };
    let _ = writeln!(
        text,
        "run = {what}, batch {} (state dim {dim}), same noise (seed {}) for both; {} warm-up + {} timed runs each",
        cfg.batch, cfg.seed, cfg.warmup, cfg.runs
    );
    if let Some(l) = &gpu_line {
        let _ = writeln!(text, "{l}");
    }
    let _ = writeln!(
        text,
        "threads: flowrt {}, ONNX Runtime (CPU) intra_threads {}",
        if cfg.gpu.is_some() {
            "GPU kernels".to_string()
        } else {
            format!(
                "CPU executor {} (rows split across threads; fewer when an evaluation is too small to pay)",
                threads_for(model, cfg.batch, cfg.threads)
            )
        },
        ort_threads,
    );
    let _ = writeln!(
        text,
        "{:<8} {:>12} {:>12} {:>14} {:>14}",
        "backend", "min/run", "median/run", "min/sample", "median/sample"
    );
    for (name, t) in [("flowrt", t_cpu), ("ort", t_ort)] {
        let b = cfg.batch as u32;
        let _ = writeln!(
            text,
            "{name:<8} {:>12} {:>12} {:>14} {:>14}",
            fmt_duration(t.min),
            fmt_duration(t.median),
            fmt_duration(t.min / b),
            fmt_duration(t.median / b)
        );
    }
    let _ = writeln!(
        text,
        "max |flowrt - ort| over the outputs: {max_abs_diff:.3e}"
    );
    let _ = write!(text, "ratio flowrt/ort: {ratio:.3}");
    Ok(BenchReport { text })
}

/// Timed runs of one backend: `warmup` untimed then `runs` timed calls of `run`.
type Measure<'a> = dyn FnMut(&mut dyn FnMut() -> Result<()>) -> Result<Timing> + 'a;

/// What [`bench()`] measured on the GPU.
struct GpuBench {
    /// The timing of the runs.
    pub timing: Timing,
    /// The output of the last run.
    pub out: Vec<f32>,
    /// The device, kernel launches and evaluations of the last run.
    pub report: Option<SampleReport>,
    /// The device name.
    pub device: String,
}

/// What [`gpu_bench`] times: sampling `noise` with `req` (or one evaluation, `eval`, with
/// `req`'s conditioning).
struct GpuJob<'a> {
    model: &'a Model<'a>,
    req: &'a Request<'a>,
    noise: &'a [f32],
    eval: bool,
}

/// Times `job` on `backend` with `measure`.
/// Weights are uploaded and the graph planned once, outside the timed runs; each timed
/// sampling run uploads the noise, runs the whole loop on the device and reads back.
///
/// Errors: no device, or a failing run.
fn gpu_bench(backend: GpuBackend, job: &GpuJob<'_>, measure: &mut Measure<'_>) -> Result<GpuBench> {
    fn go<R: Runtime>(
        mut ops: GpuOps<R>,
        job: &GpuJob<'_>,
        measure: &mut Measure<'_>,
    ) -> Result<GpuBench> {
        let &GpuJob {
            model,
            req,
            noise,
            eval,
        } = job;
        let device = ops.gpu.info().name.clone();
        let batch = noise.len() / model.state_dim().max(1);
        let e = |e: GpuError| anyhow!("{e}");
        if eval {
            let mut field = GpuField::new(&ops, model, batch).map_err(e)?;
            field.set_conditioning(&ops, batch, &req.cond).map_err(e)?;
            let x = ops.upload(noise);
            let mut v = ops.buffer(noise.len());
            let timing = measure(&mut || {
                ConditionalField::eval_cond(&mut field, &mut ops, 0.5, &x, &req.cond, &mut v)
                    .map_err(|err| {
                        anyhow!(
                            "{}",
                            field
                                .take_error()
                                .map_or(err.to_string(), |g| g.to_string())
                        )
                    })?;
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
        GpuBackend::Wgpu => go(ops_of(Gpu::wgpu())?, job, measure),
        GpuBackend::Cuda => go(ops_of(Gpu::cuda())?, job, measure),
    }
}

/// The device of `backend`.
fn ops_of<R: Runtime>(gpu: Result<Gpu<R>, GpuError>) -> Result<GpuOps<R>> {
    gpu.map(GpuOps::new).map_err(|e| anyhow!("{e}"))
}
