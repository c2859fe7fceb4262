//! ONNX operator conformance: runs the ONNX backend node test cases
//! (`onnx/backend/test/data/node/*`, shipped by the `onnx==1.22.0` wheel) through the
//! exporter and the runtime, and compares with the expected outputs.
//!
//! Each case is a one-op model (or its function expansion, `*_expanded`) with fixed-shape
//! inputs and the expected outputs in `test_data_set_0/`. flowrt runs it as a plain graph
//! ([`crate::plain_graph_desc`] → `.frt` → [`flowrt::exec::run`]):
//!
//! * integer inputs (indices, shapes, axes, pads, repeats, sizes) are bound as constants,
//!   as they are in exported models — flowrt computes in f32;
//! * float inputs stay run-time inputs; if that is refused, the case is tried once more
//!   with every float input but the first bound as a constant (weights, scales, biases: how
//!   Conv or LayerNormalization appear in real models), and the result says which form ran;
//! * a case with several outputs runs once per output.
//!
//! A case **passes** when every output matches within `|a - e| <= 1e-7 + 1e-3 |e|` (numpy's
//! `assert_allclose` defaults of the ONNX test runner; NaN equals NaN), is **wrong** when
//! it runs but does not match, and is **refused** when the exporter or runtime returns an
//! error (the reason is recorded). A wrong result is a bug; a refusal is an honest gap.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use prost::Message;
use tract_onnx::pb::{ModelProto, TensorProto, ValueInfoProto};

/// How a case ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every output within tolerance; `max_abs` is the largest absolute error, `bound` says
    /// whether float inputs other than the first had to be constants.
    Pass {
        /// Largest |flowrt − expected| over all outputs.
        max_abs: f64,
        /// `true` when float inputs after the first were bound as constants.
        weights_bound: bool,
    },
    /// Ran, but an output is outside the tolerance (or has the wrong shape).
    Wrong {
        /// What differs.
        why: String,
    },
    /// The exporter or runtime refused the case with an error.
    Refused {
        /// The error's first line.
        why: String,
    },
}

/// One test case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Directory name (`test_conv_with_strides_padding`).
    pub name: String,
    /// ONNX op type the case tests (for `*_expanded` cases, the op it expands).
    pub op: String,
    /// Result.
    pub outcome: Outcome,
}

/// Runs every case directory under `data_dir` whose name contains `filter` (all when
/// `None`), in name order.
///
/// Errors: `data_dir` cannot be listed.
pub fn run_all(data_dir: &Path, filter: Option<&str>) -> Result<Vec<CaseResult>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .with_context(|| format!("listing {}", data_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .filter(|p| {
            filter.is_none_or(|f| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(f))
            })
        })
        .collect();
    dirs.sort();
    let scratch = std::env::temp_dir().join(format!("flowrt-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let mut single_op: BTreeMap<String, String> = BTreeMap::new();
    let mut results = Vec::with_capacity(dirs.len());
    for dir in &dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (op, outcome) = match load_case(dir) {
            Ok(case) => {
                let op = case_op(&name, &case.model, &single_op);
                if case.model.graph.as_ref().is_some_and(|g| g.node.len() == 1) {
                    single_op.insert(name.clone(), op.clone());
                }
                (op, run_case(&case, &scratch))
            }
            Err(e) => (
                "?".to_string(),
                Outcome::Refused {
                    why: first_line(&e),
                },
            ),
        };
        results.push(CaseResult { name, op, outcome });
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(results)
}

/// The op a case tests: the single node's op type, or for an expansion the op of the case
/// it expands (`test_x_expanded` → `test_x`).
fn case_op(name: &str, model: &ModelProto, single: &BTreeMap<String, String>) -> String {
    let nodes = model
        .graph
        .as_ref()
        .map(|g| g.node.as_slice())
        .unwrap_or(&[]);
    if let [only] = nodes {
        return only.op_type.clone();
    }
    if let Some(base) = name.split("_expanded").next().filter(|b| *b != name) {
        if let Some(op) = single.get(base) {
            return op.clone();
        }
    }
    "(multi-node)".to_string()
}

struct Case {
    model: ModelProto,
    /// Graph inputs (initializers excluded), in order, with their test values.
    inputs: Vec<(ValueInfoProto, TensorProto)>,
    /// Expected outputs, in graph output order.
    outputs: Vec<TensorProto>,
}

fn read_pb(path: &Path) -> Result<TensorProto> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    TensorProto::decode(&bytes[..]).with_context(|| format!("decoding {}", path.display()))
}

