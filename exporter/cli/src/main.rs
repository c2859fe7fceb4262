//! The `flowrt` command-line tool: export, inspect and sample flow models. A thin layer: the
//! arguments become a [`flowrt_host::Request`], the host API runs it, and this file writes
//! `.npy` / PNG files and the summary lines.
// The argument structs' doc comments are clap's --help texts, written for a terminal: `[N]`
// there is a shape, not a rustdoc link.
#![allow(rustdoc::broken_intra_doc_links)]

mod args;
mod bench;
mod conformance;
mod eval;
mod export;
mod inspect;
mod plot;
mod process;
mod progress;
mod summary;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use flowrt_export::{npy, output};
use flowrt_host::{Backend, Frt, Noise, Samples};

use args::{read_rows, BackendArg, CondFlags, SdeArgs, SolveArgs};

#[derive(Parser)]
#[command(
    name = "flowrt",
    version,
    about = "Run flow-matching / rectified-flow models anywhere",
    after_help = "Runs longer than a second (sample, invert, rollout, bench, export) draw a progress bar on \
                  stderr when it is a terminal, never into a pipe or a log; \
                  FLOWRT_PROGRESS_DELAY_MS=N shows it after N ms instead. docs/cli.md has more."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert an ONNX velocity network into a .frt file.
    Export(export::ExportArgs),
    /// Print a .frt file's signature, its graph by op family (nodes, parameters, MACs a
    /// sample) and its memory plan (tensors, peak live activations, arena sizes, weights by
    /// stored type).
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
    /// Integrate noise to samples (the model's noise end to its data end); a progress bar
    /// on a terminal's stderr for runs over a second.
    Sample(SampleArgs),
    /// Evaluate the network once on given inputs (.npy by input name or role) and write its
    /// raw output: no time convention, no solver. For checking a .frt against its source
    /// framework.
    Eval(eval::EvalArgs),
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
        #[command(flatten)]
        backend: HostBackend,
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
        solve: SolveArgs,
        #[command(flatten)]
        conditioning: CondFlags,
        /// Output .npy: the recovered noise.
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        backend: HostBackend,
    },
    /// Time flowrt's CPU backend against ONNX Runtime in one process (same noise, solver
    /// loop and threads); the last line is `ratio flowrt/ort: R` (median over median).
    Bench(bench::BenchArgs),
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

/// The backend of `invert` and `rollout` (host-memory backends).
#[derive(clap::Args)]
struct HostBackend {
    /// Velocity backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    backend: BackendArg,
    /// With --backend ort: use this ONNX file instead of the embedded one.
    #[arg(long, value_name = "PATH")]
    onnx: Option<PathBuf>,
}

/// `flowrt sample`.
#[derive(clap::Args)]
struct SampleArgs {
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
    solve: SolveArgs,
    #[command(flatten)]
    sde: SdeArgs,
    #[command(flatten)]
    conditioning: CondFlags,
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
    /// Also draw the paths of the first 64 samples (2-D models only) from noise to data as
    /// a 512 x 512 PNG: one polyline per sample shaded by time (light blue first step to
    /// light orange last), a blue square at its noise end and a red one at its sample.
    #[arg(long, value_name = "PATH")]
    trajectory_png: Option<PathBuf>,
    /// Velocity backend: flowrt's CPU executor, ONNX Runtime (same solver loop), flowrt's
    /// GPU kernels (wgpu, cuda: the whole loop on the device), or auto (a GPU when one
    /// is found and the model is large enough for it to win, else the CPU; -v says why).
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Say which backend ran and why (and, on a GPU, the device and kernel launches).
    #[arg(short, long)]
    verbose: bool,
    /// With --backend ort: use this ONNX file instead of the one embedded in the .frt.
    #[arg(long, value_name = "PATH")]
    onnx: Option<PathBuf>,
    /// CPU threads: flowrt's executor splits each evaluation's rows across them (the samples
    /// are byte-identical to one thread), ONNX Runtime gets as many intra-op threads.
    /// 0 (default): the machine's physical cores.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn main() -> ExitCode {
    process::default_sigpipe();
    process::quiet_vulkan_loader();
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
        Command::Export(a) => export::run(a),
        Command::Inspect {
            model,
            json,
            batches,
        } => inspect::run(&model, json, &batches),
        Command::Sample(a) => sample(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Rollout {
            model,
            init,
            steps,
            output,
            backend,
        } => rollout(&model, &init, steps, &output, &backend),
        Command::Invert {
            model,
            data,
            solve,
            conditioning,
            output,
            backend,
        } => invert(&model, &data, &solve, &conditioning, &output, &backend),
        Command::Bench(a) => bench::command(a),
        Command::Conformance {
            data,
            out,
            filter,
            verbose,
        } => conformance::run(&data, out.as_deref(), filter.as_deref(), verbose),
    }
}

