//! The `flowrt` command-line tool: export, inspect and sample flow models.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use flowrt::format::AlignedBytes;
use flowrt::grid::Uniform;
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
    /// Integrate noise to samples: t = 0 (noise) -> 1 (data).
    Sample {
        /// The .frt file.
        model: PathBuf,
        /// Noise as .npy (float32 or float64, shape [N, ...state dims]).
        #[arg(long, conflicts_with_all = ["seed", "num"])]
        noise: Option<PathBuf>,
        /// Draw the noise with flowrt's deterministic RNG from this seed.
        #[arg(long, requires = "num")]
        seed: Option<u64>,
        /// Number of samples to draw with --seed.
        #[arg(long, requires = "seed")]
        num: Option<usize>,
        /// Solver: euler, midpoint, heun, ralston, rk4 (classic), rk4-38 (torchdiffeq's rk4).
        #[arg(long, default_value = "euler")]
        method: String,
        /// Number of uniform steps over [0, 1].
        #[arg(long, default_value_t = 1)]
        steps: usize,
        /// Output .npy (float32, same shape as the noise).
        #[arg(short, long)]
        output: PathBuf,
        /// Also draw the first two coordinates of the samples in the terminal.
        #[arg(long)]
        ascii: bool,
        /// Velocity backend: flowrt's CPU executor, or ONNX Runtime (same solver loop).
        #[arg(long, value_enum, default_value_t = Backend::Cpu)]
        backend: Backend,
        /// With --backend ort: use this ONNX file instead of the one embedded in the .frt.
        #[arg(long, value_name = "PATH")]
        onnx: Option<PathBuf>,
        /// With --backend ort: ONNX Runtime intra-op threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Class labels for a model with a `label` input (.npy int64 / int32, or floats with
        /// integer values, shape [N]).
        #[arg(long, value_name = "Y.npy", conflicts_with = "label_value")]
        label: Option<PathBuf>,
        /// One class label for every sample (e.g. with --seed/--num).
        #[arg(long, value_name = "K", allow_negative_numbers = true)]
        label_value: Option<i64>,
        /// Conditioning vectors for a model with a `cond` input (.npy float, shape [N, C]).
        #[arg(long, value_name = "C.npy")]
        cond: Option<PathBuf>,
        /// Value of a model's embedded `guidance` input (Flux-style), for every sample.
        #[arg(long, value_name = "G", allow_negative_numbers = true)]
        guidance_value: Option<f32>,
    },
    /// Time flowrt's CPU backend against ONNX Runtime in one process (same noise, solver
    /// loop and threads); the last line is `ratio flowrt/ort: R` (median over median).
    Bench {
        /// The .frt file (with an embedded ONNX model, or pass --onnx).
        model: PathBuf,
        /// What to compare against (only `ort`).
        #[arg(long, value_enum, default_value_t = Against::Ort)]
        against: Against,
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
}

/// Velocity backends of `sample`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// flowrt's own CPU executor.
    Cpu,
    /// ONNX Runtime (flowrt-ort), from the embedded ONNX or --onnx.
    Ort,
}

/// What `bench` compares flowrt's CPU backend with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Against {
    /// ONNX Runtime.
    Ort,
}

fn main() -> ExitCode {
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
        } => export(&model, &output, &roles, embed_onnx),
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
            method,
            steps,
            output,
            ascii,
            backend,
            onnx,
            threads,
            label,
            label_value,
            cond,
            guidance_value,
        } => sample(
            &model,
            noise.as_deref(),
            seed.zip(num),
            &method,
            steps,
            &output,
            ascii,
            (backend, onnx.as_deref(), threads),
            &flowrt_export::conditioning::CondArgs {
                label: label.as_deref(),
                label_value,
                cond: cond.as_deref(),
                guidance_value,
            },
        ),
        Command::Bench {
            model,
            against: Against::Ort,
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
            };
            bench(&model, onnx.as_deref(), &cfg)
        }
    }
}

