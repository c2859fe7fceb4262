//! Single-op conformance against onnxruntime: the tiny hand-written graphs of
//! `tests/fixtures/ops/` (written by `tests/fixtures/make_op_cases.py`), one op under test
//! each, shaped like a velocity field (`x` [B, F], `t` [B, 1] → `v` [B, F]).
//!
//! For every case in `tests/fixtures/ops/manifest.json`:
//! * `expect_error: true` — the export must fail with a message containing `error_contains`
//!   (flowrt refuses the op; it must never be silently wrong);
//! * otherwise export, load, evaluate at the stored batch (5) and row by row (batch 1), and
//!   compare with onnxruntime's output: `|flowrt - ort| <= 1e-5 * max(1, |ort|)` per element
//!   (absolute for values below 1, relative above; the "wide" cases reach |v| ~ 1e2 and
//!   `exp_wide` ~ 1e10, where an absolute 1e-5 would be below f32 resolution).
//!
//! Conditioning cases (`label` int64/int32 `.npy`, `cond`, `guidance` inputs) are also run
//! through `CpuField::eval_cond` — the API samplers use, with the labels as `i64` — at the
//! full batch and row by row from one field (fewer rows than its capacity), when `t` is one
//! value for all rows (`t_const`); and every `bad_labels` file (labels onnxruntime rejects)
//! must be rejected by flowrt with `Error::BadArgument` (label out of range), through both
//! `exec::run` and `eval_cond`.

use std::path::{Path, PathBuf};

use flowrt::exec::CpuField;
use flowrt::field::Conditioning;
use flowrt::format::{AlignedBytes, InputRole};
use flowrt::ir::Role;
use flowrt::Model;
use flowrt_export::ExportOptions;
use flowrt_tests::{fixtures_dir, npy};

/// Per-element tolerance, scaled by `max(1, |reference|)`.
const TOL: f32 = 1e-5;

struct Input {
    role: String,
    batched: bool,
    /// f32 values (labels converted exactly).
    data: Vec<f32>,
    /// The integer values of a label input.
    labels: Option<Vec<i64>>,
}

/// A label file onnxruntime rejects: which input it replaces, and the labels.
struct BadLabels {
    input: usize,
    labels: Vec<i64>,
    ort_error: String,
}

struct Case {
    name: String,
    onnx: PathBuf,
    inputs: Vec<Input>,
    want: Vec<f32>,
    want_shape: Vec<usize>,
    roles: Vec<(String, Role)>,
    expect_error: Option<String>,
    label_classes: Option<usize>,
    t_const: bool,
    bad_labels: Vec<BadLabels>,
}

/// Reads an input `.npy`: float32 as is, or integer labels (also as exact f32 values).
fn read_input(path: &Path, dtype: Option<&str>) -> (Vec<f32>, Option<Vec<i64>>) {
    match dtype {
        None => (npy(path).0, None),
        Some(_) => {
            let (labels, _) = flowrt_export::npy::read_labels(path)
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            (labels.iter().map(|l| *l as f32).collect(), Some(labels))
        }
    }
}

fn ops_dir() -> PathBuf {
    fixtures_dir().join("ops")
}

fn cases() -> Vec<Case> {
    let dir = ops_dir();
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("ops manifest");
    let v: serde_json::Value = serde_json::from_str(&text).expect("ops manifest json");
    let s = |v: &serde_json::Value| v.as_str().expect("string").to_string();
    v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            let inputs = c["inputs"]
                .as_array()
                .expect("inputs")
                .iter()
                .map(|i| {
                    let (data, labels) = read_input(&dir.join(s(&i["file"])), i["dtype"].as_str());
                    Input {
                        role: s(&i["role"]),
                        batched: i["shape"].as_array().expect("shape").first()
                            == Some(&serde_json::Value::from("batch")),
                        data,
                        labels,
                    }
                })
                .collect();
            let bad_labels = c["bad_labels"]
                .as_array()
                .map(|b| {
                    b.iter()
                        .map(|e| BadLabels {
                            input: e["input"].as_u64().expect("input") as usize,
                            labels: flowrt_export::npy::read_labels(&dir.join(s(&e["file"])))
                                .expect("bad labels")
                                .0,
                            ort_error: s(&e["ort_error"]),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let (want, want_shape) = npy(&dir.join(s(&c["output"]["file"])));
            let roles = c["roles"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(name, r)| {
                            let role = flowrt_export::roles::parse_role(&s(r)).expect("role");
                            (name.clone(), role)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let expect_error = (c["expect_error"] == true).then(|| s(&c["error_contains"]));
            Case {
                name: s(&c["name"]),
                onnx: dir.join(s(&c["file"])),
                inputs,
                want,
                want_shape,
                roles,
                expect_error,
                label_classes: c["label_classes"].as_u64().map(|n| n as usize),
                t_const: c["t_const"] == true,
                bad_labels,
            }
        })
        .collect()
}

/// Largest `|got - want| / max(1, |want|)` (NaN counts as infinite).
fn scaled_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            let e = (g - w).abs() / w.abs().max(1.0);
            if e.is_nan() {
                f32::INFINITY
            } else {
                e
            }
        })
        .fold(0.0, f32::max)
}

/// The case's input for the model input with `role`.
fn input_for(case: &Case, role: InputRole) -> &Input {
    case.inputs
        .iter()
        .find(|i| i.role == role.name())
        .unwrap_or_else(|| panic!("{}: no input with role {}", case.name, role.name()))
}

/// Rows `rows` of a batched input (all of an unbatched one).
fn rows_of<'d, T>(
    data: &'d [T],
    batched: bool,
    batch: usize,
    rows: &std::ops::Range<usize>,
) -> &'d [T] {
    if batched {
        let per_row = data.len() / batch;
        &data[rows.start * per_row..rows.end * per_row]
    } else {
        data
    }
}

