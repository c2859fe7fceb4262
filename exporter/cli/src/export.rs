//! `flowrt export`: the flags, turned into [`flowrt_export::ExportOptions`].

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use flowrt::format::{AlignedBytes, NodeOp};
use flowrt::solver::Method;
use flowrt::Model;
use flowrt_export::{roles, ExportOptions};

/// Convert an ONNX velocity network into a .frt file.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The ONNX model (external data files are read from its folder).
    pub model: PathBuf,
    /// Output .frt path.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Role of an ONNX input: NAME=x|t|xt|label|cond|guidance (repeatable; overrides
    /// detection).
    #[arg(long = "role", value_name = "NAME=ROLE")]
    pub roles: Vec<String>,
    /// Also store the source ONNX (external weights inlined) in the .frt, so
    /// `sample --backend ort` and `bench` can run the same artifact with ONNX Runtime.
    #[arg(long)]
    pub embed_onnx: bool,
    /// The model's time axis: t (0 = noise, 1 = data; torchcfm, flow_matching) or sigma
    /// (1 = noise, 0 = data, output noise - x0; SD3, Flux, diffusers).
    #[arg(long, default_value = "t")]
    pub time: String,
    /// The network receives scale * time (1000 for diffusers-style timesteps, 999 for the
    /// official Rectified Flow code).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f32,
    /// The network predicts -dx/dtime (e.g. data - noise on the sigma axis).
    #[arg(long)]
    pub negate_output: bool,
    /// What a few-step model's second time input (role step) receives for a step from t
    /// to r: r, h (= t - r, MeanFlow), step-size (|r - t|) or log2-steps (log2 of
    /// 1/|r - t|, the official shortcut models' dt_base). Default: from the input's name
    /// (r, h, dt_base -> log2-steps, d/dt -> step-size).
    #[arg(long, value_name = "FORM")]
    pub second_time: Option<String>,
    /// Bake a default solver into the file (sample uses it unless told otherwise).
    #[arg(long)]
    pub method: Option<String>,
    /// Bake a default step count into the file.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Bake a default grid into the file (same forms as `sample --grid`).
    #[arg(long, allow_hyphen_values = true)]
    pub grid: Option<String>,
    /// Bake a default classifier-free guidance scale into the file.
    #[arg(long)]
    pub guidance: Option<f32>,
    /// Bake the null (unconditional) label into the file.
    #[arg(long)]
    pub null_label: Option<u32>,
    /// Bake a guidance interval A,B (model time) into the file.
    #[arg(long, value_name = "A,B")]
    pub guidance_interval: Option<String>,
    /// Blockwise flow matching: use the velocity net in FILE.onnx for steps starting at
    /// model times in [A, B] (repeatable; the main model covers the rest).
    #[arg(long = "block", value_name = "A:B=FILE.onnx")]
    pub blocks: Vec<String>,
    /// FlowTurbo-style refiner: use the (light) velocity net in FILE.onnx on steps n with
    /// FROM <= n/steps < TO (e.g. 0.5:1 = the second half).
    #[arg(long = "refiner", value_name = "FROM:TO=FILE.onnx")]
    pub refiners: Vec<String>,
    /// Latent flow matching: a decoder graph (input: the state) applied after the last
    /// step; samples are its output.
    #[arg(long, value_name = "FILE.onnx")]
    pub decoder: Option<PathBuf>,
    /// Store the weights (Dense / Conv / ConvTranspose kernels, Gather tables) as f32, f16,
    /// bf16 or int8 (symmetric, one bfloat16 scale per output channel). Their biases are
    /// stored as bf16 with bf16, else as f16; every other constant stays f32. The runtime
    /// dequantizes on the fly.
    #[arg(long, default_value = "f32", value_name = "TYPE")]
    pub weights: String,
    /// Keep these weights f32 with --weights f16|bf16|int8 (comma-separated names of
    /// weight tensors or of the nodes that read them, as `flowrt inspect --json` lists).
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub keep_f32: Vec<String>,
    /// Keep the names of nodes and inner tensors in the file, for `inspect` and error
    /// messages. Without it only the inputs and output keep their names (the rest show as
    /// indices): names are debugging information, up to several percent of a file.
    #[arg(long)]
    pub keep_names: bool,
    /// Accepted for older scripts: leaving inner names out is now the default.
    #[arg(long, hide = true, conflicts_with = "keep_names")]
    pub strip_names: bool,
    /// Write fixed-size records (format version 1, or 2 with typed weights) instead of
    /// version 3's compact ones, for flowrt runtimes that predate version 3.
    #[arg(long)]
    pub fixed_records: bool,
    /// f32 (default) or int8: full-integer Dense and Conv (needs --weights int8). Each
    /// quantizes its input with a scale calibrated by sampling the f32 model, multiplies in
    /// integers and rescales to f32 once per output. The main network only: --block,
    /// --refiner and --decoder graphs keep f32 activations.
    #[arg(long, default_value = "f32", value_name = "TYPE")]
    pub activations: String,
    /// With --activations int8: on (default) turns SiLU, GELU, sigmoid, tanh, softplus, ELU
    /// and SELU into 255-entry tables read with their int8-quantized input (a few
    /// instructions per value on a microcontroller instead of tens); off keeps them f32.
    #[arg(long, default_value = "on", value_name = "ON|OFF")]
    pub activation_tables: String,
    /// How --weights int8 picks each int8 value: gptq (default: Dense weights rounded
    /// one input at a time, each rounding error moved onto the inputs not yet rounded, as
    /// the model's own activations on sampled trajectories say; other weights and models
    /// that cannot be sampled round to nearest) or nearest.
    #[arg(long, default_value = "gptq", value_name = "HOW")]
    pub rounding: String,
    /// Noise rows sampled to calibrate --rounding gptq and --activations int8.
    #[arg(long, default_value_t = 256)]
    pub calibrate_rows: usize,
    /// Euler steps per calibration trajectory.
    #[arg(long, default_value_t = 16)]
    pub calibrate_steps: usize,
    /// Give up importing the ONNX file (tract's parse, analysis and lowering) after this
    /// many seconds: a malformed graph can make the importer loop.
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    pub import_timeout: f64,
}