fn sample(a: &SampleArgs) -> Result<()> {
    // Every output is checked before the run, and all are renamed into place together.
    output::check_writable(&a.output, "-o")?;
    if let Some(p) = &a.trajectory {
        output::check_writable(p, "--trajectory")?;
    }
    if let Some(p) = &a.png {
        output::check_writable(p, "--png")?;
    }
    if let Some(p) = &a.trajectory_png {
        output::check_writable(p, "--trajectory-png")?;
    }
    let frt = Frt::open(&a.model)?;
    let m = frt.model();
    let dim = m.state_dim();
    if a.trajectory_png.is_some() {
        if a.sde.sde.is_some() {
            bail!("--trajectory-png is not available with --sde (it records the ODE's states)");
        }
        plot::check_trajectory_png(dim)?;
    }
    let (noise, shape) = match (&a.noise, a.seed.zip(a.num)) {
        (Some(p), _) => {
            let (x, shape) = read_rows(p, &m, "noise")?;
            (Noise::Given(x), shape)
        }
        (None, Some((seed, num))) => (Noise::Seed { seed, num }, vec![num, dim]),
        (None, None) => bail!("give the noise with --noise Z.npy, or --seed S --num N"),
    };
    let batch = shape[0];
    let mut req = args::request(
        &a.solve,
        &a.conditioning,
        Some(&a.sde),
        a.onnx.as_deref(),
        a.threads,
        batch,
    )?;
    req.trajectory = a.trajectory.is_some() || a.trajectory_png.is_some();
    let rows = flowrt_host::sample_row_shape(&m);
    if a.png.is_some() {
        plot::check_png_rows(&rows)?;
    }
    let bar = progress::Bar::new(&format!("sampling {batch} x {dim}"), None);
    let out = frt.sample_with_progress(a.backend.into(), &req, noise, &mut |p| bar.update(p))?;
    bar.finish();
    let r = &out.report;
    if a.verbose {
        r.notes.iter().for_each(|n| println!("{n}"));
    }
    let out_shape = if r.pipeline.is_some() {
        let mut s = vec![batch];
        s.extend_from_slice(&out.row_shape);
        s
    } else {
        shape.clone()
    };
    let mut staged = output::Staged::default();
    staged.put(&a.output, &npy::encode_f32(&out.data, &out_shape)?)?;
    let mut trajectory = None;
    if let (Some(p), Some(t)) = (&a.trajectory, &out.trajectory) {
        let mut tshape = vec![t.times.len()];
        tshape.extend_from_slice(&shape);
        staged.put(p, &npy::encode_f32(&t.states, &tshape)?)?;
        trajectory = Some((t.times.len(), p));
    }
    let paths = match (&a.trajectory_png, &out.trajectory) {
        (Some(p), Some(t)) => Some((
            plot::stage_trajectory_png(&mut staged, p, &t.states, t.times.len(), batch)?,
            p,
        )),
        _ => None,
    };
    let drawn = match &a.png {
        Some(p) => Some((plot::samples_png(&mut staged, p, &out.data, &rows)?, p)),
        None => None,
    };
    staged.commit()?;
    if let Some((n, p)) = trajectory {
        println!("trajectory: {n} states -> {}", p.display());
    }
    print_sample_summary(&out, batch, dim, &a.output, &out_shape);
    if a.ascii {
        print!("{}", plot::ascii_scatter(&out.data, dim, 64, 20));
    }
    if let Some((drawn, p)) = drawn {
        println!("png: {drawn} -> {}", p.display());
    }
    if let Some((n, p)) = paths {
        println!(
            "trajectory png: paths of {n} of {batch} samples -> {}",
            p.display()
        );
    }
    Ok(())
}