/// Runs the graph (`exec::run`) on rows `rows` of the case's inputs (all rows at once),
/// with input `replace.0` (manifest order) replaced by `replace.1` if given.
fn try_eval(
    model: &Model<'_>,
    case: &Case,
    batch: usize,
    rows: std::ops::Range<usize>,
    replace: Option<(usize, &[f32])>,
) -> Result<Vec<f32>, flowrt::Error> {
    let n = rows.len();
    let slices: Vec<&[f32]> = model
        .inputs()
        .map(|info| {
            let input = input_for(case, info.role);
            let k = case
                .inputs
                .iter()
                .position(|i| std::ptr::eq(i, input))
                .unwrap();
            let data = match replace {
                Some((j, d)) if j == k => d,
                _ => &input.data[..],
            };
            rows_of(data, input.batched, batch, &rows)
        })
        .collect();
    let out_len = case.want.len() / batch * n;
    let mut out = vec![0f32; out_len];
    let mut arena = AlignedBytes::zeroed(model.graph_arena_bytes(n).expect("arena size"));
    flowrt::exec::run(model, n, &slices, &mut out, arena.as_mut_slice())?;
    Ok(out)
}

fn eval(model: &Model<'_>, case: &Case, batch: usize, rows: std::ops::Range<usize>) -> Vec<f32> {
    let n = rows.len();
    try_eval(model, case, batch, rows, None)
        .unwrap_or_else(|e| panic!("{}: run at batch {n}: {e}", case.name))
}

/// `(t, state)` of a case whose time is one value for all rows: `x`, or `xt` without its
/// last column.
fn state_and_time(model: &Model<'_>, case: &Case) -> (f32, Vec<f32>) {
    let d = model.state_dim();
    if model.input_by_role(InputRole::Xt).is_some() {
        let xt = &input_for(case, InputRole::Xt).data;
        let t = xt[d];
        let x = xt
            .chunks_exact(d + 1)
            .flat_map(|r| r[..d].to_vec())
            .collect();
        (t, x)
    } else {
        let t = input_for(case, InputRole::T).data[0];
        (t, input_for(case, InputRole::X).data.clone())
    }
}

/// `CpuField::eval_cond` on rows `rows`, from a field made for the whole batch; the labels
/// can be replaced.
fn try_eval_cond(
    field: &mut CpuField<'_, '_>,
    case: &Case,
    batch: usize,
    rows: std::ops::Range<usize>,
    labels: Option<&[i64]>,
) -> Result<Vec<f32>, flowrt::Error> {
    let model = *field.model();
    let (t, x) = state_and_time(&model, case);
    let d = model.state_dim();
    let find = |r: InputRole| case.inputs.iter().find(|i| i.role == r.name());
    let label_data = labels.or(find(InputRole::Label).and_then(|i| i.labels.as_deref()));
    let guidance: Option<Vec<f32>> = find(InputRole::Guidance).map(|g| {
        if g.batched {
            g.data.clone()
        } else {
            vec![g.data[0]; batch]
        }
    });
    let cond = Conditioning {
        label: label_data.map(|l| &l[rows.clone()]),
        cond: find(InputRole::Cond).map(|c| rows_of(&c.data[..], true, batch, &rows)),
        guidance: guidance.as_deref().map(|g| &g[rows.clone()]),
        step: None,
    };
    let mut v = vec![0f32; rows.len() * d];
    field.eval_cond(t, &x[rows.start * d..rows.end * d], &cond, &mut v)?;
    Ok(v)
}