/// Runs `flowrt export`.
///
/// Errors: bad flags, or anything the exporter refuses (naming node, op and reason).
pub fn run(a: ExportArgs) -> Result<()> {
    let ExportArgs {
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
        weights,
        keep_f32,
        keep_names,
        strip_names: _,
        fixed_records,
        activations,
        activation_tables,
        rounding,
        calibrate_rows,
        calibrate_steps,
        import_timeout,
    } = a;
    let import_timeout = std::time::Duration::try_from_secs_f64(import_timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            anyhow!("--import-timeout {import_timeout}: expected a positive number of seconds")
        })?;
    let calibration = flowrt_export::calibration::Calibration {
        rows: calibrate_rows,
        steps: calibrate_steps,
        ..Default::default()
    };

    let time = flowrt::time::TimeConvention {
        axis: flowrt::time::TimeAxis::parse(&time).map_err(|e| anyhow!("--time {time}: {e}"))?,
        scale: time_scale,
        negate_output,
        second: match &second_time {
            Some(f) => {
                flowrt::time::SecondTime::parse(f).map_err(|e| anyhow!("--second-time {f}: {e}"))?
            }
            None => flowrt::time::SecondTime::None,
        },
    };
    time.validate()
        .map_err(|e| anyhow!("--time-scale {time_scale}: {e}"))?;
    let defaults = solver_defaults(
        time.axis,
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
        weights: flowrt_export::weights::WeightChoice {
            kind: flowrt_export::weights::WeightKind::parse(&weights)?,
            keep_f32,
        },
        keep_names,
        layout: if fixed_records {
            flowrt::write::Layout::Fixed
        } else {
            flowrt::write::Layout::Compact
        },
        exact_activations: match activation_tables.as_str() {
            "on" => false,
            "off" => true,
            other => bail!("--activation-tables {other}: expected on or off"),
        },
        int8_activations: match activations.as_str() {
            "f32" => None,
            "int8" => Some(calibration),
            other => bail!("--activations {other}: expected f32 or int8"),
        },
        rounding: match rounding.as_str() {
            "gptq" => flowrt_export::gptq::Rounding::Gptq(calibration),
            "nearest" => flowrt_export::gptq::Rounding::Nearest,
            other => bail!("--rounding {other}: expected gptq or nearest"),
        },
        import_timeout: Some(import_timeout),
    };
    write(&model, &output, &opts)
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
    axis: flowrt::time::TimeAxis,
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
    if let Some(n) = steps.filter(|&n| n > flowrt::grid::MAX_GRID_STEPS) {
        bail!(
            "--steps {n}: at most {} steps (2^24)",
            flowrt::grid::MAX_GRID_STEPS
        );
    }
    let grid_str = grid;
    let (grid, grid_points) = match grid {
        Some(g) => {
            let (spec, points) = match flowrt_host::GridChoice::parse(g)? {
                flowrt_host::GridChoice::Points(p) => (flowrt::grid::GridSpec::Uniform, Some(p)),
                flowrt_host::GridChoice::Named(s) => (s, None),
                flowrt_host::GridChoice::StepSize(h) => (flowrt::grid::GridSpec::StepSize(h), None),
            };
            (points.is_none().then_some(spec), points)
        }
        None => (None, None),
    };
    // The baked grid as `sample` will build it (the baked or default step count): a grid
    // sampling would refuse, or that runs the wrong way, is refused here.
    if let Some(g) = grid_str {
        let spec = match &grid_points {
            Some(p) => flowrt::grid::GridSpec::Explicit(p),
            None => grid.unwrap_or(flowrt::grid::GridSpec::Uniform),
        };
        let built = spec
            .build(steps.unwrap_or(1), axis)
            .map_err(|e| anyhow!("--grid {g}: {e}"))?;
        flowrt_host::plan::check_direction(&built, axis).map_err(|e| anyhow!("--grid {g}: {e}"))?;
    }
    let interval = interval
        .map(flowrt_host::conditioning::parse_interval)
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

