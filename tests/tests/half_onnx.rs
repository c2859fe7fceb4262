//! Half-precision ONNX models (float16 / bfloat16 weights, inputs, outputs, `Constant`s and
//! `Cast`s) import as float32: `flowrt export` widens every half value exactly, and the
//! exported model computes what ONNX Runtime computes on the same graph widened to float32.
//!
//! The fixtures are `tests/fixtures/half/` (`make_half_fixtures.py`, no torch): half copies
//! of `moons_icfm`, the float32 reference copy of each (widened in numpy) and ONNX Runtime's
//! velocities of that reference at `moons_icfm`'s probe points, plus tiny graphs of types
//! flowrt cannot import. The ONNX Runtime test needs the library (`ORT_DYLIB_PATH` or the
//! project-local `.venv-ort/`, as `ort.rs`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use flowrt::format::{AlignedBytes, InputRole};
use flowrt::Model;
use flowrt_export::ExportOptions;
use flowrt_ort::{OrtOptions, OrtSession};
use flowrt_tests::{export, fixtures_dir, max_abs_diff, npy};

/// Velocity tolerance against onnxruntime (as `conformance.rs`: ≤ 1e-5 max abs).
const VELOCITY_TOL: f32 = 1e-5;

/// The half-precision fixtures: (name, what it is).
const HALF: [(&str, &str); 3] = [
    (
        "moons_f16",
        "float16 everywhere, a float16 Constant in int32_data",
    ),
    ("moons_bf16", "bfloat16 everywhere"),
    (
        "moons_f16_cast",
        "float32 I/O, Cast to float16 inside, float16 external data",
    ),
];

fn half_dir() -> PathBuf {
    fixtures_dir().join("half")
}

/// `moons_icfm`'s probe points: (x [64, 2], t [64]).
fn probes() -> (Vec<f32>, Vec<f32>) {
    let dir = fixtures_dir().join("moons_icfm");
    (
        npy(&dir.join("probe_x.npy")).0,
        npy(&dir.join("probe_t.npy")).0,
    )
}

/// The velocities of a one-input (`xt = cat([x, t])`) model at the probe points.
fn velocities(model: &Model<'_>, px: &[f32], pt: &[f32]) -> Vec<f32> {
    let dim = model.state_dim();
    let rows = pt.len();
    let roles: Vec<InputRole> = model.inputs().map(|i| i.role).collect();
    assert_eq!(roles, [InputRole::Xt], "the moons fixtures take xt");
    let xt: Vec<f32> = (0..rows)
        .flat_map(|r| px[r * dim..(r + 1) * dim].iter().copied().chain([pt[r]]))
        .collect();
    let mut out = vec![0f32; rows * dim];
    let mut arena = AlignedBytes::zeroed(model.graph_arena_bytes(rows).unwrap());
    flowrt::exec::run(model, rows, &[&xt[..]], &mut out, arena.as_mut_slice()).unwrap();
    out
}

fn exported_velocities(onnx: &std::path::Path) -> Vec<f32> {
    let (px, pt) = probes();
    let bytes = export(onnx);
    let model = Model::from_bytes(bytes.as_slice()).unwrap();
    velocities(&model, &px, &pt)
}

#[test]
fn half_models_match_onnxruntime_on_the_widened_graph() {
    for (name, what) in HALF {
        let got = exported_velocities(&half_dir().join(format!("{name}.onnx")));
        let (want, shape) = npy(&half_dir().join(format!("v_ort_{name}.npy")));
        assert_eq!(shape, [64, 2]);
        let err = max_abs_diff(&got, &want);
        println!("velocity {name:<15} max|flowrt - ort(widened)| = {err:.3e}  ({what})");
        assert!(
            err <= VELOCITY_TOL,
            "{name}: velocity error {err:e} > {VELOCITY_TOL:e}"
        );
    }
}

