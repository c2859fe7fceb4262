//! The `flowrt` command-line tool: export, inspect and sample flow models.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use flowrt::format::AlignedBytes;
use flowrt::guidance::ConditionalField;
use flowrt::solver::Method;
use flowrt::Model;
use flowrt_export::{npy, roles, ExportOptions};

#[derive(Parser)]
#[command(
    name = "flowrt",
    version,
    about = "Run flow-matching / rectified-flow models anywhere"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert an ONNX velocity network into a .frt file.
    Export {
        /// The ONNX model (external data files are read from its folder).
        model: PathBuf,
        /// Output .frt path.
        #[arg(short, long)]
        output: PathBuf,
        /// Role of an ONNX input: NAME=x|t|xt|label|cond|guidance (repeatable; overrides
        /// detection).
        #[arg(long = "role", value_name = "NAME=ROLE")]
        roles: Vec<String>,
        /// Also store the source ONNX (external weights inlined) in the .frt, so
        /// `sample --backend ort` and `bench` can run the same artifact with ONNX Runtime.
        #[arg(long)]
        embed_onnx: bool,
        /// The model's time axis: t (0 = noise, 1 = data; torchcfm, flow_matching) or sigma
        /// (1 = noise, 0 = data, output noise - x0; SD3, Flux, diffusers).
        #[arg(long, default_value = "t")]
        time: String,
        /// The network receives scale * time (1000 for diffusers-style timesteps, 999 for the
        /// official Rectified Flow code).
        #[arg(long, default_value_t = 1.0)]
        time_scale: f32,
        /// The network predicts -dx/dtime (e.g. data - noise on the sigma axis).
        #[arg(long)]
        negate_output: bool,
        /// What a few-step model's second time input (role step) receives for a step from t
        /// to r: r, h (= t - r, MeanFlow), step-size (|r - t|) or log2-steps (log2 of
        /// 1/|r - t|, the official shortcut models' dt_base). Default: from the input's name
        /// (r, h, dt_base -> log2-steps, d/dt -> step-size).
        #[arg(long, value_name = "FORM")]
        second_time: Option<String>,
        /// Bake a default solver into the file (sample uses it unless told otherwise).
        #[arg(long)]
        method: Option<String>,
        /// Bake a default step count into the file.
        #[arg(long)]
        steps: Option<usize>,
        /// Bake a default grid into the file (same forms as `sample --grid`).
        #[arg(long, allow_hyphen_values = true)]
        grid: Option<String>,
        /// Bake a default classifier-free guidance scale into the file.
        #[arg(long)]
        guidance: Option<f32>,
        /// Bake the null (unconditional) label into the file.
        #[arg(long)]
        null_label: Option<u32>,
        /// Bake a guidance interval A,B (model time) into the file.
        #[arg(long, value_name = "A,B")]
        guidance_interval: Option<String>,
        /// Blockwise flow matching: use the velocity net in FILE.onnx for steps starting at
        /// model times in [A, B] (repeatable; the main model covers the rest).
        #[arg(long = "block", value_name = "A:B=FILE.onnx")]
        blocks: Vec<String>,
        /// FlowTurbo-style refiner: use the (light) velocity net in FILE.onnx on steps n with
        /// FROM <= n/steps < TO (e.g. 0.5:1 = the second half).
        #[arg(long = "refiner", value_name = "FROM:TO=FILE.onnx")]
        refiners: Vec<String>,
        /// Latent flow matching: a decoder graph (input: the state) applied after the last
        /// step; samples are its output.
        #[arg(long, value_name = "FILE.onnx")]
        decoder: Option<PathBuf>,
    },
    /// Print a .frt file's signature, ops, parameters and arena sizes.
    Inspect {
        /// The .frt file.
        model: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Batch sizes to report arena bytes for (repeatable).
        #[arg(long = "batch", default_values_t = [1usize, 64, 4096])]
        batches: Vec<usize>,
    },
    /// Integrate noise to samples (the model's noise end to its data end).
    Sample {
        /// The .frt file.
        model: PathBuf,
        /// Noise as .npy (float32 or float64, shape [N, ...state dims]).
        #[arg(long, conflicts_with_all = ["seed", "num"])]
        noise: Option<PathBuf>,
        /// Draw the noise with flowrt's deterministic RNG (Philox4x32-10 + Box-Muller, the
        /// same bits on every platform; docs/rng.md) from this seed.
        #[arg(long, requires = "num")]
        seed: Option<u64>,
        /// Number of samples to draw with --seed.
        #[arg(long, requires = "seed")]
        num: Option<usize>,
        #[command(flatten)]
        solve: flowrt_export::solve::SolveArgs,
        #[command(flatten)]
        sde: flowrt_export::solve::SdeArgs,
        #[command(flatten)]
        conditioning: flowrt_export::conditioning::CondFlags,
        /// Output .npy (float32, same shape as the noise).
        #[arg(short, long)]
        output: PathBuf,
        /// Also write every step's state as .npy [steps + 1, N, ...] (the initial noise first).
        #[arg(long, value_name = "NPY")]
        trajectory: Option<PathBuf>,
        /// Also draw the first two coordinates of the samples in the terminal.
        #[arg(long)]
        ascii: bool,
        /// Also draw the samples as a PNG: [C, H, W] samples as an image grid (values in
        /// [-1, 1] mapped to 0..255), any other samples as a scatter of their first two
        /// coordinates.
        #[arg(long, value_name = "PATH")]
        png: Option<PathBuf>,
        /// Velocity backend: flowrt's CPU executor, ONNX Runtime (same solver loop), flowrt's
        /// GPU kernels (wgpu, cuda: the whole loop on the device), or auto (a GPU when one
        /// is found and the model is large enough for it to win, else the CPU; -v says why).
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Say which backend ran and why (and, on a GPU, the device and kernel launches).
        #[arg(short, long)]
        verbose: bool,
        /// With --backend ort: use this ONNX file instead of the one embedded in the .frt.
        #[arg(long, value_name = "PATH")]
        onnx: Option<PathBuf>,
        /// With --backend ort: ONNX Runtime intra-op threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Apply a state-to-state model (a neural PDE surrogate, signature x only) repeatedly:
    /// x_{n+1} = net(x_n). No ODE solver.
    Rollout {
        /// The .frt file.
        model: PathBuf,
        /// Initial states as .npy [N, ...state dims].
        #[arg(long)]
        init: PathBuf,
        /// Number of applications.
        #[arg(long)]
        steps: usize,
        /// Output .npy: the trajectory [steps + 1, N, ...] (the initial state first).
        #[arg(short, long)]
        output: PathBuf,
        /// Velocity backend.
        #[arg(long, value_enum, default_value_t = Backend::Cpu)]
        backend: Backend,
        /// With --backend ort: use this ONNX file instead of the embedded one.
        #[arg(long, value_name = "PATH")]
        onnx: Option<PathBuf>,
    },
    /// Integrate data back to noise (inversion) with any solver and grid, then forward again
    /// and print the round-trip error.
    Invert {
        /// The .frt file.
        model: PathBuf,
        /// Data as .npy [N, ...state dims].
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        solve: flowrt_export::solve::SolveArgs,
        #[command(flatten)]
        conditioning: flowrt_export::conditioning::CondFlags,
        /// Output .npy: the recovered noise.
        #[arg(short, long)]
        output: PathBuf,
        /// Velocity backend.
        #[arg(long, value_enum, default_value_t = Backend::Cpu)]
        backend: Backend,
        /// With --backend ort: use this ONNX file instead of the embedded one.
        #[arg(long, value_name = "PATH")]
        onnx: Option<PathBuf>,
    },
    /// Time flowrt's CPU backend against ONNX Runtime in one process (same noise, solver
    /// loop and threads); the last line is `ratio flowrt/ort: R` (median over median).
    Bench {
        /// The .frt file (with an embedded ONNX model, or pass --onnx).
        model: PathBuf,
        /// What to compare against (only `ort`, on the CPU).
        #[arg(long, value_enum, default_value_t = Against::Ort)]
        against: Against,
        /// flowrt's backend to time: the CPU executor, a GPU (wgpu, cuda), or auto.
        #[arg(long, value_enum, default_value_t = Backend::Cpu)]
        backend: Backend,
        /// With --backend auto: say which backend was chosen and why.
        #[arg(short, long)]
        verbose: bool,
        /// ONNX file to use instead of the one embedded in the .frt.
        #[arg(long, value_name = "PATH")]
        onnx: Option<PathBuf>,
        /// Rows per run.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Solver (as for `sample`).
        #[arg(long, default_value = "rk4-38")]
        method: String,
        /// Uniform steps over [0, 1].
        #[arg(long, default_value_t = 8)]
        steps: usize,
        /// ONNX Runtime intra-op threads (flowrt's CPU executor is single-threaded, so 1 is
        /// the like-for-like setting).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Time a single velocity evaluation instead of the full sampling loop.
        #[arg(long)]
        eval: bool,
        /// Timed runs per backend.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Untimed warm-up runs per backend.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Noise seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Run the ONNX backend node test cases (onnx==1.22.0's `onnx/backend/test/data/node`)
    /// through export + runtime and write the per-op conformance table.
    Conformance {
        /// The `node` test-data folder.
        data: PathBuf,
        /// Markdown report to write (e.g. docs/conformance.md).
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Only cases whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Print every case's result.
        #[arg(short, long)]
        verbose: bool,
    },
}

/// Velocity backends of `sample`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// flowrt's own CPU executor.
    Cpu,
    /// ONNX Runtime (flowrt-ort), from the embedded ONNX or --onnx.
    Ort,
    /// flowrt's cubecl kernels through wgpu (Vulkan / Metal / DX12; `sample`, `bench`).
    Wgpu,
    /// flowrt's cubecl kernels through CUDA (`sample`, `bench`).
    Cuda,
    /// A GPU when one is found and the model is large enough, else the CPU executor.
    Auto,
}

