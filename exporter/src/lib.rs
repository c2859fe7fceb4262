//! `flowrt-export`: turns a trained flow model in ONNX into a `.frt` file.
//!
//! Pipeline: [`validate`] (the ONNX `ModelProto` checked against its opset, flowrt's supported
//! ops and input types, before tract sees it) → [`import`] (tract-onnx: parse, type for a
//! symbolic batch, fold shape subgraphs, declutter) → [`roles`] (which input is `x`, `t`,
//! `xt`, `label`, `cond` or `guidance`) → [`lower`] (tract ops → flowrt ops) →
//! `flowrt::write::write` (validate, plan memory, serialize).

pub mod calibration;
pub mod conformance;
pub mod contain;
pub mod embed;
pub mod external;
pub mod gptq;
pub mod half;
pub mod import;
pub mod int8act;
pub mod lower;
pub mod npy;
pub mod output;
pub mod roles;
pub mod validate;
pub mod weights;

use std::path::Path;

use anyhow::{Context, Result};
use flowrt::ir::{ModelDesc, Role};

/// What to export and how.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// `--role NAME=ROLE` overrides (ONNX input name, role).
    pub roles: Vec<(String, Role)>,
    /// Store the source ONNX (external weights inlined) in the `.frt` `ONNX` section, so
    /// `flowrt-ort` can run the same artifact (`export --embed-onnx`).
    pub embed_onnx: bool,
    /// The model's time convention (`export --time --time-scale --negate-output`).
    pub time: flowrt::time::TimeConvention,
    /// Solver defaults to bake in (`export --method --steps --grid --guidance ...`).
    pub solver_defaults: Option<flowrt::ir::SolverDefaultsDesc>,
    /// Further graphs of a multi-network file (`export --block --refiner --decoder`): each
    /// stage's rule and its ONNX file, exported with the same time convention (the decoder
    /// with none).
    pub pipeline: Vec<(flowrt::pipeline::StageKind, std::path::PathBuf)>,
    /// The stored type of the weights (`export --weights --keep-f32`); pipeline stages use
    /// the same type.
    pub weights: weights::WeightChoice,
    /// Keep the ONNX names of nodes and inner tensors in the file (`export --keep-names`,
    /// for `inspect` and error messages). By default only the signature's inputs and
    /// output keep theirs and the rest show as indices: the names are debugging
    /// information that no sampler reads, and can be several percent of a file.
    pub keep_names: bool,
    /// The record layout of the file: compact records (format version 3, the default) or
    /// fixed-size ones (versions 1 and 2, for runtimes that predate version 3;
    /// `export --fixed-records`).
    pub layout: flowrt::write::Layout,
    /// Full-integer mode (`export --activations int8`, needs int8 weights): Dense and Conv
    /// quantize their inputs with scales calibrated on sampled trajectories. Applies to the
    /// main velocity network; pipeline stages (blocks, refiners, a decoder) keep f32
    /// activations with int8 weights.
    pub int8_activations: Option<int8act::Calibration>,
    /// In the full-integer mode, keep the activation functions in f32 (`export
    /// --activation-tables off`) instead of table lookups on their int8-quantized input
    /// ([`int8act::apply_tables`], the default).
    pub exact_activations: bool,
    /// How int8 weights are rounded (`export --rounding`): GPTQ on the Dense weights by
    /// default ([`gptq`]), nearest for the rest and for pipeline decoders.
    pub rounding: gptq::Rounding,
    /// The time limit of the ONNX import (`export --import-timeout`); `None`:
    /// [`contain::IMPORT_TIMEOUT`].
    pub import_timeout: Option<std::time::Duration>,
}

