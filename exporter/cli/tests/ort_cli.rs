//! The ONNX Runtime side of the CLI: `export --embed-onnx` → `sample --backend ort` equals
//! `--backend cpu`; `--onnx PATH`; clear errors (no embedded ONNX, no library) without
//! panics; and a `flowrt bench` smoke run whose last line is the ratio.
//!
//! Needs the ONNX Runtime library (`ORT_DYLIB_PATH` or the project's `.venv-ort/`, which
//! `scripts/test.sh` sets up); without it these tests FAIL.

mod common;
use common::*;

use flowrt_export::npy;

#[test]
fn embed_onnx_round_trip_ort_equals_cpu() {
    let dir = TempDir::new("embed");
    for (model, file) in [
        ("moons_icfm", "model.dynamo.onnx"),
        ("checker_fm", "model.ts.onnx"),
        ("checker_fm_scalar_t", "model.dynamo.onnx"),
    ] {
        let onnx = fixtures().join(model).join(file);
        let frt = dir.join(format!("{model}.frt"));
        ok(&[&"export", &onnx, &"-o", &frt, &"--embed-onnx"]);
        let insp = ok(&[&"inspect", &frt]);
        assert!(insp.contains("embedded ONNX"), "{insp}");
        let cpu = dir.join(format!("{model}.cpu.npy"));
        let ort = dir.join(format!("{model}.ort.npy"));
        let common = [
            "--seed", "5", "--num", "33", "--method", "rk4-38", "--steps", "8",
        ];
        let mut a = vec!["sample", s(&frt), "-o", s(&cpu), "--backend", "cpu"];
        a.extend(common);
        ok(&[&a]);
        let mut b = vec!["sample", s(&frt), "-o", s(&ort), "--backend", "ort"];
        b.extend(common);
        let out = ok(&[&b]);
        assert!(out.contains("backend ort"), "{out}");
        let (xc, shc) = npy::read_f32(&cpu).unwrap();
        let (xo, sho) = npy::read_f32(&ort).unwrap();
        assert_eq!(shc, sho);
        let scale = xc.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = xc
            .iter()
            .zip(&xo)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(err <= 1e-5 * scale, "{model}: max|ort - cpu| = {err:e}");
    }
}

#[test]
fn ort_without_embedded_onnx_says_how() {
    let dir = TempDir::new("noembed");
    let onnx = fixtures().join("moons_icfm/model.dynamo.onnx");
    let frt = dir.join("m.frt");
    ok(&[&"export", &onnx, &"-o", &frt]);
    let out = dir.join("o.npy");
    let args = [
        "sample",
        s(&frt),
        "--seed",
        "1",
        "--num",
        "4",
        "-o",
        s(&out),
        "--backend",
        "ort",
    ];
    let e = fails_env(&[&args], &[]);
    assert!(e.contains("--embed-onnx") && e.contains("--onnx"), "{e}");
    // --onnx PATH makes it work, and matches --backend cpu.
    let mut with = args.to_vec();
    with.extend(["--onnx", s(&onnx)]);
    ok(&[&with]);
    let cpu = dir.join("c.npy");
    ok(&[&"sample", &frt, &"--seed 1 --num 4 -o", &cpu]);
    let (a, _) = npy::read_f32(&out).unwrap();
    let (b, _) = npy::read_f32(&cpu).unwrap();
    assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() <= 1e-4));
}

#[test]
fn missing_or_broken_library_is_a_clear_error() {
    let dir = TempDir::new("nolib");
    let onnx = fixtures().join("moons_icfm/model.ts.onnx");
    let frt = dir.join("m.frt");
    ok(&[&"export", &onnx, &"-o", &frt, &"--embed-onnx"]);
    let out = dir.join("o.npy");
    let args = [
        "sample",
        s(&frt),
        "--seed",
        "1",
        "--num",
        "4",
        "-o",
        s(&out),
        "--backend",
        "ort",
    ];
    let e = fails_env(
        &[&args],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    assert!(
        e.contains("ORT_DYLIB_PATH") && e.contains("onnxruntime==1.31.1"),
        "{e}"
    );
    // A file that is not a shared library.
    let fake = dir.join("libonnxruntime.so.1.31.1");
    std::fs::write(&fake, b"not a library").unwrap();
    let e = fails_env(&[&args], &[("ORT_DYLIB_PATH", s(&fake))]);
    assert!(e.contains("cannot load ONNX Runtime"), "{e}");
}

#[test]
fn bench_smoke_prints_ratio_last() {
    let dir = TempDir::new("bench");
    let onnx = fixtures().join("moons_reflow/model.dynamo.onnx");
    let frt = dir.join("m.frt");
    ok(&[&"export", &onnx, &"-o", &frt, &"--embed-onnx"]);
    for extra in [&[][..], &["--eval"][..]] {
        let mut args = vec![
            "bench",
            s(&frt),
            "--against",
            "ort",
            "--batch",
            "3",
            "--method",
            "heun",
            "--steps",
            "2",
            "--runs",
            "3",
            "--warmup",
            "1",
        ];
        args.extend(extra);
        let out = ok(&[&args]);
        let last = out.lines().last().unwrap_or_default();
        let r: f64 = last
            .strip_prefix("ratio flowrt/ort: ")
            .unwrap_or_else(|| panic!("last line is not the ratio:\n{out}"))
            .parse()
            .unwrap();
        assert!(r.is_finite() && r > 0.0, "{out}");
        assert!(out.contains("flowrt ") && out.contains("ort "), "{out}");
    }
}
