//! What is particular to the ONNX Runtime backend (`flowrt-ort`): sessions from embedded bytes
//! and from files agree, conditioning inputs of every element type reach ONNX Runtime as the
//! CPU executor feeds them (samples within 1e-5 of the CPU's, relative to `max(1, max |x|)`),
//! and ORT failures (bad model bytes, a signature that does not match) are `OrtError`s, never
//! panics. Fixtures x solvers, guidance, few-step and SDE sampling on ORT are the shared
//! per-backend suite of `backends.rs`.
//!
//! These tests need the ONNX Runtime library: `ORT_DYLIB_PATH`, or the project-local
//! `.venv-ort/` that `scripts/test.sh` creates. Without it they FAIL (they do not skip).

use flowrt::format::AlignedBytes;
use flowrt::grid::Uniform;
use flowrt::solver::Method;
use flowrt::Model;
use flowrt_export::ExportOptions;
use flowrt_ort::{OrtError, OrtOptions, OrtSession};
use flowrt_tests::{fixtures, max_abs_diff, EXPORTS};

/// Sample tolerance ORT vs CPU backend (issue 6: within 1e-5), relative to
/// `max(1, max |x|)` of the samples.
const TOL: f32 = 1e-5;

fn export_embedded(onnx: &std::path::Path) -> AlignedBytes {
    let opts = ExportOptions {
        embed_onnx: true,
        ..Default::default()
    };
    let bytes = flowrt_export::export_onnx(onnx, &opts)
        .unwrap_or_else(|e| panic!("export {}: {e:#}", onnx.display()));
    AlignedBytes::copy_from(&bytes)
}

fn ort_sample(s: &mut OrtSession, method: Method, steps: usize, noise: &[f32]) -> Vec<f32> {
    let grid = Uniform::unit(steps).unwrap();
    let mut x = noise.to_vec();
    flowrt_ort::sample(s, method, &grid, &mut x).unwrap_or_else(|e| panic!("{e}"));
    x
}