fn load_case(dir: &Path) -> Result<Case> {
    let bytes = std::fs::read(dir.join("model.onnx"))?;
    let model = ModelProto::decode(&bytes[..]).context("decoding model.onnx")?;
    let graph = model.graph.as_ref().ok_or_else(|| anyhow!("no graph"))?;
    let inits: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let data = dir.join("test_data_set_0");
    let mut inputs = Vec::new();
    for (i, vi) in graph
        .input
        .iter()
        .filter(|vi| !inits.contains(&vi.name.as_str()))
        .enumerate()
    {
        inputs.push((vi.clone(), read_pb(&data.join(format!("input_{i}.pb")))?));
    }
    let outputs = (0..graph.output.len())
        .map(|i| read_pb(&data.join(format!("output_{i}.pb"))))
        .collect::<Result<_>>()?;
    Ok(Case {
        model,
        inputs,
        outputs,
    })
}

/// ONNX TensorProto.DataType codes used here.
const FLOAT: i32 = 1;
const BOOL: i32 = 9;

/// The ONNX name of a TensorProto data type code.
fn dtype_name(code: i32) -> String {
    tract_onnx::pb::tensor_proto::DataType::try_from(code)
        .map(|d| d.as_str_name().to_lowercase())
        .unwrap_or_else(|_| format!("type {code}"))
}

/// A tensor's values as f64 (floats, integers and booleans), with its dims.
fn values(t: &TensorProto) -> Result<(Vec<usize>, Vec<f64>)> {
    let tensor =
        tract_onnx::tensor::load_tensor(&tract_onnx::data_resolver::FopenDataResolver, t, None)
            .map_err(|e| anyhow!("{e:#}"))?;
    let dims = tensor.shape().to_vec();
    let f = tensor.cast_to::<f64>().map_err(|e| anyhow!("{e:#}"))?;
    let v = f
        .try_as_plain_ram()
        .map_err(|e| anyhow!("{e:#}"))?
        .as_slice::<f64>()?
        .to_vec();
    Ok((dims, v))
}

fn first_line(e: &anyhow::Error) -> String {
    let full = format!("{e:#}");
    let line = full.lines().next().unwrap_or("").to_string();
    // Drop the temp-file path prefix of the exporter's messages.
    match line.find(".onnx: ") {
        Some(i) => line[i + 7..].to_string(),
        None => line,
    }
}

fn run_case(case: &Case, scratch: &Path) -> Outcome {
    let mut last_refusal = String::new();
    for bind_weights in [false, true] {
        if bind_weights
            && case
                .inputs
                .iter()
                .filter(|(_, t)| t.data_type == FLOAT)
                .count()
                < 2
        {
            break;
        }
        match run_form(case, scratch, bind_weights) {
            Ok(Ok(max_abs)) => {
                return Outcome::Pass {
                    max_abs,
                    weights_bound: bind_weights,
                }
            }
            Ok(Err(why)) => return Outcome::Wrong { why },
            Err(e) => last_refusal = first_line(&e),
        }
    }
    Outcome::Refused { why: last_refusal }
}