/// The conditioning checks of a case: `eval_cond` against onnxruntime, and the labels
/// onnxruntime rejects.
fn check_conditioning(model: &Model<'_>, case: &Case) -> Result<String, String> {
    let batch = case.want_shape[0];
    let mut notes = String::new();
    if case.label_classes != model.label_classes() {
        return Err(format!(
            "label_classes: manifest {:?}, model {:?}",
            case.label_classes,
            model.label_classes()
        ));
    }
    let mut arena = AlignedBytes::zeroed(model.required_arena_bytes(batch).expect("arena"));
    let mut field = CpuField::new(model, batch, arena.as_mut_slice()).map_err(|e| e.to_string())?;
    if case.t_const {
        let got = try_eval_cond(&mut field, case, batch, 0..batch, None)
            .map_err(|e| format!("eval_cond: {e}"))?;
        let mut err = scaled_err(&got, &case.want);
        let per_row = case.want.len() / batch;
        for r in 0..batch {
            let one = try_eval_cond(&mut field, case, batch, r..r + 1, None)
                .map_err(|e| format!("eval_cond row {r}: {e}"))?;
            err = err.max(scaled_err(&one, &case.want[r * per_row..(r + 1) * per_row]));
        }
        if err > TOL {
            return Err(format!("eval_cond MISMATCH {err:.2e} > {TOL:e}"));
        }
        notes += &format!(", eval_cond {err:.2e}");
    }
    for bad in &case.bad_labels {
        let as_f32: Vec<f32> = bad.labels.iter().map(|l| *l as f32).collect();
        let r = try_eval(model, case, batch, 0..batch, Some((bad.input, &as_f32)));
        if !matches!(r, Err(flowrt::Error::BadArgument { .. })) {
            return Err(format!(
                "labels {:?} (ORT: {}) accepted by exec::run: {r:?}",
                bad.labels, bad.ort_error
            ));
        }
        let r = try_eval_cond(&mut field, case, batch, 0..batch, Some(&bad.labels));
        match r {
            Err(flowrt::Error::BadArgument { what }) if what.contains("label out of range") => {}
            other => {
                return Err(format!(
                    "labels {:?} (ORT: {}) not rejected by eval_cond: {other:?}",
                    bad.labels, bad.ort_error
                ))
            }
        }
    }
    if !case.bad_labels.is_empty() {
        notes += &format!(", {} bad label sets rejected", case.bad_labels.len());
    }
    Ok(notes)
}

fn check(case: &Case) -> Result<String, String> {
    let opts = ExportOptions {
        roles: case.roles.clone(),
        ..Default::default()
    };
    let exported = flowrt_export::export_onnx(Path::new(&case.onnx), &opts);
    match (exported, &case.expect_error) {
        (Err(e), Some(want)) => {
            let msg = format!("{e:#}");
            if msg.contains(want.as_str()) {
                Ok(format!("refused as expected: {msg}"))
            } else {
                Err(format!(
                    "export failed, but the message does not contain {want:?}: {msg}"
                ))
            }
        }
        (Ok(_), Some(want)) => Err(format!(
            "expected the export to fail with {want:?}, but it succeeded (flowrt supports it \
             now? then drop it from EXPECT_ERROR in make_op_cases.py)"
        )),
        (Err(e), None) => Err(format!("export failed: {e:#}")),
        (Ok(bytes), None) => {
            let bytes = AlignedBytes::copy_from(&bytes);
            let model = Model::from_bytes(bytes.as_slice()).map_err(|e| format!("load: {e}"))?;
            let batch = case.want_shape[0];
            let got = eval(&model, case, batch, 0..batch);
            let err = scaled_err(&got, &case.want);
            let per_row = case.want.len() / batch;
            let mut row_err = 0f32;
            for r in 0..batch {
                let one = eval(&model, case, batch, r..r + 1);
                row_err = row_err.max(scaled_err(&one, &case.want[r * per_row..(r + 1) * per_row]));
            }
            let mut line = format!("err {err:.2e} (batch {batch}), {row_err:.2e} (row by row)");
            if err <= TOL && row_err <= TOL {
                line += &check_conditioning(&model, case)?;
                Ok(line)
            } else {
                Err(format!(
                    "MISMATCH {line} > {TOL:e}\n      flowrt {got:?}\n      ort    {:?}",
                    case.want
                ))
            }
        }
    }
}

#[test]
fn single_op_cases_match_onnxruntime() {
    let cases = cases();
    assert!(!cases.is_empty(), "no op cases in {}", ops_dir().display());
    let mut failures = Vec::new();
    for case in &cases {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(case)))
            .unwrap_or_else(|p| {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(format!("PANIC: {what}"))
            });
        match result {
            Ok(line) => println!("ok   {:<24} {line}", case.name),
            Err(msg) => {
                println!("FAIL {:<24} {msg}", case.name);
                failures.push(format!("{}: {msg}", case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} op cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn conditioning_cases_are_present() {
    // The manifest keeps its conditioning cases (an accidental regeneration without them
    // would silently drop the coverage).
    let cases = cases();
    let with = |role: &str| {
        cases
            .iter()
            .filter(|c| c.expect_error.is_none() && c.inputs.iter().any(|i| i.role == role))
            .count()
    };
    assert!(with("label") >= 5, "label cases: {}", with("label"));
    assert!(with("cond") >= 2 && with("guidance") >= 2);
    assert!(cases.iter().filter(|c| !c.bad_labels.is_empty()).count() >= 2);
    assert!(cases.iter().any(|c| c
        .inputs
        .iter()
        .any(|i| i.labels.is_some() && i.role == "label")));
}

#[test]
fn every_op_file_is_in_the_manifest() {
    let listed: Vec<PathBuf> = cases().into_iter().map(|c| c.onnx).collect();
    for entry in std::fs::read_dir(ops_dir()).expect("ops dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "onnx") {
            assert!(
                listed.contains(&path),
                "{} is not in the manifest",
                path.display()
            );
        }
    }
}