/// Imports and lowers an ONNX file into a flowrt model description.
///
/// Errors: unreadable or invalid ONNX (checked by [`validate::check_bytes`] first: opset
/// validity, supported ops, input types), ambiguous roles, or anything flowrt cannot run
/// exactly (the message names the node, op and reason).
pub fn onnx_to_desc(path: &Path, opts: &ExportOptions) -> Result<ModelDesc> {
    // Read once: validated here, hashed into the metadata below (tract reads the path
    // itself, for the external data next to it).
    let bytes = read_onnx(path)?;
    validate::check_bytes(&bytes)
        .with_context(|| format!("checking ONNX model {}", path.display()))?;
    // tract panics on some malformed graphs the checks above miss (contained, as errors) and
    // loops on others (given up after the time limit).
    let (owned, overrides) = (path.to_path_buf(), opts.roles.clone());
    let timeout = opts.import_timeout.unwrap_or(contain::IMPORT_TIMEOUT);
    let (mut desc, inputs, roles) = contain::with_deadline(path, timeout, move |stage| {
        let path = owned.as_path();
        let (model, inputs, outputs) = stage.contain(path, "parse", || {
            let model = import::load_inference_model(path)?;
            let (inputs, outputs) = import::declared_io(&model)?;
            Ok((model, inputs, outputs))
        })?;
        let roles = roles::assign_roles(&inputs, &outputs, &overrides)?;
        let typed = stage.contain(path, "analysis", || {
            import::into_typed(model, &inputs, &roles)
        })?;
        let desc = stage
            .contain(path, "lowering", || lower::lower(&typed, &roles))
            .with_context(|| format!("cannot convert {}", path.display()))?;
        Ok((desc, inputs, roles))
    })?;
    let mut roles = roles;
    state_only_fixup(&mut desc, &mut roles, &opts.roles, &inputs);
    weights::assign(&mut desc, &opts.weights, opts.layout)
        .with_context(|| format!("choosing the weight types of {}", path.display()))?;
    let source = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    desc.metadata.push((
        "producer".into(),
        format!("flowrt-export {}", env!("CARGO_PKG_VERSION")),
    ));
    desc.metadata.push(("source".into(), source));
    desc.metadata
        .push(("source_fnv1a64".into(), format!("{:016x}", fnv1a64(&bytes))));
    for (kind, onnx) in &opts.pipeline {
        let sub = ExportOptions {
            time: if *kind == flowrt::pipeline::StageKind::Decoder {
                flowrt::time::TimeConvention::default()
            } else {
                opts.time
            },
            weights: weights::WeightChoice {
                kind: opts.weights.kind,
                keep_f32: Vec::new(),
            },
            keep_names: opts.keep_names,
            layout: opts.layout,
            import_timeout: opts.import_timeout,
            // A decoder is no velocity field: there are no trajectories to calibrate it on.
            rounding: if *kind == flowrt::pipeline::StageKind::Decoder {
                gptq::Rounding::Nearest
            } else {
                opts.rounding
            },
            ..Default::default()
        };
        let bytes = export_onnx(onnx, &sub)
            .with_context(|| format!("pipeline stage {}", onnx.display()))?;
        desc.pipeline.push((*kind, bytes));
    }
    desc.time = opts.time;
    // Few-step models: the second time input's form, from --second-time or its name.
    let step_input = inputs
        .iter()
        .zip(&roles)
        .find(|(_, r)| **r == Role::Step)
        .map(|(i, _)| i.name.clone());
    match (&step_input, desc.time.second) {
        (Some(name), flowrt::time::SecondTime::None) => {
            desc.time.second = roles::second_time_from_name(name);
        }
        (None, s) if s != flowrt::time::SecondTime::None => anyhow::bail!(
            "--second-time {} given, but the model has no second time input (role step)",
            s.name()
        ),
        _ => {}
    }
    desc.solver_defaults = opts.solver_defaults.clone();
    if opts.weights.kind == weights::WeightKind::Int8 {
        let how = match opts.rounding {
            gptq::Rounding::Nearest => "nearest".to_string(),
            gptq::Rounding::Gptq(cal) => match gptq::apply(&mut desc, &cal) {
                Ok(n) => format!("gptq on {n} Dense, {}x{} calibration", cal.rows, cal.steps),
                // Plain graphs and cond/guidance inputs have no trajectories to sample.
                Err(e) => format!("nearest (no calibration: {})", e.root_cause()),
            },
        };
        desc.metadata.push(("int8_rounding".into(), how));
    }
    if let Some(cal) = &opts.int8_activations {
        if opts.weights.kind != weights::WeightKind::Int8 {
            anyhow::bail!("--activations int8 needs --weights int8");
        }
        let ranges = int8act::calibrate(&desc, cal)
            .with_context(|| format!("calibrating the activations of {}", path.display()))?;
        int8act::apply(&mut desc, &ranges)?;
        if !opts.exact_activations {
            int8act::apply_tables(&mut desc, &ranges)?;
        }
    }
    if !opts.keep_names {
        // The signature's names stay (they are few and say what to feed).
        let io: Vec<u32> = desc
            .inputs
            .iter()
            .map(|i| i.tensor)
            .chain([desc.output])
            .collect();
        for (i, t) in desc.tensors.iter_mut().enumerate() {
            if !io.contains(&(i as u32)) {
                t.name.clear();
            }
        }
        desc.nodes.iter_mut().for_each(|n| n.name.clear());
    }
    if opts.embed_onnx {
        desc.onnx = Some(
            embed::self_contained_onnx(path)
                .with_context(|| format!("embedding {}", path.display()))?,
        );
    }
    Ok(desc)
}