fn bench(path: &Path, onnx: Option<&Path>, cfg: &flowrt_export::bench::BenchConfig) -> Result<()> {
    let bytes = read_frt(path)?;
    let m = load(&bytes, path)?;
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

fn export(model: &Path, output: &Path, role_args: &[String], embed_onnx: bool) -> Result<()> {
    let roles = role_args
        .iter()
        .map(|r| roles::parse_role_override(r))
        .collect::<Result<_>>()?;
    let bytes = flowrt_export::export_onnx(model, &ExportOptions { roles, embed_onnx })?;
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
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(AlignedBytes::copy_from(&bytes))
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
            "label_classes": m.label_classes(),
            "cond_dim": m.cond_dim(),
            "nodes": m.node_count(),
            "ops": op_counts.iter().map(|(n, c)| serde_json::json!({"op": n, "count": c})).collect::<Vec<_>>(),
            "parameters": m.param_count(),
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

#[allow(clippy::too_many_arguments)]
fn sample(
    path: &Path,
    noise: Option<&Path>,
    seeded: Option<(u64, usize)>,
    method: &str,
    steps: usize,
    output: &Path,
    ascii: bool,
    (backend, onnx, threads): (Backend, Option<&Path>, usize),
    cond_args: &flowrt_export::conditioning::CondArgs<'_>,
) -> Result<()> {
    let method: Method = method
        .parse()
        .map_err(|e| anyhow!("--method {method}: {e}"))?;
    let bytes = read_frt(path)?;
    let m = load(&bytes, path)?;
    let x_shape = m
        .inputs()
        .find(|i| {
            matches!(
                i.role,
                flowrt::format::InputRole::X | flowrt::format::InputRole::Xt
            )
        })
        .map(|i| i.shape)
        .ok_or_else(|| anyhow!("model has no state input"))?;
    let dim = m.state_dim();
    let (mut x, shape) = match (noise, seeded) {
        (Some(p), _) => {
            let (data, shape) = npy::read_f32(p)?;
            let row: usize = shape.iter().skip(1).product();
            if shape.len() < 2 || row != dim {
                bail!(
                    "{}: noise shape {:?} does not fit the model's state (rows of {dim} values, \
                     input shape {x_shape})",
                    p.display(),
                    shape
                );
            }
            (data, shape)
        }
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
    let conditioning = flowrt_export::conditioning::load(&m, batch, cond_args)?;
    let cond = conditioning.as_conditioning();
    let grid = Uniform::new(steps, 0.0, 1.0).map_err(|e| anyhow!("--steps {steps}: {e}"))?;
    let need =
        flowrt::sampler::sample_arena_bytes(&m, method, batch).map_err(|e| anyhow!("{e}"))?;
    let elapsed = match backend {
        Backend::Cpu => {
            if onnx.is_some() {
                bail!("--onnx is only used with --backend ort");
            }
            let mut arena = AlignedBytes::try_zeroed(need)
                .ok_or_else(|| anyhow!("cannot allocate the {need}-byte arena for {batch} rows"))?;
            let start = Instant::now();
            flowrt::sampler::sample_cond(&m, method, &grid, &mut x, &cond, arena.as_mut_slice())
                .map_err(|e| anyhow!("sampling failed: {e}"))?;
            start.elapsed()
        }
        Backend::Ort => {
            let mut session = flowrt_export::bench::open_ort(&m, onnx, threads)?;
            let start = Instant::now();
            flowrt_ort::sample_cond(&mut session, method, &grid, &mut x, &cond)
                .map_err(|e| anyhow!("sampling failed: {e}"))?;
            start.elapsed()
        }
    };
    npy::write_f32(output, &x, &shape)?;
    println!(
        "sampled {batch} x {dim} with {} x {steps} steps ({} velocity evaluations, backend {}) in {:.3} ms, arena {need} bytes -> {}",
        method.name(),
        steps * method.stages(),
        match backend {
            Backend::Cpu => "cpu",
            Backend::Ort => "ort",
        },
        elapsed.as_secs_f64() * 1e3,
        output.display()
    );
    if ascii {
        print!("{}", flowrt_export::plot::ascii_scatter(&x, dim, 64, 20));
    }
    Ok(())
}