/// Runs one form of a case: `Err` = refused, `Ok(Err)` = wrong, `Ok(Ok(err))` = pass.
fn run_form(
    case: &Case,
    scratch: &Path,
    bind_weights: bool,
) -> Result<std::result::Result<f64, String>> {
    let mut worst = 0f64;
    for (k, expected) in case.outputs.iter().enumerate() {
        let mut model = case.model.clone();
        let graph = model.graph.as_mut().ok_or_else(|| anyhow!("no graph"))?;
        // Bind inputs as constants: integers always, floats after the first when asked.
        let mut first_float = true;
        let mut runtime: Vec<&TensorProto> = Vec::new();
        for (vi, t) in &case.inputs {
            let is_float = t.data_type == FLOAT;
            let keep = is_float && (!bind_weights || first_float);
            if is_float {
                first_float = false;
            }
            if keep {
                runtime.push(t);
            } else {
                let mut c = t.clone();
                c.name = vi.name.clone();
                graph.input.retain(|i| i.name != vi.name);
                graph.initializer.push(c);
            }
        }
        if runtime.is_empty() {
            let types: Vec<String> = case
                .inputs
                .iter()
                .map(|(_, t)| dtype_name(t.data_type))
                .collect();
            bail!(
                "no float32 input to run on: inputs are {} (flowrt computes in f32)",
                types.join(", ")
            );
        }
        let out = graph
            .output
            .get(k)
            .cloned()
            .ok_or_else(|| anyhow!("output {k} missing"))?;
        graph.output = vec![out];
        let path = scratch.join("case.onnx");
        std::fs::write(&path, model.encode_to_vec())?;
        let desc = crate::plain_graph_desc(&path)?;
        let bytes = flowrt::write::write(&desc)
            .map_err(|e| anyhow!("{}", crate::describe_write_error(&desc, e)))?;
        let aligned = flowrt::format::AlignedBytes::copy_from(&bytes);
        let m = flowrt::Model::from_bytes(aligned.as_slice())?;
        let ins: Vec<Vec<f32>> = runtime
            .iter()
            .map(|t| values(t).map(|(_, v)| v.iter().map(|x| *x as f32).collect()))
            .collect::<Result<_>>()?;
        let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
        let (e_dims, e_vals) = values(expected)?;
        let out_shape = m.output_shape();
        let got_dims: Vec<usize> = out_shape.concrete(1).as_slice().to_vec();
        if got_dims != e_dims && !(got_dims.iter().product::<usize>() == 1 && e_vals.len() == 1) {
            return Ok(Err(format!(
                "output {k} shape {got_dims:?}, expected {e_dims:?}"
            )));
        }
        let mut arena = flowrt::format::AlignedBytes::zeroed(m.graph_arena_bytes(1)?);
        let mut got = vec![0f32; e_vals.len()];
        flowrt::exec::run(&m, 1, &refs, &mut got, arena.as_mut_slice())?;
        for (i, (g, e)) in got.iter().zip(&e_vals).enumerate() {
            let g = f64::from(*g);
            let ok = if expected.data_type == BOOL || e.is_infinite() {
                g == *e
            } else if e.is_nan() {
                g.is_nan()
            } else {
                (g - e).abs() <= 1e-7 + 1e-3 * e.abs()
            };
            if !ok {
                return Ok(Err(format!("output {k}[{i}] = {g}, expected {e}")));
            }
            if e.is_finite() {
                worst = worst.max((g - e).abs());
            }
        }
    }
    Ok(Ok(worst))
}

/// Per-op totals of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpTotals {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that ran but were wrong.
    pub wrong: usize,
    /// Cases refused with an error.
    pub refused: usize,
    /// Largest absolute error over the passed cases.
    pub max_abs: f64,
}

/// Totals per op type, in op name order.
pub fn totals(results: &[CaseResult]) -> BTreeMap<String, OpTotals> {
    let mut map: BTreeMap<String, OpTotals> = BTreeMap::new();
    for r in results {
        let t = map.entry(r.op.clone()).or_default();
        match &r.outcome {
            Outcome::Pass { max_abs, .. } => {
                t.passed += 1;
                t.max_abs = t.max_abs.max(*max_abs);
            }
            Outcome::Wrong { .. } => t.wrong += 1,
            Outcome::Refused { .. } => t.refused += 1,
        }
    }
    map
}

