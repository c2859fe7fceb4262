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

use std::path::{Path, PathBuf};

use flowrt::format::AlignedBytes;
use flowrt::ir::Role;
use flowrt::Model;
use flowrt_export::ExportOptions;
use flowrt_tests::{fixtures_dir, npy};

/// Per-element tolerance, scaled by `max(1, |reference|)`.
const TOL: f32 = 1e-5;

struct Input {
    role: String,
    batched: bool,
    data: Vec<f32>,
}

struct Case {
    name: String,
    onnx: PathBuf,
    inputs: Vec<Input>,
    want: Vec<f32>,
    want_shape: Vec<usize>,
    roles: Vec<(String, Role)>,
    expect_error: Option<String>,
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
                .map(|i| Input {
                    role: s(&i["role"]),
                    batched: i["shape"].as_array().expect("shape").first()
                        == Some(&serde_json::Value::from("batch")),
                    data: npy(&dir.join(s(&i["file"]))).0,
                })
                .collect();
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

/// Runs the graph on rows `rows` of the case's inputs (all rows at once).
fn eval(model: &Model<'_>, case: &Case, batch: usize, rows: std::ops::Range<usize>) -> Vec<f32> {
    let n = rows.len();
    let slices: Vec<&[f32]> = model
        .inputs()
        .map(|info| {
            let input = case
                .inputs
                .iter()
                .find(|i| i.role == info.role.name())
                .unwrap_or_else(|| {
                    panic!("{}: no input with role {}", case.name, info.role.name())
                });
            if input.batched {
                let per_row = input.data.len() / batch;
                &input.data[rows.start * per_row..rows.end * per_row]
            } else {
                &input.data[..]
            }
        })
        .collect();
    let out_len = case.want.len() / batch * n;
    let mut out = vec![0f32; out_len];
    let mut arena = AlignedBytes::zeroed(model.graph_arena_bytes(n).expect("arena size"));
    flowrt::exec::run(model, n, &slices, &mut out, arena.as_mut_slice())
        .unwrap_or_else(|e| panic!("{}: run at batch {n}: {e}", case.name));
    out
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
            let line = format!("err {err:.2e} (batch {batch}), {row_err:.2e} (row by row)");
            if err <= TOL && row_err <= TOL {
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
