//! `flowrt export --weights f16|bf16|int8 [--keep-f32 NAMES]`: smaller files that sample
//! close to the f32 model, `inspect` naming the stored types, and clean errors.

mod common;

use common::*;

const MODEL: &str = "moons_icfm/model.ts.onnx";

#[test]
fn typed_weights_export_inspect_and_sample_close_to_f32() {
    let dir = TempDir::new("weights");
    let noise = fx("moons_icfm/noise.npy");
    let f32_frt = export_in(&dir, "f32.frt", MODEL, "");
    let f32_out = dir.path("f32.npy");
    sample_ok(&f32_frt, &noise, &[&"--method rk4 --steps 8"], &f32_out);
    let f32_len = std::fs::metadata(&f32_frt).unwrap().len() as f64;
    // (type, largest file size over f32, largest sample difference from f32): the moons
    // MLP's 4 Dense weights are stored typed, its biases stay f32.
    for (ty, size, tol) in [
        ("f16", 0.56, 0.05),
        ("bf16", 0.56, 0.2),
        ("int8", 0.35, 0.5),
    ] {
        let frt = export_in(
            &dir,
            &format!("{ty}.frt"),
            MODEL,
            &*format!("--weights {ty}"),
        );
        let ratio = std::fs::metadata(&frt).unwrap().len() as f64 / f32_len;
        assert!(ratio <= size, "{ty}: {ratio} of the f32 file");
        inspect_has(&frt, &["format v2", &format!("{ty} x4")]);
        let out = dir.path(&format!("{ty}.npy"));
        sample_ok(
            &frt,
            &noise,
            &[&"--method rk4 --steps 8 --backend cpu"],
            &out,
        );
        let d = npy_diff(&out, &f32_out);
        assert!(d > 0.0 && d <= tol, "{ty}: max abs diff {d} from f32");
    }
    // --keep-f32 by weight name: the first and the last layer stay f32.
    let kept = export_in(
        &dir,
        "kept.frt",
        MODEL,
        "--weights int8 --keep-f32 net.0,net.6",
    );
    inspect_has(&kept, &["int8 x2", "f32 x6"]);
}

#[test]
fn typed_weights_errors() {
    let dir = TempDir::new("weights-err");
    let frt = dir.path("bad.frt");
    export_fails(MODEL, &frt, "--weights int4", &["--weights int4", "int8"]);
    export_fails(
        MODEL,
        &frt,
        "--weights int8 --keep-f32 nosuch",
        &["--keep-f32 nosuch", "no weight"],
    );
    export_fails(MODEL, &frt, "--keep-f32 net.0", &["needs --weights"]);
    // ONNX Runtime would run the embedded f32 weights: refused, not silently different.
    let int8 = export_in(&dir, "int8.frt", MODEL, "--weights int8 --embed-onnx");
    sample_fails(
        &int8,
        &fx("moons_icfm/noise.npy"),
        &[&"--backend ort"],
        &dir.path("out.npy"),
        &["stores int8 weights", "--backend cpu"],
    );
}