/// The `docs/conformance.md` report: per op that passes at least one case, passed / total,
/// wrong, max abs error; then the ops with no passing case; then every non-passing case
/// with its reason.
pub fn markdown(results: &[CaseResult], source: &str) -> String {
    let t = totals(results);
    let (p, w, r): (usize, usize, usize) = t.values().fold((0, 0, 0), |a, v| {
        (a.0 + v.passed, a.1 + v.wrong, a.2 + v.refused)
    });
    let mut s = String::new();
    let _ = writeln!(s, "# ONNX operator conformance\n");
    let _ = writeln!(
        s,
        "Generated by `flowrt conformance` (`scripts/conformance.sh`) from {source}: the ONNX \
         backend node test cases run through `flowrt export` (plain-graph mode) and the CPU \
         runtime, compared with the expected outputs at `|a - e| <= 1e-7 + 1e-3 |e|`. Integer \
         inputs (indices, shapes, axes, pads) are bound as constants, as in exported models; \
         a case marked *w* in the list below passed with its float inputs after the first bound \
         as constants (weights). `tests/tests/onnx_conformance.rs` reruns the cases and fails \
         when an op's pass count drops below this table or a case runs wrong.\n"
    );
    let _ = writeln!(
        s,
        "**Totals: {p} passed, {w} wrong, {r} refused, of {} cases.**\n",
        results.len()
    );
    let _ = writeln!(s, "| op | passed / total | wrong | max abs error |");
    let _ = writeln!(s, "|---|---|---|---|");
    for (op, v) in &t {
        if v.passed > 0 {
            let _ = writeln!(
                s,
                "| {op} | {} / {} | {} | {:.1e} |",
                v.passed,
                v.passed + v.wrong + v.refused,
                v.wrong,
                v.max_abs
            );
        }
    }
    let none: Vec<String> = t
        .iter()
        .filter(|(_, v)| v.passed == 0)
        .map(|(op, v)| format!("{op} ({})", v.wrong + v.refused))
        .collect();
    let _ = writeln!(
        s,
        "\nOps with no passing case (cases): {}.\n",
        none.join(", ")
    );
    let _ = writeln!(s, "## Cases that did not pass\n");
    let _ = writeln!(s, "| case | op | result |");
    let _ = writeln!(s, "|---|---|---|");
    for c in results {
        let (kind, why) = match &c.outcome {
            Outcome::Pass { .. } => continue,
            Outcome::Wrong { why } => ("**wrong**", why),
            Outcome::Refused { why } => ("refused", why),
        };
        let why = why.replace('|', "\\|");
        let why: String = why.chars().take(160).collect();
        let _ = writeln!(s, "| {} | {} | {kind}: {why} |", c.name, c.op);
    }
    let bound: Vec<&str> = results
        .iter()
        .filter(|c| {
            matches!(
                c.outcome,
                Outcome::Pass {
                    weights_bound: true,
                    ..
                }
            )
        })
        .map(|c| c.name.as_str())
        .collect();
    let _ = writeln!(
        s,
        "\n## Passed with weights bound as constants (*w*)\n\n{}",
        bound.join(", ")
    );
    s
}

/// Parses the per-op table of a `docs/conformance.md` written by [`markdown`]: op →
/// (passed, wrong).
pub fn parse_table(md: &str) -> BTreeMap<String, (usize, usize)> {
    let mut map = BTreeMap::new();
    for line in md.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() != 6 {
            continue;
        }
        let Some((passed, _total)) = cells[2].split_once(" / ") else {
            continue;
        };
        if let (Ok(p), Ok(w)) = (passed.parse::<usize>(), cells[3].parse::<usize>()) {
            map.insert(cells[1].to_string(), (p, w));
        }
    }
    map
}
