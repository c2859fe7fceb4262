//! `flowrt eval`: the network of a `.frt` evaluated once on given inputs, its raw output
//! written to `.npy` (no time convention, no solver, no guidance). What a framework-side
//! check compares with the model it exported (the Python helper `python/flowrt_export`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use flowrt::format::{AlignedBytes, Dim, InputRole, Shape};
use flowrt::model::InputInfo;
use flowrt::Model;
use flowrt_export::{npy, output};
use flowrt_host::Frt;

/// Largest label magnitude that is exact in f32 (`2^24`): the executor takes labels as f32.
const MAX_EXACT_LABEL: i64 = 1 << 24;

/// `flowrt eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// The .frt file (its main network is evaluated).
    model: PathBuf,
    /// One network input as NAME=FILE.npy, NAME being the input's name as `flowrt inspect`
    /// lists it, or its role (x, t, xt, label, cond, guidance, step). Every input must be
    /// given, with the model's shape for one batch size B (a 0-dim array for a `[]` input).
    /// Labels: int64 / int32 (or floats with integer values); the rest float32 / float64.
    #[arg(long = "input", value_name = "NAME=FILE.npy", required = true)]
    inputs: Vec<String>,
    /// Output .npy: the network's output (float32, its shape with B rows).
    #[arg(short, long)]
    output: PathBuf,
}

/// One input of the model, read from its file.
struct Given {
    /// The values as the executor takes them (labels as f32).
    values: Vec<f32>,
    /// The array's shape.
    shape: Vec<usize>,
    /// The file.
    path: PathBuf,
}

/// Runs `flowrt eval`: reads every input, checks it against the model's signature, evaluates
/// the graph once and writes the output.
///
/// Errors: an unreadable or invalid file, an unknown, repeated or missing input, a shape that
/// does not fit the model, batch sizes that disagree, a label that is not exact in f32, or
/// the runtime's error (e.g. a label out of the model's range).
pub fn run(a: &EvalArgs) -> Result<()> {
    output::check_writable(&a.output, "-o")?;
    let frt = Frt::open(&a.model)?;
    let m = frt.model();
    let infos: Vec<InputInfo> = m.inputs().collect();
    let mut given: Vec<Option<Given>> = infos.iter().map(|_| None).collect();
    for spec in &a.inputs {
        let (key, file) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--input expects NAME=FILE.npy, got `{spec}`"))?;
        let i = find_input(&m, &infos, key)?;
        let slot = given
            .get_mut(i)
            .ok_or_else(|| anyhow!("input index {i} out of range"))?;
        if slot.is_some() {
            bail!("input `{}` is given twice", input_name(&m, &infos[i]));
        }
        *slot = Some(read_input(Path::new(file), infos[i].role)?);
    }
    let mut inputs = Vec::with_capacity(infos.len());
    for (info, g) in infos.iter().zip(given) {
        let g = g.ok_or_else(|| {
            anyhow!(
                "input `{}` (role {}, shape {}) is not given: add --input {}=FILE.npy",
                input_name(&m, info),
                info.role.name(),
                info.shape,
                input_name(&m, info)
            )
        })?;
        inputs.push((info, g));
    }
    let batch = batch_size(&m, &inputs)?;
    let out_shape = concrete(&m.output_shape(), batch);
    let out_len: usize = out_shape.iter().product();
    let mut out = vec![0f32; out_len];
    let slices: Vec<&[f32]> = inputs.iter().map(|(_, g)| g.values.as_slice()).collect();
    let mut arena = AlignedBytes::zeroed(m.graph_arena_bytes(batch)?);
    flowrt::exec::run(&m, batch, &slices, &mut out, arena.as_mut_slice())
        .map_err(|e| anyhow!("evaluating {}: {e}", a.model.display()))?;
    npy::write_f32(&a.output, &out, &out_shape)?;
    println!(
        "evaluated {} at batch {batch} -> {} {out_shape:?}",
        a.model.display(),
        a.output.display()
    );
    Ok(())
}

/// The input's name from the file's names section, else its role's name.
fn input_name<'m>(m: &Model<'m>, info: &InputInfo) -> &'m str {
    m.tensor(info.tensor)
        .and_then(|t| t.name)
        .unwrap_or(info.role.name())
}

/// The position of the input called `key` (by name first, then by role).
///
/// Errors: no input has that name or role (the message lists the inputs).
fn find_input(m: &Model<'_>, infos: &[InputInfo], key: &str) -> Result<usize> {
    let by_name = infos.iter().position(|i| input_name(m, i) == key);
    let by_role = || infos.iter().position(|i| i.role.name() == key);
    by_name.or_else(by_role).ok_or_else(|| {
        let list: Vec<String> = infos
            .iter()
            .map(|i| format!("{} (role {})", input_name(m, i), i.role.name()))
            .collect();
        anyhow!(
            "the model has no input named `{key}` (its inputs: {})",
            list.join(", ")
        )
    })
}

/// Reads one input file: labels as integers (converted to f32), the rest as floats.
///
/// Errors: unreadable file, wrong dtype, a label not exact in f32.
fn read_input(path: &Path, role: InputRole) -> Result<Given> {
    let (values, shape) = if role == InputRole::Label {
        let (labels, shape) = npy::read_labels(path)?;
        let values = labels
            .into_iter()
            .map(|k| {
                if k.abs() <= MAX_EXACT_LABEL {
                    Ok(k as f32)
                } else {
                    bail!("{}: label {k} is not exact in f32", path.display())
                }
            })
            .collect::<Result<Vec<f32>>>()?;
        (values, shape)
    } else {
        npy::read_f32(path)?
    };
    Ok(Given {
        values,
        shape,
        path: path.to_path_buf(),
    })
}

/// `shape` with its batch dim set to `batch`.
fn concrete(shape: &Shape, batch: usize) -> Vec<usize> {
    shape
        .dims()
        .map(|d| match d {
            Dim::Batch => batch,
            Dim::Fixed(n) => n as usize,
        })
        .collect()
}

/// The batch size the inputs agree on (1 when no input has a batch dim), after checking
/// every array's shape against its input's.
///
/// Errors: a rank or fixed dim that differs, or two batch sizes.
fn batch_size(m: &Model<'_>, inputs: &[(&InputInfo, Given)]) -> Result<usize> {
    let mut batch: Option<(usize, &Path)> = None;
    for (info, g) in inputs {
        let want: Vec<Dim> = info.shape.dims().collect();
        let fits = want.len() == g.shape.len()
            && want.iter().zip(&g.shape).all(|(d, &n)| match d {
                Dim::Batch => n >= 1,
                Dim::Fixed(k) => usize::try_from(*k).is_ok_and(|k| k == n),
            });
        if !fits {
            bail!(
                "{}: shape {:?} does not fit input `{}` (shape {})",
                g.path.display(),
                g.shape,
                input_name(m, info),
                info.shape
            );
        }
        if let Some(axis) = info.shape.batch_axis() {
            let b = g.shape.get(axis).copied().unwrap_or(1);
            match batch {
                Some((b0, p0)) if b0 != b => bail!(
                    "batch sizes disagree: {} has {b} rows, {} has {b0}",
                    g.path.display(),
                    p0.display()
                ),
                Some(_) => {}
                None => batch = Some((b, &g.path)),
            }
        }
    }
    Ok(batch.map_or(1, |(b, _)| b))
}