/// What `bench` compares flowrt's CPU backend with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Against {
    /// ONNX Runtime.
    Ort,
}

/// Mesa's Vulkan drivers (which the GPU probe of `--backend auto` may load) print
/// "XDG_RUNTIME_DIR is invalid" on every start without one; give the process a private one.
fn quiet_vulkan_loader() {
    let valid = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).is_dir());
    if !valid {
        let dir = std::env::temp_dir().join("flowrt-xdg");
        if std::fs::create_dir_all(&dir).is_ok() {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            }
            // Single-threaded here: nothing else reads the environment yet.
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
}

/// Rust ignores SIGPIPE, so a `println!` into a closed pipe (`flowrt inspect m.frt | head`)
/// panics; restore the default, which ends the process quietly as other command-line tools do.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any other thread exists; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    default_sigpipe();
    quiet_vulkan_loader();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Export {
            model,
            output,
            roles,
            embed_onnx,
            time,
            time_scale,
            negate_output,
            second_time,
            method,
            steps,
            grid,
            guidance,
            null_label,
            guidance_interval,
            blocks,
            refiners,
            decoder,
        } => {
            let time = flowrt::time::TimeConvention {
                axis: flowrt::time::TimeAxis::parse(&time)
                    .map_err(|e| anyhow!("--time {time}: {e}"))?,
                scale: time_scale,
                negate_output,
                second: match &second_time {
                    Some(f) => flowrt::time::SecondTime::parse(f)
                        .map_err(|e| anyhow!("--second-time {f}: {e}"))?,
                    None => flowrt::time::SecondTime::None,
                },
            };
            time.validate()
                .map_err(|e| anyhow!("--time-scale {time_scale}: {e}"))?;
            let defaults = solver_defaults(
                method.as_deref(),
                steps,
                grid.as_deref(),
                guidance,
                null_label,
                guidance_interval.as_deref(),
            )?;
            let opts = ExportOptions {
                roles: roles
                    .iter()
                    .map(|r| roles::parse_role_override(r))
                    .collect::<Result<_>>()?,
                embed_onnx,
                time,
                solver_defaults: defaults,
                pipeline: pipeline_stages(&blocks, &refiners, decoder.as_deref())?,
            };
            export(&model, &output, &opts)
        }
        Command::Inspect {
            model,
            json,
            batches,
        } => inspect(&model, json, &batches),
        Command::Sample {
            model,
            noise,
            seed,
            num,
            solve,
            sde,
            conditioning,
            output,
            trajectory,
            ascii,
            png,
            backend,
            verbose,
            onnx,
            threads,
        } => sample(&SampleArgs {
            path: &model,
            noise: noise.as_deref(),
            seeded: seed.zip(num),
            solve: &solve,
            sde: &sde,
            conditioning: &conditioning,
            output: &output,
            trajectory: trajectory.as_deref(),
            ascii,
            png: png.as_deref(),
            backend: (backend, onnx.as_deref(), threads),
            verbose,
        }),
        Command::Rollout {
            model,
            init,
            steps,
            output,
            backend,
            onnx,
        } => rollout(&model, &init, steps, &output, (backend, onnx.as_deref(), 1)),
        Command::Invert {
            model,
            data,
            solve,
            conditioning,
            output,
            backend,
            onnx,
        } => invert(
            &model,
            &data,
            &solve,
            &conditioning,
            &output,
            (backend, onnx.as_deref(), 1),
        ),
        Command::Bench {
            model,
            against: Against::Ort,
            backend,
            verbose,
            onnx,
            batch,
            method,
            steps,
            threads,
            eval,
            runs,
            warmup,
            seed,
        } => {
            let method: Method = method
                .parse()
                .map_err(|e| anyhow!("--method {method}: {e}"))?;
            let cfg = flowrt_export::bench::BenchConfig {
                batch,
                method,
                steps,
                threads,
                eval,
                runs,
                warmup,
                seed,
                gpu: None,
            };
            bench(&model, onnx.as_deref(), cfg, backend, verbose)
        }
        Command::Conformance {
            data,
            out,
            filter,
            verbose,
        } => conformance(&data, out.as_deref(), filter.as_deref(), verbose),
    }
}

