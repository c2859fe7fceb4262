//! `flowrt` CLI with conditioning inputs: export a model with `label` (int64), `cond` and
//! `guidance` inputs (the op case `tests/fixtures/ops/label_cond_guidance.onnx`), inspect it,
//! and sample it with `--label Y.npy` / `--label-value K`, `--cond C.npy`,
//! `--guidance-value G` on both backends; a missing or unused option is a one-line error.
//!
//! The ORT part needs the ONNX Runtime library (`ORT_DYLIB_PATH` or the project's
//! `.venv-ort/`), like `ort_cli.rs`.

mod common;
use common::*;

use flowrt::field::Conditioning;
use flowrt::format::AlignedBytes;
use flowrt::grid::Uniform;
use flowrt::solver::Method;
use flowrt::Model;
use flowrt_export::npy;

/// The op case's file `label_cond_guidance.<ext>`.
fn case(ext: &str) -> std::path::PathBuf {
    fx(&format!("ops/label_cond_guidance.{ext}"))
}

/// A temp dir with the op case exported (ONNX embedded) to `model.frt`.
fn export_cond(tag: &str) -> (TempDir, std::path::PathBuf) {
    temp_export(tag, "ops/label_cond_guidance.onnx", "--embed-onnx")
}

#[test]
fn inspect_shows_conditioning_roles() {
    let (_dir, frt) = export_cond("cond-inspect");
    inspect_has(
        &frt,
        &[
            "role label",
            "(8 classes)",
            "role cond",
            "(cond dim 4)",
            "role guidance",
            "Gather x1",
        ],
    );
    let v = inspect_json(&frt);
    assert_eq!(v["label_classes"], 8);
    assert_eq!(v["cond_dim"], 4);
    assert_eq!(input_roles(&v), ["x", "t", "label", "cond", "guidance"]);
}

#[test]
fn sample_with_label_cond_guidance_matches_the_library() {
    let (dir, frt) = export_cond("cond-sample");
    let noise = case("in0.npy");
    let labels = case("in2.npy");
    let cond = case("in3.npy");
    let out = dir.path("x.npy");
    // The sample command line with `extra` options.
    let cmd =
        |extra: &[&dyn Arg]| sample_args(&frt, &noise, &[&"--method heun --steps 3", &extra], &out);
    let run_ok = |extra: &[&dyn Arg]| {
        ok(&[&cmd(extra)]);
        npy::read_f32(&out).unwrap().0
    };
    let full: &[&dyn Arg] = &[
        &"--label",
        &labels,
        &"--cond",
        &cond,
        &"--guidance-value 2.5",
    ];
    let got = run_ok(full);
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
    let k3 = run_ok(&[&"--label-value 3 --cond", &cond, &"--guidance-value 2.5"]);
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
    let with_float = run_ok(&[&"--label", &fl, &"--cond", &cond, &"--guidance-value 2.5"]);
    assert_eq!(with_float, got);

    // ONNX Runtime backend: same loop, ORT kernels.
    let ort = run_ok(&[&full, &"--backend ort"]);
    let err = flowrt_export::max_abs_diff(&ort, &got);
    assert!(err <= 1e-4, "ort vs cpu: {err:e}");

    // Errors: one line each.
    let mut bad_f = yf.clone();
    bad_f[0] = 1.5;
    npy::write_f32(&fl, &bad_f, &[y.len()]).unwrap();
    let col = dir.path("labels_col.npy");
    npy::write_f32(&col, &yf, &[y.len(), 1]).unwrap();
    // `LABEL... --cond COND --guidance-value 2`.
    let g2 = |label: &[&dyn Arg], cond: &std::path::Path| {
        args(&[&label, &"--cond", &cond, &"--guidance-value 2"])
    };
    let cases = [
        (args(&[&"--cond", &cond, &"--guidance-value 2"]), "--label"),
        (
            args(&[&"--label", &labels, &"--guidance-value 2"]),
            "--cond",
        ),
        (args(&[&"--label", &labels, &"--cond", &cond]), "guidance"),
        (g2(&[&"--label-value 8"], &cond), "out of range"),
        (g2(&[&"--label-value=-1"], &cond), "out of range"),
        (g2(&[&"--label", &fl], &cond), "not an integer"),
        (g2(&[&"--label", &col], &cond), "need [5]"),
        (g2(&[&"--label-value 1"], &labels), "dtype"),
        (g2(&[&"--label-value 1"], &noise), "need [5, 4]"),
    ];
    for (extra, needle) in cases {
        let msg = fails(&[&cmd(&[&extra])]);
        assert!(msg.contains(needle), "{extra:?}: `{msg}` lacks `{needle}`");
        assert_eq!(msg.trim().lines().count(), 1, "{extra:?}: {msg}");
    }
}

#[test]
fn conditioning_options_on_an_unconditioned_model_are_errors() {
    let (dir, frt) = temp_export("cond-unused", "checker_fm/model.ts.onnx", "");
    let out = dir.path("x.npy");
    for (extra, needle) in [
        ("--label-value 1", "no label input"),
        ("--guidance-value 1", "no guidance input"),
    ] {
        fails_with(
            &[&"sample", &frt, &"--seed 0 --num 4 -o", &out, &extra],
            &[needle],
        );
    }
}
