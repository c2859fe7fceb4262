//! `flowrt` CLI with conditioning inputs: export a model with `label` (int64), `cond` and
//! `guidance` inputs (the op case `tests/fixtures/ops/label_cond_guidance.onnx`), inspect it,
//! and sample it with `--label Y.npy` / `--label-value K`, `--cond C.npy`,
//! `--guidance-value G` on both backends; a missing or unused option is a one-line error.
//!
//! The ORT part needs the ONNX Runtime library (`ORT_DYLIB_PATH` or the project's
//! `.venv-ort/`), like `ort_cli.rs`.

use std::path::PathBuf;

mod common;
use common::*;

use flowrt::field::Conditioning;
use flowrt::format::AlignedBytes;
use flowrt::grid::Uniform;
use flowrt::solver::Method;
use flowrt::Model;
use flowrt_export::npy;

fn case(file: &str) -> PathBuf {
    fixtures().join("ops").join(file)
}

fn export_cond(dir: &TempDir) -> PathBuf {
    let frt = dir.path("cond.frt");
    let onnx = case("label_cond_guidance.onnx");
    ok(&[&"export", &onnx, &"-o", &frt, &"--embed-onnx"]);
    frt
}

#[test]
fn inspect_shows_conditioning_roles() {
    let dir = TempDir::new("cond-inspect");
    let frt = export_cond(&dir);
    let text = ok(&[&"inspect", &frt]);
    for needle in [
        "role label",
        "(8 classes)",
        "role cond",
        "(cond dim 4)",
        "role guidance",
        "Gather x1",
        "roles: x=x,t=t,y=label,cond=cond,guidance=guidance",
    ] {
        assert!(text.contains(needle), "inspect lacks `{needle}`:\n{text}");
    }
    let json = ok(&[&"inspect", &frt, &"--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["label_classes"], 8);
    assert_eq!(v["cond_dim"], 4);
    let roles: Vec<&str> = v["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["x", "t", "label", "cond", "guidance"]);
}

#[test]
fn sample_with_label_cond_guidance_matches_the_library() {
    let dir = TempDir::new("cond-sample");
    let frt = export_cond(&dir);
    let noise = case("label_cond_guidance.in0.npy");
    let labels = case("label_cond_guidance.in2.npy");
    let cond = case("label_cond_guidance.in3.npy");
    let out = dir.path("x.npy");
    let base = [
        "sample",
        s(&frt),
        "--noise",
        s(&noise),
        "--method",
        "heun",
        "--steps",
        "3",
    ];
    let args = |extra: &[&str]| -> Vec<String> {
        base.iter()
            .chain(extra)
            .map(|a| a.to_string())
            .chain(["-o".into(), s(&out).into()])
            .collect()
    };
    let run_ok = |extra: &[&str]| {
        let a = args(extra);
        ok(&[&a]);
        npy::read_f32(&out).unwrap().0
    };
    let full = [
        "--label",
        s(&labels),
        "--cond",
        s(&cond),
        "--guidance-value",
        "2.5",
    ];
    let got = run_ok(&full);
    // The same through the library.
    let bytes = AlignedBytes::copy_from(&std::fs::read(&frt).unwrap());
    let m = Model::from_bytes(bytes.as_slice()).unwrap();
    let (mut x, _) = npy::read_f32(&noise).unwrap();
    let (y, _) = npy::read_labels(&labels).unwrap();
    let (c, _) = npy::read_f32(&cond).unwrap();
    let g = vec![2.5f32; y.len()];
    let cd = Conditioning {
        label: Some(&y),
        cond: Some(&c),
        guidance: Some(&g),
        step: None,
    };
    let need = flowrt::sampler::sample_arena_bytes(&m, Method::Heun, y.len()).unwrap();
    let mut arena = AlignedBytes::zeroed(need);
    let grid = Uniform::unit(3).unwrap();
    flowrt::sampler::sample_cond(&m, Method::Heun, &grid, &mut x, &cd, arena.as_mut_slice())
        .unwrap();
    assert_eq!(got, x);

    // --label-value K: every row gets class K.
    let k3 = run_ok(&[
        "--label-value",
        "3",
        "--cond",
        s(&cond),
        "--guidance-value",
        "2.5",
    ]);
    let (mut x, _) = npy::read_f32(&noise).unwrap();
    let y3 = vec![3i64; y.len()];
    let cd3 = Conditioning {
        label: Some(&y3),
        ..cd
    };
    flowrt::sampler::sample_cond(&m, Method::Heun, &grid, &mut x, &cd3, arena.as_mut_slice())
        .unwrap();
    assert_eq!(k3, x);
    assert_ne!(k3, got);

    // Labels as floats with integer values are accepted; 1.5 is not.
    let fl = dir.path("labels_f32.npy");
    let yf: Vec<f32> = y.iter().map(|v| *v as f32).collect();
    npy::write_f32(&fl, &yf, &[y.len()]).unwrap();
    let with_float = run_ok(&[
        "--label",
        s(&fl),
        "--cond",
        s(&cond),
        "--guidance-value",
        "2.5",
    ]);
    assert_eq!(with_float, got);

    // ONNX Runtime backend: same loop, ORT kernels.
    let ort = run_ok(&[
        "--label",
        s(&labels),
        "--cond",
        s(&cond),
        "--guidance-value",
        "2.5",
        "--backend",
        "ort",
    ]);
    let err = flowrt_export::max_abs_diff(&ort, &got);
    assert!(err <= 1e-4, "ort vs cpu: {err:e}");

    // Errors: one line each.
    let mut bad_f = yf.clone();
    bad_f[0] = 1.5;
    npy::write_f32(&fl, &bad_f, &[y.len()]).unwrap();
    let col = dir.path("labels_col.npy");
    npy::write_f32(&col, &yf, &[y.len(), 1]).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--cond", s(&cond), "--guidance-value", "2"], "--label"),
        (
            vec!["--label", s(&labels), "--guidance-value", "2"],
            "--cond",
        ),
        (vec!["--label", s(&labels), "--cond", s(&cond)], "guidance"),
        (
            vec![
                "--label-value",
                "8",
                "--cond",
                s(&cond),
                "--guidance-value",
                "2",
            ],
            "out of range",
        ),
        (
            vec![
                "--label-value=-1",
                "--cond",
                s(&cond),
                "--guidance-value",
                "2",
            ],
            "out of range",
        ),
        (
            vec![
                "--label",
                s(&fl),
                "--cond",
                s(&cond),
                "--guidance-value",
                "2",
            ],
            "not an integer",
        ),
        (
            vec![
                "--label",
                s(&col),
                "--cond",
                s(&cond),
                "--guidance-value",
                "2",
            ],
            "need [5]",
        ),
        (
            vec![
                "--label-value",
                "1",
                "--cond",
                s(&labels),
                "--guidance-value",
                "2",
            ],
            "dtype",
        ),
        (
            vec![
                "--label-value",
                "1",
                "--cond",
                s(&noise),
                "--guidance-value",
                "2",
            ],
            "need [5, 4]",
        ),
    ];
    for (extra, needle) in cases {
        let a = args(&extra);
        let msg = fails(&[&a]);
        assert!(msg.contains(needle), "{extra:?}: `{msg}` lacks `{needle}`");
        assert_eq!(msg.trim().lines().count(), 1, "{extra:?}: {msg}");
    }
}

#[test]
fn conditioning_options_on_an_unconditioned_model_are_errors() {
    let dir = TempDir::new("cond-unused");
    let frt = dir.path("m.frt");
    let onnx = fixtures().join("checker_fm").join("model.ts.onnx");
    ok(&[&"export", &onnx, &"-o", &frt]);
    let out = dir.path("x.npy");
    for (extra, needle) in [
        (["--label-value", "1"], "no label input"),
        (["--guidance-value", "1"], "no guidance input"),
    ] {
        let mut a = vec![
            "sample",
            s(&frt),
            "--seed",
            "0",
            "--num",
            "4",
            "-o",
            s(&out),
        ];
        a.extend(extra);
        let msg = fails(&[&a]);
        assert!(msg.contains(needle), "{msg}");
    }
}