#[test]
fn library_is_found() {
    let p = flowrt_ort::library_path().unwrap_or_else(|e| panic!("{e}"));
    assert!(p.is_file(), "{}", p.display());
    flowrt_ort::environment().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn onnx_file_and_embedded_bytes_agree() {
    // --onnx PATH: the file with its external data (dynamo) vs the inlined embedded copy.
    for fx in fixtures() {
        let path = fx.dir.join("model.dynamo.onnx");
        let bytes = export_embedded(&path);
        let model = Model::from_bytes(bytes.as_slice()).unwrap();
        let opts = OrtOptions::default();
        let mut a = OrtSession::from_file(&model, &path, &opts).unwrap();
        let mut b = OrtSession::from_bytes(&model, model.embedded_onnx().unwrap(), &opts).unwrap();
        let mut noise = vec![0f32; 5 * model.state_dim()];
        flowrt::rng::fill_normal(3, &mut noise);
        let xa = ort_sample(&mut a, Method::Rk4_38, 8, &noise);
        let xb = ort_sample(&mut b, Method::Rk4_38, 8, &noise);
        assert_eq!(xa, xb, "{}", fx.name);
    }
}

#[test]
fn bad_onnx_bytes_are_an_error_not_a_panic() {
    let fx = &fixtures()[0];
    let bytes = flowrt_tests::export(&fx.dir.join(EXPORTS[0].1));
    let model = Model::from_bytes(bytes.as_slice()).unwrap();
    assert_eq!(model.embedded_onnx(), None, "not embedded unless asked");
    for junk in [&b""[..], &b"not an onnx model"[..], &[0xFFu8; 64][..]] {
        match OrtSession::from_bytes(&model, junk, &OrtOptions::default()) {
            Err(OrtError::Ort(m)) => assert!(!m.is_empty()),
            Err(e) => panic!("expected an ORT error, got {e}"),
            Ok(_) => panic!("junk accepted"),
        }
    }
    // A missing --onnx file.
    let e = OrtSession::from_file(
        &model,
        "/nonexistent/model.onnx".as_ref(),
        &OrtOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[test]
fn mismatched_signature_is_an_error() {
    // An ONNX model whose inputs do not match the .frt signature (xt vs x, t).
    let all = fixtures();
    let xt = all
        .iter()
        .find(|f| f.roles == ["xt"])
        .expect("an xt fixture");
    let x_t = all
        .iter()
        .find(|f| f.roles.len() == 2)
        .expect("an x, t fixture");
    let bytes = flowrt_tests::export(&xt.dir.join("model.ts.onnx"));
    let model = Model::from_bytes(bytes.as_slice()).unwrap();
    let e = OrtSession::from_file(
        &model,
        &x_t.dir.join("model.ts.onnx"),
        &OrtOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, OrtError::Signature(_)), "{e}");
}

#[test]
fn wrong_sizes_are_flowrt_errors() {
    let fx = &fixtures()[0];
    let bytes = export_embedded(&fx.dir.join(EXPORTS[0].1));
    let model = Model::from_bytes(bytes.as_slice()).unwrap();
    let mut s = OrtSession::from_bytes(
        &model,
        model.embedded_onnx().unwrap(),
        &OrtOptions::default(),
    )
    .unwrap();
    let grid = Uniform::unit(2).unwrap();
    let mut x = vec![0f32; model.state_dim() + 1];
    let e = flowrt_ort::sample(&mut s, Method::Euler, &grid, &mut x).unwrap_err();
    assert!(
        matches!(e, OrtError::Flowrt(flowrt::Error::ShapeMismatch { .. })),
        "{e}"
    );
    let mut x = vec![f32::NAN; model.state_dim()];
    let e = flowrt_ort::sample(&mut s, Method::Euler, &grid, &mut x).unwrap_err();
    assert!(
        matches!(e, OrtError::Flowrt(flowrt::Error::NonFiniteInput { .. })),
        "{e}"
    );
    assert!(s.field(0).is_err());
}

// ---------------------------------------------------------------------------------------------
// Conditioning inputs (label / cond / guidance) through ONNX Runtime: the single-op cases of
// tests/fixtures/ops/ with `t_const` (one time for all rows), against the onnxruntime output
// the generator stored, and against the CPU backend.

use flowrt::exec::CpuField;
use flowrt::field::Conditioning;
use flowrt::format::InputRole;

/// One input of a case: (role, batched, f32 data, integer labels).
type CaseInput = (String, bool, Vec<f32>, Option<Vec<i64>>);

/// One conditioning op case: ONNX path, per-role inputs, stored onnxruntime output.
struct CondCase {
    name: String,
    onnx: std::path::PathBuf,
    inputs: Vec<CaseInput>,
    want: Vec<f32>,
    bad_labels: Vec<Vec<i64>>,
}

fn cond_cases() -> Vec<CondCase> {
    let dir = flowrt_tests::fixtures_dir().join("ops");
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let s = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["t_const"] == true && c["expect_error"] != true)
        .map(|c| {
            let inputs = c["inputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    let path = dir.join(s(&i["file"]));
                    let batched = i["shape"][0] == "batch";
                    if i["dtype"].is_string() {
                        let (l, _) = flowrt_export::npy::read_labels(&path).unwrap();
                        let f = l.iter().map(|v| *v as f32).collect();
                        (s(&i["role"]), batched, f, Some(l))
                    } else {
                        (s(&i["role"]), batched, flowrt_tests::npy(&path).0, None)
                    }
                })
                .collect();
            let bad_labels = c["bad_labels"]
                .as_array()
                .map(|b| {
                    b.iter()
                        .map(|e| {
                            flowrt_export::npy::read_labels(&dir.join(s(&e["file"])))
                                .unwrap()
                                .0
                        })
                        .collect()
                })
                .unwrap_or_default();
            CondCase {
                name: s(&c["name"]),
                onnx: dir.join(s(&c["file"])),
                inputs,
                want: flowrt_tests::npy(&dir.join(s(&c["output"]["file"]))).0,
                bad_labels,
            }
        })
        .collect()
}

/// Owned conditioning, state and time of a case (rows `0..batch`).
struct CondData {
    t: f32,
    x: Vec<f32>,
    label: Option<Vec<i64>>,
    cond: Option<Vec<f32>>,
    guidance: Option<Vec<f32>>,
}

impl CondData {
    fn of(case: &CondCase, model: &Model<'_>, batch: usize) -> CondData {
        let get = |r: InputRole| case.inputs.iter().find(|i| i.0 == r.name());
        let d = model.state_dim();
        let (t, x) = match (get(InputRole::X), get(InputRole::Xt)) {
            (Some(x), _) => (get(InputRole::T).unwrap().2[0], x.2.clone()),
            (None, Some(xt)) => (
                xt.2[d],
                xt.2.chunks_exact(d + 1)
                    .flat_map(|r| r[..d].to_vec())
                    .collect(),
            ),
            _ => panic!("{}: no state input", case.name),
        };
        CondData {
            t,
            x,
            label: get(InputRole::Label).and_then(|l| l.3.clone()),
            cond: get(InputRole::Cond).map(|c| c.2.clone()),
            guidance: get(InputRole::Guidance).map(|g| {
                if g.1 {
                    g.2.clone()
                } else {
                    vec![g.2[0]; batch]
                }
            }),
        }
    }