fn write(model: &Path, output: &Path, opts: &ExportOptions) -> Result<()> {
    flowrt_export::output::check_writable(output, "-o")?;
    // No count to show (the import and the int8 calibration report no steps): a spinner
    // with the elapsed time, on a terminal, after a second.
    let name = model.file_name().unwrap_or(model.as_os_str());
    let bar = crate::progress::Bar::new(&format!("exporting {}", name.to_string_lossy()), None);
    let bytes = flowrt_export::export_onnx(model, opts);
    bar.finish();
    let bytes = bytes?;
    let aligned = AlignedBytes::copy_from(&bytes);
    let m =
        Model::from_bytes(aligned.as_slice()).map_err(|e| anyhow!("re-reading the export: {e}"))?;
    // A baked null label must be one of the model's classes (known only after the import).
    let null = opts
        .solver_defaults
        .as_ref()
        .and_then(|d| d.guidance.null_label);
    if let Some(null) = null {
        match m.label_classes() {
            Some(n) if (null as usize) < n => {}
            Some(n) => {
                bail!("--null-label {null} is out of range: the model has {n} classes (0..{n})")
            }
            None if m.input_by_role(flowrt::format::InputRole::Label).is_none() => {
                bail!("--null-label {null} given, but the model has no label input")
            }
            None => {}
        }
    }
    flowrt_export::output::write_atomic(output, &bytes)?;
    // ", stored: int8 x4, f16 x4" (typed constants per type, in order of first use).
    let mut typed: Vec<(&str, usize)> = Vec::new();
    for w in m.constants().filter(|w| w.as_f32().is_none()) {
        match typed.iter_mut().find(|(n, _)| *n == w.type_name()) {
            Some((_, count)) => *count += 1,
            None => typed.push((w.type_name(), 1)),
        }
    }
    let mut weights = if typed.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = typed.iter().map(|(n, c)| format!("{n} x{c}")).collect();
        format!(", stored: {}", list.join(", "))
    };
    let integer = m
        .nodes()
        .filter(|n| matches!(n.op, NodeOp::Dense | NodeOp::Conv { .. }) && n.inputs().count() == 4)
        .count();
    if integer > 0 {
        weights.push_str(&format!(", int8 activations on {integer} nodes"));
    }
    let tables = m
        .nodes()
        .filter(|n| matches!(n.op, NodeOp::Lut { .. }))
        .count();
    if tables > 0 {
        weights.push_str(&format!(", {tables} activations by table"));
    }
    if let Some(how) = m.metadata_value("int8_rounding") {
        weights.push_str(&format!(", int8 rounding: {how}"));
    }
    println!(
        "exported {} -> {} ({} bytes, {} nodes, {} parameters{weights})",
        model.display(),
        output.display(),
        bytes.len(),
        m.node_count(),
        m.param_count()
    );
    Ok(())
}