/// Imports and lowers an ONNX graph with fixed-shape inputs as a *plain graph*: every input
/// is a `data` operand, no batch dim, no roles (run with `flowrt::exec::run`). Used by
/// `flowrt conformance` for the ONNX operator test cases.
///
/// Errors: as [`onnx_to_desc`]; an input with a symbolic dim.
pub fn plain_graph_desc(path: &Path) -> Result<ModelDesc> {
    validate::check_file(path)?;
    let owned = path.to_path_buf();
    contain::with_deadline(path, contain::IMPORT_TIMEOUT, move |stage| {
        let path = owned.as_path();
        let (model, inputs) = stage.contain(path, "parse", || {
            let model = import::load_inference_model(path)?;
            let (inputs, _) = import::declared_io(&model)?;
            Ok((model, inputs))
        })?;
        let typed = stage.contain(path, "analysis", || {
            import::into_typed_fixed(model, &inputs)
        })?;
        let roles = vec![Role::Data; inputs.len()];
        stage
            .contain(path, "lowering", || lower::lower(&typed, &roles))
            .with_context(|| format!("cannot convert {}", path.display()))
    })
}

/// A single input guessed as `xt` (the ONNX file did not declare its output width) whose
/// output turns out to be as wide as the input is a state-to-state map (a rollout step) or,
/// with another width, a decoder: it becomes `x`. Explicit `--role` overrides are kept.
fn state_only_fixup(
    desc: &mut ModelDesc,
    roles: &mut [Role],
    overrides: &[(String, Role)],
    inputs: &[import::DeclaredInput],
) {
    let [only] = desc.inputs.as_mut_slice() else {
        return;
    };
    if only.role != Role::Xt
        || inputs
            .iter()
            .any(|i| overrides.iter().any(|(n, _)| *n == i.name))
    {
        return;
    }
    let row = |t: u32| -> Option<u64> {
        let shape = &desc.tensors.get(t as usize)?.shape;
        shape
            .iter()
            .skip(1)
            .map(|d| match d {
                flowrt::ir::Dim::Fixed(n) => Some(u64::from(*n)),
                flowrt::ir::Dim::Batch => None,
            })
            .product()
    };
    let (Some(w), Some(o)) = (row(only.tensor), row(desc.output)) else {
        return;
    };
    if o + 1 != w {
        only.role = Role::X;
        if let Some(r) = roles.first_mut() {
            *r = Role::X;
        }
    }
}

/// Exports an ONNX file to `.frt` bytes.
///
/// Errors: see [`onnx_to_desc`]; plus the writer's validation of the lowered graph.
pub fn export_onnx(path: &Path, opts: &ExportOptions) -> Result<Vec<u8>> {
    let desc = onnx_to_desc(path, opts)?;
    flowrt::write::write_with(&desc, opts.layout)
        .map_err(|e| anyhow::anyhow!("{}", describe_write_error(&desc, e)))
        .with_context(|| format!("cannot write {} as .frt", path.display()))
}

/// The writer's error with node / tensor indices replaced by their ONNX-derived names.
pub fn describe_write_error(desc: &ModelDesc, e: flowrt::Error) -> String {
    match e {
        flowrt::Error::InvalidNode { node, what } => match desc.nodes.get(node as usize) {
            Some(n) => format!("node `{}` ({:?}): {what}", n.name, n.op),
            None => e.to_string(),
        },
        flowrt::Error::InvalidTensor { tensor, what } => match desc.tensors.get(tensor as usize) {
            Some(t) => format!("tensor `{}` {:?}: {what}", t.name, t.shape),
            None => e.to_string(),
        },
        other => other.to_string(),
    }
}

/// Largest `|a[i] - b[i]|` over two sample buffers; a NaN difference or a length mismatch
/// counts as infinite, so a comparison against a tolerance can never pass by accident.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}

/// FNV-1a 64-bit hash, used to record which ONNX file a `.frt` came from.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The largest ONNX file read: 2 GiB, protobuf's own limit for one message (larger models
/// keep their weights in external data files).
pub const MAX_ONNX_BYTES: u64 = 2 << 30;

/// Reads an ONNX file, at most [`MAX_ONNX_BYTES`] (`/dev/zero` is refused, not read until
/// memory runs out).
///
/// Errors: unreadable, or larger than the cap.
pub fn read_onnx(path: &Path) -> Result<Vec<u8>> {
    npy::read_capped(path, MAX_ONNX_BYTES)
}

/// The largest `.frt` file read (1 GiB; the format's u32 offsets would allow 4 GiB, far
/// beyond any model flowrt targets).
pub const fn flowrt_frt_cap() -> u64 {
    1 << 30
}

/// Reads a `.frt` file (up to [`flowrt_frt_cap`] bytes) into a 16-byte aligned buffer (validated when a `Model` is made
/// from it).
///
/// Errors: the file cannot be read.
pub fn read_frt(path: &Path) -> Result<flowrt::format::AlignedBytes> {
    let bytes = npy::read_capped(path, flowrt_frt_cap())?;
    Ok(flowrt::format::AlignedBytes::copy_from(&bytes))
}
