//! The ONNX Runtime side of the CLI: `export --embed-onnx` → `sample --backend ort` equals
//! `--backend cpu`; `--onnx PATH`; clear errors (no embedded ONNX, no library) without
//! panics; and a `flowrt bench` smoke run whose last line is the ratio.
//!
//! Needs the ONNX Runtime library (`ORT_DYLIB_PATH` or the project's `.venv-ort/`, which
//! `scripts/test.sh` sets up); without it these tests FAIL.

mod common;
use common::*;

use std::path::Path;

use flowrt_export::npy;

#[test]
fn embed_onnx_round_trip_ort_equals_cpu() {
    let dir = TempDir::new("embed");
    for (model, file) in [
        ("moons_icfm", "model.dynamo.onnx"),
        ("checker_fm", "model.ts.onnx"),
        ("checker_fm_scalar_t", "model.dynamo.onnx"),
    ] {
        let onnx = format!("{model}/{file}");
        let frt = export_in(&dir, &format!("{model}.frt"), &onnx, "--embed-onnx");
        inspect_has(&frt, &["embedded ONNX"]);
        let cpu = dir.join(format!("{model}.cpu.npy"));
        let ort = dir.join(format!("{model}.ort.npy"));
        let common = "--seed 5 --num 33 --method rk4-38 --steps 8";
        ok(&[&"sample", &frt, &"-o", &cpu, &"--backend cpu", &common]);
        let out = ok(&[&"sample", &frt, &"-o", &ort, &"--backend ort", &common]);
        assert!(out.contains("backend ort"), "{out}");
        let scale = read_npy(&cpu).0.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = npy_diff(&cpu, &ort);
        assert!(err <= 1e-5 * scale, "{model}: max|ort - cpu| = {err:e}");
    }
}

/// `sample FRT --seed 1 --num 4 -o OUT --backend ort`, `extra` appended.
fn ort_args(frt: &Path, out: &Path, extra: &[&dyn Arg]) -> Vec<String> {
    args(&[
        &"sample",
        &frt,
        &"--seed 1 --num 4 -o",
        &out,
        &"--backend ort",
        &extra,
    ])
}

#[test]
fn ort_without_embedded_onnx_says_how() {
    let onnx = "moons_icfm/model.dynamo.onnx";
    let (dir, frt) = temp_export("noembed", onnx, "");
    let out = dir.join("o.npy");
    fails_with(&[&ort_args(&frt, &out, &[])], &["--embed-onnx", "--onnx"]);
    // --onnx PATH makes it work, and matches --backend cpu.
    ok(&[&ort_args(&frt, &out, &[&"--onnx", &fx(onnx)])]);
    let cpu = dir.join("c.npy");
    ok(&[&"sample", &frt, &"--seed 1 --num 4 -o", &cpu]);
    let (a, _) = npy::read_f32(&out).unwrap();
    let (b, _) = npy::read_f32(&cpu).unwrap();
    assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() <= 1e-4));
}

#[test]
fn missing_or_broken_library_is_a_clear_error() {
    let (dir, frt) = temp_export("nolib", "moons_icfm/model.ts.onnx", "--embed-onnx");
    let args = ort_args(&frt, &dir.join("o.npy"), &[]);
    let e = fails_env(
        &[&args],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    assert_contains(&e, &["ORT_DYLIB_PATH", "onnxruntime==1.31.1"]);
    // A file that is not a shared library.
    let fake = dir.join("libonnxruntime.so.1.31.1");
    std::fs::write(&fake, b"not a library").unwrap();
    let e = fails_env(&[&args], &[("ORT_DYLIB_PATH", s(&fake))]);
    assert!(e.contains("cannot load ONNX Runtime"), "{e}");
}

#[test]
fn bench_smoke_prints_ratio_last() {
    let (_dir, frt) = temp_export("bench", "moons_reflow/model.dynamo.onnx", "--embed-onnx");
    for extra in ["", "--eval"] {
        let flags = "--against ort --batch 3 --method heun --steps 2 --runs 3 --warmup 1";
        let out = ok(&[&"bench", &frt, &flags, &extra]);
        let last = out.lines().last().unwrap_or_default();
        let r: f64 = last
            .strip_prefix("ratio flowrt/ort: ")
            .unwrap_or_else(|| panic!("last line is not the ratio:\n{out}"))
            .parse()
            .unwrap();
        assert!(r.is_finite() && r > 0.0, "{out}");
        assert_contains(&out, &["flowrt ", "ort "]);
    }
}