fn conformance(data: &Path, out: Option<&Path>, filter: Option<&str>, verbose: bool) -> Result<()> {
    use flowrt_export::conformance::{self, Outcome};
    let results = conformance::run_all(data, filter)?;
    if verbose {
        for r in &results {
            match &r.outcome {
                Outcome::Pass { max_abs, .. } => {
                    println!("pass    {} ({}) {max_abs:.1e}", r.name, r.op)
                }
                Outcome::Wrong { why } => println!("WRONG   {} ({}): {why}", r.name, r.op),
                Outcome::Refused { why } => println!("refused {} ({}): {why}", r.name, r.op),
            }
        }
    }
    let t = conformance::totals(&results);
    let (p, w) = t
        .values()
        .fold((0, 0), |a, v| (a.0 + v.passed, a.1 + v.wrong));
    println!(
        "{} cases: {p} passed, {w} wrong, {} refused; {} ops with a passing case",
        results.len(),
        results.len() - p - w,
        t.values().filter(|v| v.passed > 0).count()
    );
    if let Some(out) = out {
        let source = format!(
            "`onnx/backend/test/data/node` of onnx 1.22.0 ({} cases)",
            results.len()
        );
        std::fs::write(out, conformance::markdown(&results, &source))
            .with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn bench(
    path: &Path,
    onnx: Option<&Path>,
    mut cfg: flowrt_export::bench::BenchConfig,
    backend: Backend,
    verbose: bool,
) -> Result<()> {
    let bytes = read_frt(path)?;
    let m = load(&bytes, path)?;
    cfg.gpu = match resolve_backend(backend, &m, cfg.batch, verbose) {
        Backend::Cpu => None,
        Backend::Wgpu => Some(flowrt_cubecl::GpuBackend::Wgpu),
        Backend::Cuda => Some(flowrt_cubecl::GpuBackend::Cuda),
        Backend::Ort | Backend::Auto => {
            bail!("bench times flowrt (--backend cpu|wgpu|cuda|auto) against ONNX Runtime")
        }
    };
    let cfg = &cfg;
    let mut session = flowrt_export::bench::open_ort(&m, onnx, cfg.threads)?;
    println!(
        "flowrt bench {} against ONNX Runtime ({})",
        path.display(),
        match onnx {
            Some(p) => p.display().to_string(),
            None => "embedded ONNX".into(),
        }
    );
    let report = flowrt_export::bench::run(&m, &mut session, cfg)?;
    println!("{}", report.text);
    Ok(())
}

/// The pipeline stages of `export --block/--refiner/--decoder`.
fn pipeline_stages(
    blocks: &[String],
    refiners: &[String],
    decoder: Option<&Path>,
) -> Result<Vec<(flowrt::pipeline::StageKind, PathBuf)>> {
    use flowrt::pipeline::StageKind;
    let parse = |flag: &str, s: &str| -> Result<(f32, f32, PathBuf)> {
        let (range, file) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("--{flag} expects A:B=FILE.onnx, got `{s}`"))?;
        let (a, b) = range
            .split_once(':')
            .ok_or_else(|| anyhow!("--{flag} expects A:B=FILE.onnx, got `{s}`"))?;
        let num = |v: &str| {
            v.trim()
                .parse::<f32>()
                .map_err(|_| anyhow!("--{flag}: `{v}` is not a number"))
        };
        Ok((num(a)?, num(b)?, PathBuf::from(file)))
    };
    let mut out = Vec::new();
    for b in blocks {
        let (a, bb, f) = parse("block", b)?;
        out.push((StageKind::Block { a, b: bb }, f));
    }
    for r in refiners {
        let (from, to, f) = parse("refiner", r)?;
        out.push((StageKind::Refiner { from, to }, f));
    }
    if let Some(d) = decoder {
        out.push((StageKind::Decoder, d.to_path_buf()));
    }
    if out.len() > flowrt::pipeline::MAX_STAGES {
        bail!("at most {} pipeline stages", flowrt::pipeline::MAX_STAGES);
    }
    Ok(out)
}

/// Solver defaults from the export flags; `None` when none was given.
fn solver_defaults(
    method: Option<&str>,
    steps: Option<usize>,
    grid: Option<&str>,
    guidance: Option<f32>,
    null_label: Option<u32>,
    interval: Option<&str>,
) -> Result<Option<flowrt::ir::SolverDefaultsDesc>> {
    if method.is_none()
        && steps.is_none()
        && grid.is_none()
        && guidance.is_none()
        && null_label.is_none()
        && interval.is_none()
    {
        return Ok(None);
    }
    let method: Option<Method> = method
        .map(|m| m.parse().map_err(|e| anyhow!("--method {m}: {e}")))
        .transpose()?;
    if steps == Some(0) {
        bail!("--steps must be at least 1");
    }
    let (grid, grid_points) = match grid {
        Some(g) => {
            let (spec, points) = flowrt_export::solve::parse_grid(g)?;
            (points.is_none().then_some(spec), points)
        }
        None => (None, None),
    };
    let interval = interval
        .map(flowrt_export::conditioning::parse_interval)
        .transpose()?;
    if guidance.is_some_and(|w| !w.is_finite()) {
        bail!("--guidance must be finite");
    }
    Ok(Some(flowrt::ir::SolverDefaultsDesc {
        method,
        steps,
        grid,
        grid_points,
        guidance: flowrt::format::sampling::GuidanceDefaults {
            scale: guidance,
            null_label,
            interval,
        },
    }))
}

fn export(model: &Path, output: &Path, opts: &ExportOptions) -> Result<()> {
    let bytes = flowrt_export::export_onnx(model, opts)?;
    std::fs::write(output, &bytes).with_context(|| format!("writing {}", output.display()))?;
    let aligned = AlignedBytes::copy_from(&bytes);
    let m =
        Model::from_bytes(aligned.as_slice()).map_err(|e| anyhow!("re-reading the export: {e}"))?;
    println!(
        "exported {} -> {} ({} bytes, {} nodes, {} parameters)",
        model.display(),
        output.display(),
        bytes.len(),
        m.node_count(),
        m.param_count()
    );
    Ok(())
}

/// Reads a .frt file into an aligned buffer (validated when a `Model` is made from it).
fn read_frt(path: &Path) -> Result<AlignedBytes> {
    flowrt_export::read_frt(path)
}

fn load<'a>(bytes: &'a AlignedBytes, path: &Path) -> Result<Model<'a>> {
    Model::from_bytes(bytes.as_slice()).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn inspect(path: &Path, json: bool, batches: &[usize]) -> Result<()> {
    if batches.contains(&0) {
        bail!("--batch must be at least 1");
    }
    let bytes = read_frt(path)?;
    let m = load(&bytes, path)?;
    let mut op_counts: Vec<(&str, usize)> = Vec::new();
    for n in m.nodes() {
        match op_counts.iter_mut().find(|(name, _)| *name == n.op_name()) {
            Some((_, c)) => *c += 1,
            None => op_counts.push((n.op_name(), 1)),
        }
    }
    let inputs: Vec<(String, String, String)> = m
        .inputs()
        .map(|i| {
            let name = m
                .tensor(i.tensor)
                .and_then(|t| t.name)
                .unwrap_or("?")
                .to_string();
            (
                name,
                format!("{:?}", i.role).to_lowercase(),
                i.shape.to_string(),
            )
        })
        .collect();
    let arena: Vec<(usize, usize)> = batches
        .iter()
        .map(|&b| Ok((b, m.required_arena_bytes(b).map_err(|e| anyhow!("{e}"))?)))
        .collect::<Result<_>>()?;
    if json {
        let v = serde_json::json!({
            "file": path.display().to_string(),
            "file_bytes": m.file_len(),
            "inputs": inputs.iter().map(|(n, r, s)| serde_json::json!({"name": n, "role": r, "shape": s})).collect::<Vec<_>>(),
            "output_shape": m.output_shape().to_string(),
            "state_dim": m.state_dim(),
            "nodes": m.node_count(),
            "ops": op_counts.iter().map(|(n, c)| serde_json::json!({"op": n, "count": c})).collect::<Vec<_>>(),
            "parameters": m.param_count(),
            "label_classes": m.label_classes(),
            "cond_dim": m.cond_dim(),
            "time": {"axis": m.time_convention().axis.name(), "scale": m.time_convention().scale, "negate_output": m.time_convention().negate_output},
            "solver_defaults": m.solver_defaults().map(|d| format!("{d:?}")),
            "weight_bytes": m.weight_bytes(),
            "arena_fixed_bytes": m.fixed_arena_bytes(),
            "arena_per_row_bytes": m.per_row_arena_bytes(),
            "arena_bytes": arena.iter().map(|(b, a)| serde_json::json!({"batch": b, "bytes": a})).collect::<Vec<_>>(),
            "metadata": m.metadata().collect::<std::collections::BTreeMap<_, _>>(),
            "embedded_onnx_bytes": m.embedded_onnx().map(<[u8]>::len),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{}: {} bytes, .frt format v1", path.display(), m.file_len());
    for (k, v) in m.metadata() {
        println!("  {k}: {v}");
    }
    println!("signature:");
    for (name, role, shape) in &inputs {
        let extra = match (role.as_str(), m.label_classes(), m.cond_dim()) {
            ("label", Some(n), _) => format!("  ({n} classes)"),
            ("cond", _, Some(c)) => format!("  (cond dim {c})"),
            _ => String::new(),
        };
        println!("  input  {name:<12} role {role:<3} shape {shape}{extra}");
    }
    println!(
        "  output velocity          shape {}  (state dim {})",
        m.output_shape(),
        m.state_dim()
    );
    let tc = m.time_convention();
    println!(
        "time: {} axis ({}), network time = {} x time{}",
        tc.axis.name(),
        match tc.axis {
            flowrt::time::TimeAxis::T => "0 = noise -> 1 = data",
            flowrt::time::TimeAxis::Sigma => "1 = noise -> 0 = data",
        },
        tc.scale,
        if tc.negate_output {
            ", output = -dx/dtime"
        } else {
            ""
        }
    );
    if let Some(d) = m.solver_defaults() {
        println!("solver defaults: {d:?}");
    }
    if let Some(p) = m.pipeline() {
        for (k, sub) in p.stages() {
            println!(
                "pipeline stage: {k:?}: {} nodes, {} parameters, arena {} bytes for batch 1",
                sub.node_count(),
                sub.param_count(),
                sub.required_arena_bytes(1).unwrap_or(0)
            );
        }
    }
    let ops: Vec<String> = op_counts.iter().map(|(n, c)| format!("{n} x{c}")).collect();
    println!("ops: {} nodes: {}", m.node_count(), ops.join(", "));
    println!(
        "parameters: {} ({} weight bytes)",
        m.param_count(),
        m.weight_bytes()
    );
    match m.embedded_onnx() {
        Some(o) => println!(
            "embedded ONNX: {} bytes (sample --backend ort / bench can run it)",
            o.len()
        ),
        None => println!("embedded ONNX: none (export --embed-onnx to add it)"),
    }
    println!(
        "arena (graph + field scratch) = {} fixed + {} per row, rounded to 16:",
        m.fixed_arena_bytes(),
        m.per_row_arena_bytes()
    );
    for (b, a) in arena {
        println!("  batch {b:>6}: {a} bytes");
    }
    Ok(())
}

/// What `sample` was asked to do.
struct SampleArgs<'a> {
    path: &'a Path,
    noise: Option<&'a Path>,
    seeded: Option<(u64, usize)>,
    solve: &'a flowrt_export::solve::SolveArgs,
    sde: &'a flowrt_export::solve::SdeArgs,
    conditioning: &'a flowrt_export::conditioning::CondFlags,
    output: &'a Path,
    trajectory: Option<&'a Path>,
    ascii: bool,
    png: Option<&'a Path>,
    backend: (Backend, Option<&'a Path>, usize),
    verbose: bool,
}

/// The shape of one written sample (`len` values): `out`'s output dims without the batch dim,
/// or `[len]` when those do not hold `len` values.
fn sample_row_shape(out: &Model<'_>, len: usize) -> Vec<usize> {
    let dims: Vec<usize> = out
        .output_shape()
        .dims()
        .filter_map(|d| match d {
            flowrt::format::Dim::Fixed(n) => usize::try_from(n).ok(),
            flowrt::format::Dim::Batch => None,
        })
        .collect();
    if dims.iter().product::<usize>() == len {
        dims
    } else {
        vec![len]
    }
}

/// With `sample --png`: the shape of one written sample ([`sample_row_shape`]), checked
/// drawable before sampling.
fn png_rows(a: &SampleArgs<'_>, out: &Model<'_>, len: usize) -> Result<Option<Vec<usize>>> {
    if a.png.is_none() {
        return Ok(None);
    }
    let rows = sample_row_shape(out, len);
    flowrt_export::plot::check_png_rows(&rows)?;
    Ok(Some(rows))
}

/// Writes `sample --png` (when asked for) and says what it drew.
fn write_sample_png(a: &SampleArgs<'_>, rows: Option<&[usize]>, data: &[f32]) -> Result<()> {
    if let (Some(p), Some(rows)) = (a.png, rows) {
        let drawn = flowrt_export::plot::samples_png(p, data, rows)?;
        println!("png: {drawn} -> {}", p.display());
    }
    Ok(())
}

/// Reads `[N, ...]` rows of the model's state (`what`: noise, data) from an .npy file.
fn read_rows(p: &Path, m: &Model<'_>, what: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    let dim = m.state_dim();
    let (data, shape) = npy::read_f32(p)?;
    let row: usize = shape.iter().skip(1).product();
    if shape.len() < 2 || row != dim {
        let x_shape = m
            .inputs()
            .find(|i| {
                matches!(
                    i.role,
                    flowrt::format::InputRole::X | flowrt::format::InputRole::Xt
                )
            })
            .map(|i| i.shape.to_string().trim().to_string())
            .unwrap_or_default();
        bail!(
            "{}: {what} shape {:?} does not fit the model's state (rows of {dim} values, \
             input shape {x_shape})",
            p.display(),
            shape
        );
    }
    Ok((data, shape))
}

/// Runs `f` with the chosen backend's raw network for up to `rows` rows per evaluation.
fn with_net<R>(
    m: &Model<'_>,
    (backend, onnx, threads): (Backend, Option<&Path>, usize),
    rows: usize,
    f: impl FnOnce(&mut dyn ConditionalField) -> Result<R, flowrt::Error>,
) -> Result<R> {
    match backend {
        Backend::Wgpu | Backend::Cuda => {
            bail!(
                "--backend {} is available for sample and bench",
                backend_name(backend)
            )
        }
        Backend::Cpu | Backend::Auto => {
            if onnx.is_some() {
                bail!("--onnx is only used with --backend ort");
            }
            let need = m.required_arena_bytes(rows).map_err(|e| anyhow!("{e}"))?;
            let mut arena = AlignedBytes::try_zeroed(need)
                .ok_or_else(|| anyhow!("cannot allocate the {need}-byte arena for {rows} rows"))?;
            let mut field = flowrt::exec::CpuField::new(m, rows, arena.as_mut_slice())
                .map_err(|e| anyhow!("{e}"))?;
            f(&mut field).map_err(|e| anyhow!("sampling failed: {e}"))
        }
        Backend::Ort => {
            let mut session = flowrt_export::bench::open_ort(m, onnx, threads)?;
            let mut field = session.field(rows).map_err(|e| anyhow!("{e}"))?;
            match f(&mut field) {
                Ok(r) => Ok(r),
                Err(e) => match field.take_error() {
                    Some(ort) => Err(anyhow!("sampling failed: {ort}")),
                    None => Err(anyhow!("sampling failed: {e}")),
                },
            }
        }
    }
}

/// Integrates `x` with `net` under the plan: conditioned, and guided when `guided` is set.
#[allow(clippy::too_many_arguments)]
fn run_plan(
    m: &Model<'_>,
    net: &mut dyn ConditionalField,
    plan: &flowrt_export::solve::Plan,
    grid: &dyn flowrt::grid::TimeGrid,
    x: &mut [f32],
    cond: flowrt::field::Conditioning<'_>,
    guided: Option<(flowrt::guidance::Guidance, flowrt::field::Conditioning<'_>)>,
    trajectory: Option<&mut flowrt_export::solve::Trajectory>,
) -> Result<flowrt_export::solve::SolveReport, flowrt::Error> {
    let conv = m.time_convention();
    if conv.second != flowrt::time::SecondTime::None {
        if plan.method != Method::Euler {
            return Err(flowrt::Error::BadSolverConfig {
                what: "a model with a second time input (mean flow, shortcut) samples with its \
                       own one-step rule: use --method euler",
            });
        }
        if guided.is_some() {
            return Err(flowrt::Error::BadSolverConfig {
                what: "guidance is not available for models with a second time input",
            });
        }
        let mut v = vec![0f32; x.len()];
        let mut none = flowrt::solver::NoObserver;
        let observer = flowrt_export::solve::observer(trajectory, &mut none, x, grid);
        flowrt::fewstep::sample_two_time(net, &conv, &cond, grid, x, &mut v, observer)?;
        return Ok(flowrt_export::solve::SolveReport {
            steps: grid.steps(),
            evaluations: grid.steps(),
            ..Default::default()
        });
    }
    match guided {
        None => {
            let mut f = flowrt::field::Conditioned { field: net, cond };
            flowrt_export::solve::integrate(conv, &mut f, plan, grid, x, trajectory)
        }
        Some((g, doubled)) => {
            let dim = m.state_dim();
            let batch = x.len() / dim;
            let n2 = flowrt::guidance::scratch_len(batch, dim).unwrap_or(0);
            let (mut x2, mut v2) = (vec![0f32; n2], vec![0f32; n2]);
            let mut cfg = flowrt::guidance::CfgField::new(
                net,
                conv,
                g,
                batch,
                dim,
                m.cond_dim().unwrap_or(0),
                doubled,
                &mut x2,
                &mut v2,
            )?;
            // CfgField applies the convention itself.
            flowrt_export::solve::integrate(
                flowrt::time::TimeConvention::default(),
                &mut cfg,
                plan,
                grid,
                x,
                trajectory,
            )
        }
    }
}

/// The GPU backend of `b`, if it is one.
fn gpu_of(b: Backend) -> Option<flowrt_cubecl::GpuBackend> {
    match b {
        Backend::Wgpu => Some(flowrt_cubecl::GpuBackend::Wgpu),
        Backend::Cuda => Some(flowrt_cubecl::GpuBackend::Cuda),
        _ => None,
    }
}

/// Resolves `auto` for `rows` rows per evaluation (printing the choice and its reason with
/// `verbose`); other backends are returned as they are.
fn resolve_backend(b: Backend, m: &Model<'_>, rows: usize, verbose: bool) -> Backend {
    if b != Backend::Auto {
        return b;
    }
    let sel = flowrt_cubecl::select::choose(m, rows);
    if verbose {
        println!("backend auto: {} ({})", sel.backend.name(), sel.reason);
    }
    match sel.backend {
        flowrt_cubecl::select::Chosen::Cpu => Backend::Cpu,
        flowrt_cubecl::select::Chosen::Gpu(flowrt_cubecl::GpuBackend::Wgpu) => Backend::Wgpu,
        flowrt_cubecl::select::Chosen::Gpu(flowrt_cubecl::GpuBackend::Cuda) => Backend::Cuda,
    }
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Cpu => "cpu",
        Backend::Ort => "ort",
        Backend::Wgpu => "wgpu",
        Backend::Cuda => "cuda",
        Backend::Auto => "auto",
    }
}

fn sample(a: &SampleArgs<'_>) -> Result<()> {
    let bytes = read_frt(a.path)?;
    let m = load(&bytes, a.path)?;
    let dim = m.state_dim();
    let (mut x, shape) = match (a.noise, a.seeded) {
        (Some(p), _) => read_rows(p, &m, "noise")?,
        (None, Some((seed, num))) => {
            if num == 0 {
                bail!("--num must be at least 1");
            }
            let len = num
                .checked_mul(dim)
                .ok_or_else(|| anyhow!("--num {num} is too large"))?;
            let mut data = Vec::new();
            data.try_reserve_exact(len)
                .map_err(|_| anyhow!("--num {num} is too large: cannot allocate the noise"))?;
            data.resize(len, 0f32);
            flowrt::rng::fill_normal(seed, &mut data);
            (data, vec![num, dim])
        }
        (None, None) => bail!("give the noise with --noise Z.npy, or --seed S --num N"),
    };
    let batch = shape[0];
    let plan = a.solve.plan(&m)?;
    let axis = m.time_convention().axis;
    let grid = plan.grid.grid(axis)?;
    let inputs = flowrt_export::conditioning::load(&m, batch, &a.conditioning.cond_args())?;
    let guided = a.conditioning.guidance(&m, &inputs)?;
    let mut traj = a
        .trajectory
        .map(|_| flowrt_export::solve::Trajectory::default());
    if a.sde.sde.is_some() {
        if traj.is_some() {
            bail!("--trajectory is not available with --sde");
        }
        if guided.is_some() {
            bail!("--guidance is not available with --sde");
        }
    }
    if let Some(p) = m.pipeline() {
        return sample_pipeline(a, &m, &p, &plan, &grid, x, &shape);
    }
    let png = png_rows(a, &m, dim)?;
    let start = Instant::now();
    let rows = if guided.is_some() { 2 * batch } else { batch };
    let cpu_only = a.sde.sde.is_some() || a.backend.1.is_some();
    let backend = match a.backend.0 {
        Backend::Auto if cpu_only => {
            if a.verbose {
                println!("backend auto: cpu (--sde and --onnx run on the CPU)");
            }
            Backend::Cpu
        }
        b => resolve_backend(b, &m, rows, a.verbose),
    };
    let report = if let Some(gpu) = gpu_of(backend) {
        if cpu_only {
            bail!(
                "--sde and --onnx are not available with --backend {} (use cpu or ort)",
                backend_name(backend)
            );
        }
        let req = flowrt_cubecl::sample::SampleRequest {
            method: plan.method,
            grid: &grid,
            tol: plan.tol,
            cond: inputs.as_conditioning(),
            guided: guided.as_ref().map(|(g, d)| (*g, d.as_conditioning())),
        };
        let mut rec = traj
            .as_ref()
            .map(|_| flowrt_cubecl::sample::Recorder::default());
        let x0 = traj.as_ref().map(|_| x.clone()).unwrap_or_default();
        let r = flowrt_export::gpu::sample(gpu, &m, &mut x, &req, rec.as_mut())?;
        if let (Some(t), Some(rec)) = (traj.as_mut(), rec) {
            // The initial state first, as the CPU path records it.
            t.states = x0;
            t.times = vec![flowrt::grid::TimeGrid::point(&grid, 0).unwrap_or(f32::NAN)];
            t.states.extend_from_slice(&rec.states);
            t.times.extend_from_slice(&rec.times);
        }
        if a.verbose {
            println!("{}", flowrt_export::gpu::describe(&r));
        }
        flowrt_export::solve::SolveReport {
            steps: r.steps,
            rejected: r.rejected,
            evaluations: r.evaluations,
        }
    } else {
        let mut sde_error: Option<anyhow::Error> = None;
        let report = with_net(&m, (backend, a.backend.1, a.backend.2), rows, |net| {
            if let Some(schedule) = &a.sde.sde {
                let mut f = flowrt::field::Conditioned {
                    field: net,
                    cond: inputs.as_conditioning(),
                };
                return flowrt_export::solve::sample_sde(
                    &m, &mut f, a.sde, schedule, &grid, &mut x,
                )
                .map_err(|e| {
                    sde_error.replace(e);
                    flowrt::Error::BadArgument {
                        what: "SDE sampling failed",
                    }
                });
            }
            run_plan(
                &m,
                net,
                &plan,
                &grid,
                &mut x,
                inputs.as_conditioning(),
                guided.as_ref().map(|(g, d)| (*g, d.as_conditioning())),
                traj.as_mut(),
            )
        });
        match (report, sde_error.take()) {
            (_, Some(e)) => return Err(e),
            (r, None) => r?,
        }
    };
    let elapsed = start.elapsed();
    npy::write_f32(a.output, &x, &shape)?;
    if let (Some(p), Some(t)) = (a.trajectory, &traj) {
        let mut tshape = vec![t.times.len()];
        tshape.extend_from_slice(&shape);
        npy::write_f32(p, &t.states, &tshape)?;
    }
    let guidance = match &guided {
        Some((g, _)) => format!(
            ", guidance w={}{}",
            g.scale,
            g.interval
                .map_or(String::new(), |(lo, hi)| format!(" on [{lo}, {hi}]"))
        ),
        None => String::new(),
    };
    println!(
        "sampled {batch} x {dim} with {} x {} steps{} on grid {} ({} velocity evaluations{guidance}, backend {}) in {:.3} ms -> {}",
        if a.sde.sde.is_some() { "euler-maruyama" } else { plan.method.name() },
        report.steps,
        if report.rejected > 0 { format!(" (+{} rejected)", report.rejected) } else { String::new() },
        plan.grid.label,
        report.evaluations,
        backend_name(backend),
        elapsed.as_secs_f64() * 1e3,
        a.output.display()
    );
    if let Some(p) = a.trajectory {
        println!(
            "trajectory: {} states -> {}",
            traj.map_or(0, |t| t.times.len()),
            p.display()
        );
    }
    if a.ascii {
        print!("{}", flowrt_export::plot::ascii_scatter(&x, dim, 64, 20));
    }
    write_sample_png(a, png.as_deref(), &x)?;
    Ok(())
}

fn invert(
    path: &Path,
    data: &Path,
    solve: &flowrt_export::solve::SolveArgs,
    conditioning: &flowrt_export::conditioning::CondFlags,
    output: &Path,
    backend: (Backend, Option<&Path>, usize),
) -> Result<()> {
    let bytes = read_frt(path)?;
    let m = load(&bytes, path)?;
    let (x, shape) = read_rows(data, &m, "data")?;
    let batch = shape[0];
    let plan = solve.plan(&m)?;
    let axis = m.time_convention().axis;
    let forward = plan.grid.points(axis)?;
    let backward = flowrt_export::solve::reversed(&forward)?;
    let back_grid = flowrt::grid::Explicit::new(&backward).map_err(|e| anyhow!("{e}"))?;
    let fwd_grid = flowrt::grid::Explicit::new(&forward).map_err(|e| anyhow!("{e}"))?;
    let inputs = flowrt_export::conditioning::load(&m, batch, &conditioning.cond_args())?;
    let guided = conditioning.guidance(&m, &inputs)?;
    let rows = if guided.is_some() { 2 * batch } else { batch };
    let mut z = x.clone();
    let mut again = Vec::new();
    let report = with_net(&m, backend, rows, |net| {
        let g = || guided.as_ref().map(|(g, d)| (*g, d.as_conditioning()));
        let c = inputs.as_conditioning();
        let r = run_plan(&m, net, &plan, &back_grid, &mut z, c, g(), None)?;
        again = z.clone();
        run_plan(&m, net, &plan, &fwd_grid, &mut again, c, g(), None)?;
        Ok(r)
    })?;
    npy::write_f32(output, &z, &shape)?;
    let max = flowrt_export::max_abs_diff(&again, &x);
    let rms = (again
        .iter()
        .zip(&x)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        / x.len() as f64)
        .sqrt();
    println!(
        "inverted {batch} x {} with {} x {} steps on grid {} ({} velocity evaluations) -> {}",
        m.state_dim(),
        plan.method.name(),
        report.steps,
        plan.grid.label,
        report.evaluations,
        output.display()
    );
    println!("round trip data -> noise -> data: max abs error {max:.3e}, rms {rms:.3e}");
    Ok(())
}

fn rollout(
    path: &Path,
    init: &Path,
    steps: usize,
    output: &Path,
    backend: (Backend, Option<&Path>, usize),
) -> Result<()> {
    let bytes = read_frt(path)?;
    let m = load(&bytes, path)?;
    if m.inputs().any(|i| {
        matches!(
            i.role,
            flowrt::format::InputRole::T
                | flowrt::format::InputRole::Xt
                | flowrt::format::InputRole::Step
        )
    }) {
        bail!("rollout needs a state-to-state model (input x only); this one has a time input");
    }
    let (mut x, shape) = read_rows(init, &m, "initial state")?;
    let batch = shape[0];
    let mut traj = flowrt_export::solve::Trajectory::default();
    traj.states.extend_from_slice(&x);
    traj.times.push(0.0);
    let start = Instant::now();
    with_net(&m, backend, batch, |net| {
        let mut next = vec![0f32; x.len()];
        flowrt::fewstep::rollout(
            net,
            &flowrt::field::Conditioning::default(),
            steps,
            &mut x,
            &mut next,
            &mut traj,
        )
    })?;
    let elapsed = start.elapsed();
    let mut tshape = vec![traj.times.len()];
    tshape.extend_from_slice(&shape);
    npy::write_f32(output, &traj.states, &tshape)?;
    println!(
        "rolled out {batch} x {} for {steps} steps ({steps} evaluations, backend {}) in {:.3} ms -> {} {:?}",
        m.state_dim(),
        backend_name(backend.0),
        elapsed.as_secs_f64() * 1e3,
        output.display(),
        tshape
    );
    Ok(())
}

/// `sample` of a multi-network file (blocks, refiner, decoder) on the CPU executor.
fn sample_pipeline(
    a: &SampleArgs<'_>,
    m: &Model<'_>,
    p: &flowrt::pipeline::Pipeline<'_>,
    plan: &flowrt_export::solve::Plan,
    grid: &dyn flowrt::grid::TimeGrid,
    mut x: Vec<f32>,
    shape: &[usize],
) -> Result<()> {
    if !matches!(a.backend.0, Backend::Cpu | Backend::Auto)
        || a.sde.sde.is_some()
        || a.trajectory.is_some()
    {
        bail!("multi-network files sample on the CPU backend, without --sde or --trajectory");
    }
    if m.inputs().any(|i| i.role.is_conditioning()) {
        bail!("multi-network files with conditioning inputs are not supported yet");
    }
    let png = png_rows(a, p.decoder().unwrap_or(m), p.output_dim())?;
    let batch = shape[0];
    let need = flowrt::pipeline::pipeline_arena_bytes(p, plan.method, batch)
        .map_err(|e| anyhow!("{e}"))?;
    let mut arena = AlignedBytes::try_zeroed(need)
        .ok_or_else(|| anyhow!("cannot allocate the {need}-byte arena for {batch} rows"))?;
    let out_dim = p.output_dim();
    let mut decoded = vec![
        0f32;
        if p.decoder().is_some() {
            batch * out_dim
        } else {
            0
        }
    ];
    let start = Instant::now();
    flowrt::pipeline::sample_pipeline(
        p,
        plan.method,
        grid,
        &mut x,
        p.decoder().map(|_| &mut decoded[..]),
        arena.as_mut_slice(),
    )
    .map_err(|e| anyhow!("sampling failed: {e}"))?;
    let elapsed = start.elapsed();
    let (data, out_shape) = if p.decoder().is_some() {
        (&decoded, vec![batch, out_dim])
    } else {
        (&x, shape.to_vec())
    };
    npy::write_f32(a.output, data, &out_shape)?;
    let stages: Vec<String> = p
        .stages()
        .map(|(k, _)| match k {
            flowrt::pipeline::StageKind::Block { a, b } => format!("block [{a}, {b}]"),
            flowrt::pipeline::StageKind::Refiner { from, to } => format!("refiner [{from}, {to})"),
            flowrt::pipeline::StageKind::Decoder => "decoder".to_string(),
        })
        .collect();
    println!(
        "sampled {batch} x {} with {} x {} steps on grid {} through a pipeline ({}; arena {need} bytes) in {:.3} ms -> {} {:?}",
        m.state_dim(),
        plan.method.name(),
        grid.steps(),
        plan.grid.label,
        stages.join(", "),
        elapsed.as_secs_f64() * 1e3,
        a.output.display(),
        out_shape
    );
    write_sample_png(a, png.as_deref(), data)?;
    Ok(())
}
