//! End-to-end tests of the `flowrt` command-line tool: the real binary, run on the committed
//! fixtures (`tests/fixtures/`), export -> inspect -> sample, and its error reporting (one
//! `error: ...` line on stderr, a non-zero exit status, never a panic).

use std::path::PathBuf;

mod common;
use common::*;

use flowrt_export::npy;

/// Sample tolerance against the torchdiffeq references (as in the conformance tests).
const SAMPLE_TOL: f32 = 5e-5;

/// Exports `tests/fixtures/<model>/<file>` to `dir/<out>` and returns the `.frt` path.
fn export(dir: &TempDir, model: &str, file: &str, out: &str) -> PathBuf {
    let frt = dir.path(out);
    let onnx = fixtures().join(model).join(file);
    let stdout = ok(&[&"export", &onnx, &"-o", &frt]);
    assert!(stdout.contains("exported"), "{stdout}");
    assert!(frt.is_file());
    frt
}

/// export -> inspect (text and JSON) -> sample (noise file and seeded) for one fixture.
fn round_trip(model: &str, file: &str, roles: &[(&str, &str)]) {
    let dir = TempDir::new(model);
    let frt = export(&dir, model, file, "model.frt");

    // inspect, text.
    let text = ok(&[&"inspect", &frt]);
    for needle in [
        "signature:",
        "role",
        "shape",
        "state dim 2",
        "arena",
        "batch",
        "parameters",
    ] {
        assert!(
            text.contains(needle),
            "inspect output lacks `{needle}`:\n{text}"
        );
    }
    for (name, role) in roles {
        assert!(
            text.contains(name) && text.contains(&format!("role {role}")),
            "inspect output lacks {name}/{role}:\n{text}"
        );
    }

    // inspect, JSON.
    let json = ok(&[
        &"inspect",
        &frt,
        &"--json --batch 1 --batch 64 --batch 4096",
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{json}"));
    assert_eq!(v["state_dim"], 2, "{json}");
    assert_eq!(v["output_shape"], "[B, 2]", "{json}");
    let inputs = v["inputs"].as_array().expect("inputs array");
    let got: Vec<(&str, &str)> = inputs
        .iter()
        .map(|i| (i["name"].as_str().unwrap(), i["role"].as_str().unwrap()))
        .collect();
    assert_eq!(got, roles, "{json}");
    let arena = v["arena_bytes"].as_array().expect("arena_bytes array");
    let sizes: Vec<(u64, u64)> = arena
        .iter()
        .map(|a| (a["batch"].as_u64().unwrap(), a["bytes"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        sizes.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
        [1, 64, 4096],
        "{json}"
    );
    assert!(sizes[0].1 > 0, "{json}");
    assert!(
        sizes.windows(2).all(|w| w[0].1 < w[1].1),
        "arena bytes do not grow with the batch: {sizes:?}"
    );
    assert!(
        v["parameters"].as_u64().unwrap() > 0 && v["nodes"].as_u64().unwrap() > 0,
        "{json}"
    );
    // Default batches are reported too.
    let json = ok(&[&"inspect", &frt, &"--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["arena_bytes"].as_array().unwrap().len(), 3, "{json}");

    // sample from the reference noise, compare with torchdiffeq's rk4 (3/8 rule), 8 steps.
    let noise = fixtures().join(model).join("noise.npy");
    let out = dir.path("out.npy");
    let stdout = sample_ok(&frt, &noise, "--method rk4-38 --steps 8", &out);
    assert!(stdout.contains("sampled"), "{stdout}");
    let (got, shape) = npy::read_f32(&out).expect("read samples");
    let (want, want_shape) = npy::read_f32(&fixtures().join(model).join("samples/rk4-38_8.npy"))
        .expect("read reference");
    assert_eq!(shape, want_shape);
    assert_eq!(got.len(), want.len(), "length mismatch");
    let err = flowrt_export::max_abs_diff(&got, &want);
    assert!(
        err <= SAMPLE_TOL,
        "{model} {file}: max |cli - torchdiffeq| = {err:e} > {SAMPLE_TOL:e}"
    );

    // Seeded sampling: deterministic, seed-dependent, shape [num, D].
    let (a, b, c) = (dir.path("a.npy"), dir.path("b.npy"), dir.path("c.npy"));
    for (seed, path) in [("7", &a), ("7", &b), ("8", &c)] {
        ok(&[
            &"sample",
            &frt,
            &"--seed",
            &seed,
            &"--num 16 --method heun --steps 4 -o",
            &path,
        ]);
    }
    let bytes_a = std::fs::read(&a).unwrap();
    assert_eq!(
        bytes_a,
        std::fs::read(&b).unwrap(),
        "same seed, different output"
    );
    assert_ne!(
        bytes_a,
        std::fs::read(&c).unwrap(),
        "different seeds, same output"
    );
    let (xa, shape_a) = npy::read_f32(&a).unwrap();
    assert_eq!(shape_a, [16, 2]);
    assert!(xa.iter().all(|x| x.is_finite()));
}

#[test]
fn round_trip_moons_icfm_torchscript() {
    round_trip("moons_icfm", "model.ts.onnx", &[("xt", "xt")]);
}

#[test]
fn round_trip_checker_fm_dynamo_external_data() {
    assert!(fixtures()
        .join("checker_fm/model.dynamo.onnx.data")
        .is_file());
    round_trip("checker_fm", "model.dynamo.onnx", &[("x", "x"), ("t", "t")]);
}

#[test]
fn role_overrides() {
    let dir = TempDir::new("roles");
    let onnx = fixtures().join("checker_fm/model.dynamo.onnx");
    let frt = dir.path("m.frt");
    ok(&[&"export", &onnx, &"-o", &frt, &"--role x=x --role t=t"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&[&"inspect", &frt, &"--json"])).unwrap();
    let roles: Vec<&str> = v["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["x", "t"]);

    let e = fails(&[
        &"export",
        &onnx,
        &"-o",
        &dir.path("bad1.frt"),
        &"--role nope=t",
    ]);
    assert!(
        e.contains("nope") && e.contains("\"x\"") && e.contains("\"t\""),
        "{e}"
    );
    let e = fails(&[
        &"export",
        &onnx,
        &"-o",
        &dir.path("bad2.frt"),
        &"--role x=banana",
    ]);
    assert!(e.contains("banana") && e.contains("x, t, xt"), "{e}");
    let e = fails(&[&"export", &onnx, &"-o", &dir.path("bad3.frt"), &"--role x"]);
    assert!(e.contains("NAME=ROLE") || e.contains("=ROLE"), "{e}");
    // Contradictory roles: an error, never a panic (the message is the exporter's business).
    fails(&[
        &"export",
        &onnx,
        &"-o",
        &dir.path("bad4.frt"),
        &"--role x=t --role t=x",
    ]);
    for bad in ["bad1.frt", "bad2.frt", "bad3.frt", "bad4.frt"] {
        assert!(
            !dir.path(bad).exists(),
            "{bad} written although the export failed"
        );
    }
}

#[test]
fn missing_and_non_onnx_inputs() {
    let dir = TempDir::new("missing");
    let missing = dir.path("missing.onnx");
    let e = fails(&[&"export", &missing, &"-o", &dir.path("m.frt")]);
    assert!(e.contains("missing.onnx"), "{e}");
    let e = fails(&[&"inspect", &dir.path("missing.frt")]);
    assert!(e.contains("missing.frt"), "{e}");
    let e = fails(&[
        &"sample",
        &dir.path("missing.frt"),
        &"--seed 1 --num 2 -o",
        &dir.path("o.npy"),
    ]);
    assert!(e.contains("missing.frt"), "{e}");

    let junk = dir.path("junk.onnx");
    std::fs::write(&junk, b"hello, this is not a protobuf\n").unwrap();
    fails(&[&"export", &junk, &"-o", &dir.path("j.frt")]);
    let empty = dir.path("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    fails(&[&"export", &empty, &"-o", &dir.path("e.frt")]);
    // A .frt file is not ONNX either.
    let frt = export(&dir, "moons_icfm", "model.ts.onnx", "m.frt");
    fails(&[&"export", &frt, &"-o", &dir.path("x.frt")]);
    // Nor is an ONNX file a .frt.
    let onnx = fixtures().join("moons_icfm/model.ts.onnx");
    let e = fails(&[&"inspect", &onnx]);
    assert!(e.contains("FLRT"), "{e}");
}

#[test]
fn corrupt_frt_files() {
    let dir = TempDir::new("corrupt");
    let frt = export(&dir, "moons_icfm", "model.ts.onnx", "m.frt");
    let bytes = std::fs::read(&frt).unwrap();
    let out = dir.path("o.npy");
    for len in [
        0,
        3,
        4,
        5,
        16,
        31,
        32,
        100,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        let cut = dir.path(&format!("cut{len}.frt"));
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let e = fails(&[&"inspect", &cut]);
        assert!(
            e.contains("truncated") || len < 4,
            "truncated at {len}: {e}"
        );
        fails(&[&"sample", &cut, &"--seed 1 --num 4 -o", &out]);
        fails(&[
            &"sample",
            &cut,
            &"--noise",
            &fixtures().join("moons_icfm/noise.npy"),
            &"-o",
            &out,
        ]);
    }
    assert!(!out.exists(), "samples written from a corrupt model");

    let mut v2 = bytes.clone();
    v2[4..6].copy_from_slice(&2u16.to_le_bytes());
    let bad = dir.path("v2.frt");
    std::fs::write(&bad, &v2).unwrap();
    let e = fails(&[&"inspect", &bad]);
    assert!(e.contains("version"), "{e}");
    let e = fails(&[&"sample", &bad, &"--seed 1 --num 4 -o", &out]);
    assert!(e.contains("version"), "{e}");

    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    let bad = dir.path("flip.frt");
    std::fs::write(&bad, &flipped).unwrap();
    let e = fails(&[&"inspect", &bad]);
    assert!(e.contains("checksum"), "{e}");
}

#[test]
fn bad_sample_arguments() {
    let dir = TempDir::new("args");
    let frt = export(&dir, "moons_icfm", "model.ts.onnx", "m.frt");
    let f = s(&frt);
    let out = dir.path("o.npy");
    let o = s(&out);

    let e = fails(&[&"sample", &f, &"--seed 1 --num 4 --method banana -o", &o]);
    assert!(e.contains("banana") && e.contains("rk4"), "{e}");
    let e = fails(&[&"sample", &f, &"--seed 1 --num 4 --steps 0 -o", &o]);
    assert!(e.contains("steps"), "{e}");
    let e = fails(&[&"sample", &f, &"-o", &o]);
    assert!(e.contains("--noise") && e.contains("--seed"), "{e}");
    let e = fails(&[&"sample", &f, &"--seed 1 --num 0 -o", &o]);
    assert!(e.contains("--num"), "{e}");
    // Absurd sample counts: a clean error, not an allocation-failure abort.
    for num in [u64::MAX, 1 << 62, 1 << 60] {
        let num = num.to_string();
        let e = fails(&[&"sample", &f, &"--seed 1 --num", &&num, &"-o", &o]);
        assert!(e.contains("--num") && e.contains("too large"), "{e}");
    }

    let write = |name: &str, data: &[f32], shape: &[usize]| {
        let p = dir.path(name);
        npy::write_f32(&p, data, shape).unwrap();
        p
    };
    let wide = write("wide.npy", &[0.0; 12], &[4, 3]);
    let e = fails(&[&"sample", &f, &"--noise", &wide, &"-o", &o]);
    assert!(e.contains("noise shape") && e.contains("[4, 3]"), "{e}");
    let flat = write("flat.npy", &[0.0; 4], &[4]);
    fails(&[&"sample", &f, &"--noise", &flat, &"-o", &o]);
    let empty = write("empty.npy", &[], &[0, 2]);
    fails(&[&"sample", &f, &"--noise", &empty, &"-o", &o]);
    let mut nan = vec![0.5f32; 8];
    nan[5] = f32::NAN;
    let nan = write("nan.npy", &nan, &[4, 2]);
    let e = fails(&[&"sample", &f, &"--noise", &nan, &"-o", &o]);
    assert!(e.contains("NaN"), "{e}");
    let inf = write("inf.npy", &[f32::INFINITY; 8], &[4, 2]);
    let e = fails(&[&"sample", &f, &"--noise", &inf, &"-o", &o]);
    assert!(e.contains("infinity"), "{e}");
    let junk = dir.path("junk.npy");
    std::fs::write(&junk, b"not an npy file").unwrap();
    fails(&[&"sample", &f, &"--noise", &junk, &"-o", &o]);
    let e = fails(&[
        &"sample",
        &f,
        &"--noise",
        &dir.path("missing.npy"),
        &"-o",
        &o,
    ]);
    assert!(e.contains("missing.npy"), "{e}");
    assert!(!out.exists(), "samples written although sampling failed");

    // An output path that cannot be created.
    let e = fails(&[
        &"sample",
        &f,
        &"--seed 1 --num 4 -o",
        &dir.path("no/such/dir/o.npy"),
    ]);
    assert!(e.contains("o.npy"), "{e}");
}