/// The one-line summary of `sample`.
fn print_sample_summary(out: &Samples, batch: usize, dim: usize, path: &Path, shape: &[usize]) {
    let r = &out.report;
    let ms = r.elapsed.as_secs_f64() * 1e3;
    if let Some((stages, arena)) = &r.pipeline {
        println!(
            "sampled {batch} x {dim} with {} x {} steps on grid {} through a pipeline ({stages}; arena {arena} bytes) in {ms:.3} ms -> {} {shape:?}",
            r.method, r.steps, r.grid, path.display()
        );
        return;
    }
    let guidance = match &r.guidance {
        Some(g) => format!(
            ", guidance w={}{}",
            g.scale,
            g.interval
                .map_or(String::new(), |(lo, hi)| format!(" on [{lo}, {hi}]"))
        ),
        None => String::new(),
    };
    let rejected = if r.rejected > 0 {
        format!(" (+{} rejected)", r.rejected)
    } else {
        String::new()
    };
    println!(
        "sampled {batch} x {dim} with {} x {} steps{rejected} on grid {} ({} velocity evaluations{guidance}, backend {}) in {ms:.3} ms -> {}",
        r.method,
        r.steps,
        r.grid,
        r.evaluations,
        r.backend.name(),
        path.display()
    );
}

fn invert(
    path: &Path,
    data: &Path,
    solve: &SolveArgs,
    cond: &CondFlags,
    output: &Path,
    b: &HostBackend,
) -> Result<()> {
    output::check_writable(output, "-o")?;
    let frt = Frt::open(path)?;
    let m = frt.model();
    let (x, shape) = read_rows(data, &m, "data")?;
    let batch = shape[0];
    let req = args::request(solve, cond, None, b.onnx.as_deref(), 1, batch)?;
    let bar = progress::Bar::new("inverting", None);
    let inv =
        frt.invert_with_progress(b.backend.into(), &req, x.clone(), &mut |p| bar.update(p))?;
    bar.finish();
    npy::write_f32(output, &inv.noise, &shape)?;
    let max = flowrt_export::max_abs_diff(&inv.roundtrip, &x);
    let rms = (inv
        .roundtrip
        .iter()
        .zip(&x)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        / x.len() as f64)
        .sqrt();
    let r = &inv.report;
    println!(
        "inverted {batch} x {} with {} x {} steps on grid {} ({} velocity evaluations) -> {}",
        m.state_dim(),
        r.method,
        r.steps,
        r.grid,
        r.evaluations,
        output.display()
    );
    println!("round trip data -> noise -> data: max abs error {max:.3e}, rms {rms:.3e}");
    Ok(())
}

fn rollout(path: &Path, init: &Path, steps: usize, output: &Path, b: &HostBackend) -> Result<()> {
    output::check_writable(output, "-o")?;
    let frt = Frt::open(path)?;
    let req = flowrt_host::Request {
        onnx: b.onnx.clone(),
        ..Default::default()
    };
    let m = frt.model();
    let (x, shape) = read_rows(init, &m, "initial state")?;
    let batch = shape[0];
    let backend: Backend = b.backend.into();
    let bar = progress::Bar::new("rolling out", Some(steps as u64));
    let (traj, r) = frt
        .rollout_with_progress(backend, &req, x, steps, &mut |p| bar.update(p))
        .map_err(|e| anyhow!("{e}"))?;
    bar.finish();
    let mut tshape = vec![traj.times.len()];
    tshape.extend_from_slice(&shape);
    npy::write_f32(output, &traj.states, &tshape).context("writing the trajectory")?;
    println!(
        "rolled out {batch} x {} for {steps} steps ({steps} evaluations, backend {}) in {:.3} ms -> {} {:?}",
        m.state_dim(),
        backend.name(),
        r.elapsed.as_secs_f64() * 1e3,
        output.display(),
        tshape
    );
    Ok(())
}