#[test]
fn widening_is_exact() {
    // The Rust widening and the reference's (numpy) give the same f32 weights: the exported
    // half model and its float32 reference copy compute bit-identical velocities.
    for (name, _) in HALF {
        let half = exported_velocities(&half_dir().join(format!("{name}.onnx")));
        let reference = exported_velocities(&half_dir().join(format!("ref_{name}.onnx")));
        assert!(
            half.iter()
                .zip(&reference)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: the half model and its widened reference differ"
        );
    }
}

#[test]
fn half_weights_are_really_used() {
    // Not the float32 weights of moons_icfm in disguise: the half-precision rounding of the
    // weights moves the velocities a little (f16 ~2e-3, bf16 ~1e-2), and no more.
    let f32_model = exported_velocities(&fixtures_dir().join("moons_icfm/model.ts.onnx"));
    for (name, lo, hi) in [
        ("moons_f16", 1e-4, 1e-2),
        ("moons_bf16", 1e-3, 5e-2),
        ("moons_f16_cast", 1e-4, 1e-2),
    ] {
        let half = exported_velocities(&half_dir().join(format!("{name}.onnx")));
        let d = max_abs_diff(&half, &f32_model);
        println!("velocity {name:<15} max|half - f32 model| = {d:.3e}");
        assert!(d > lo && d < hi, "{name}: {d:e} not in ({lo:e}, {hi:e})");
    }
}

#[test]
fn embedded_onnx_is_the_widened_graph() {
    // `export --embed-onnx` stores the float32 graph flowrt imported, so ONNX Runtime can run
    // the artifact with the `.frt` signature (its float32 inputs) and agrees with flowrt.
    let (px, pt) = probes();
    for (name, _) in HALF {
        let opts = ExportOptions {
            embed_onnx: true,
            ..Default::default()
        };
        let path = half_dir().join(format!("{name}.onnx"));
        let bytes = flowrt_export::export_onnx(&path, &opts)
            .unwrap_or_else(|e| panic!("export {}: {e:#}", path.display()));
        let bytes = AlignedBytes::copy_from(&bytes);
        let model = Model::from_bytes(bytes.as_slice()).unwrap();
        let mut s = OrtSession::from_bytes(
            &model,
            model.embedded_onnx().unwrap(),
            &OrtOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let dim = model.state_dim();
        let mut got = vec![0f32; pt.len() * dim];
        for (r, t) in pt.iter().enumerate() {
            let rows = r * dim..(r + 1) * dim;
            s.eval(*t, &px[rows.clone()], &mut got[rows])
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let (want, _) = npy(&half_dir().join(format!("v_ort_{name}.npy")));
        let err = max_abs_diff(&got, &want);
        println!("velocity {name:<15} max|ort(embedded) - ort(widened)| = {err:.3e}");
        assert!(err <= VELOCITY_TOL, "{name}: {err:e}");
        let cpu = velocities(&model, &px, &pt);
        assert!(max_abs_diff(&cpu, &got) <= VELOCITY_TOL, "{name}");
    }
}

#[test]
fn unsupported_types_are_one_line_errors_not_panics() {
    for (file, want) in [
        (
            "bad_float8_weight.pb",
            &["initializer `w8` is float8e4m3fn", "float16 / bfloat16"][..],
        ),
        (
            "bad_complex_input.pb",
            &["graph input `xt` is complex64", "float16 / bfloat16"][..],
        ),
        (
            "bad_f16_truncated.pb",
            &[
                "initializer `w`",
                "3 bytes of raw_data",
                "dims [2, 3] of float16",
            ][..],
        ),
    ] {
        let path = half_dir().join(file);
        let result = catch_unwind(AssertUnwindSafe(|| {
            flowrt_export::export_onnx(&path, &Default::default())
        }));
        let e = match result {
            Ok(Err(e)) => format!("{e:#}"),
            Ok(Ok(_)) => panic!("{file}: exported"),
            Err(_) => panic!("{file}: the exporter panicked"),
        };
        println!("{file}: {e}");
        assert!(
            !e.contains('\n') && !e.contains("  "),
            "{file}: not one clean line: {e}"
        );
        assert!(e.contains(file), "{file}: the message names no file: {e}");
        for w in want {
            assert!(e.contains(w), "{file}: {e:?} lacks {w:?}");
        }
    }
}