    /// Rows `rows` of the conditioning.
    fn rows(&self, rows: std::ops::Range<usize>, cond_dim: usize) -> Conditioning<'_> {
        Conditioning {
            label: self.label.as_deref().map(|l| &l[rows.clone()]),
            cond: self
                .cond
                .as_deref()
                .map(|c| &c[rows.start * cond_dim..rows.end * cond_dim]),
            guidance: self.guidance.as_deref().map(|g| &g[rows.clone()]),
            step: None,
        }
    }
}

#[test]
fn ort_conditioning_inputs_match_onnxruntime_and_cpu() {
    let cases = cond_cases();
    assert!(cases.len() >= 8, "only {} conditioning cases", cases.len());
    let mut worst = 0f32;
    for case in &cases {
        let bytes = export_embedded(&case.onnx);
        let model = Model::from_bytes(bytes.as_slice()).unwrap();
        let d = model.state_dim();
        let batch = case.want.len() / d;
        let data = CondData::of(case, &model, batch);
        let cd = model.cond_dim().unwrap_or(0);
        let mut s = OrtSession::from_bytes(
            &model,
            model.embedded_onnx().unwrap(),
            &OrtOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let mut arena = AlignedBytes::zeroed(model.required_arena_bytes(batch).unwrap());
        let mut cpu = CpuField::new(&model, batch, arena.as_mut_slice()).unwrap();
        let mut f = s.field(batch).unwrap();
        // Whole batch, then every row alone (fewer rows than the field's batch).
        let spans = std::iter::once(0..batch).chain((0..batch).map(|r| r..r + 1));
        for rows in spans {
            let c = data.rows(rows.clone(), cd);
            let x = &data.x[rows.start * d..rows.end * d];
            let mut v_ort = vec![0f32; x.len()];
            f.eval_cond(data.t, x, &c, &mut v_ort)
                .unwrap_or_else(|e| panic!("{} rows {rows:?}: {e}", case.name));
            let mut v_cpu = vec![0f32; x.len()];
            cpu.eval_cond(data.t, x, &c, &mut v_cpu).unwrap();
            let want = &case.want[rows.start * d..rows.end * d];
            // The Rust ORT binding and the Python onnxruntime run the same kernels.
            let e_ort = max_abs_diff(&v_ort, want);
            let e_cpu = max_abs_diff(&v_cpu, want);
            worst = worst.max(e_cpu);
            assert!(e_ort <= 1e-6, "{} rows {rows:?}: ort {e_ort:e}", case.name);
            assert!(e_cpu <= 1e-5, "{} rows {rows:?}: cpu {e_cpu:e}", case.name);
        }
        // Labels onnxruntime rejects are flowrt errors on both backends.
        for bad in &case.bad_labels {
            let c = Conditioning {
                label: Some(bad),
                ..data.rows(0..batch, cd)
            };
            let mut v = vec![0f32; batch * d];
            let e = f.eval_cond(data.t, &data.x, &c, &mut v).unwrap_err();
            assert!(
                matches!(e, OrtError::Flowrt(flowrt::Error::BadArgument { .. })),
                "{}: {e}",
                case.name
            );
        }
        // Missing conditioning is the CPU backend's error, not an ORT failure.
        if data.label.is_some() {
            let c = Conditioning {
                label: None,
                ..data.rows(0..batch, cd)
            };
            let mut v = vec![0f32; batch * d];
            let e = f.eval_cond(data.t, &data.x, &c, &mut v).unwrap_err();
            assert_eq!(
                e,
                OrtError::Flowrt(flowrt::Error::BadArgument {
                    what: "model needs a label input"
                }),
                "{}",
                case.name
            );
        }
        // sample_cond: ORT and CPU integrate the same conditioned field.
        let c = data.rows(0..batch, cd);
        let grid = Uniform::unit(4).unwrap();
        let mut x_cpu = data.x.clone();
        let need = flowrt::sampler::sample_arena_bytes(&model, Method::Heun, batch).unwrap();
        let mut work = AlignedBytes::zeroed(need);
        flowrt::sampler::sample_cond(&model, Method::Heun, &grid, &mut x_cpu, &c, &mut work)
            .unwrap();
        let mut x_ort = data.x.clone();
        flowrt_ort::sample_cond(&mut s, Method::Heun, &grid, &mut x_ort, &c)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let scale = x_cpu.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = max_abs_diff(&x_ort, &x_cpu);
        assert!(err <= TOL * scale, "{}: sample_cond {err:e}", case.name);
        assert!(x_cpu != data.x, "{}: sampling moved nothing", case.name);
    }
    println!(
        "{} conditioning cases: CPU eval_cond within {worst:.2e} of onnxruntime",
        cases.len()
    );
}
