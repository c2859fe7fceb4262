//! End-to-end tests of the `flowrt` command-line tool: the real binary, run on the committed
//! fixtures (`tests/fixtures/`), export -> inspect -> sample, and its error reporting (one
//! `error: ...` line on stderr, a non-zero exit status, never a panic).

mod common;
use common::*;

use flowrt_export::npy;

/// Sample tolerance against the torchdiffeq references (as in the conformance tests).
const SAMPLE_TOL: f32 = 5e-5;

/// export -> inspect (text and JSON) -> sample (noise file and seeded) for one fixture.
fn round_trip(model: &str, file: &str, roles: &[(&str, &str)]) {
    let (dir, frt) = temp_export(model, &format!("{model}/{file}"), "");

    // inspect, text.
    let needles = [
        "signature:",
        "role",
        "shape",
        "state dim 2",
        "arena",
        "batch",
        "parameters",
    ];
    let text = inspect_has(&frt, &needles);
    for (name, role) in roles {
        assert_contains(&text, &[name, &format!("role {role}")]);
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
    let v = inspect_json(&frt);
    assert_eq!(v["arena_bytes"].as_array().unwrap().len(), 3, "{v}");

    // sample from the reference noise, compare with torchdiffeq's rk4 (3/8 rule), 8 steps.
    let noise = fx(&format!("{model}/noise.npy"));
    let out = dir.path("out.npy");
    let stdout = sample_ok(&frt, &noise, &[&"--method rk4-38 --steps 8"], &out);
    assert!(stdout.contains("sampled"), "{stdout}");
    assert_close(&out, &format!("{model}/samples/rk4-38_8.npy"), SAMPLE_TOL);

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
    let onnx = "checker_fm/model.dynamo.onnx";
    let (dir, frt) = temp_export("roles", onnx, "--role x=x --role t=t");
    assert_eq!(input_roles(&inspect_json(&frt)), ["x", "t"]);

    for (i, (flags, needles)) in [
        ("--role nope=t", &["nope", "\"x\"", "\"t\""][..]),
        ("--role x=banana", &["banana", "x, t, xt"]),
        // The usage names `NAME=ROLE`, or at least `=ROLE`.
        ("--role x", &["=ROLE"]),
        // Contradictory roles: an error, never a panic (the message is the exporter's business).
        ("--role x=t --role t=x", &[]),
    ]
    .into_iter()
    .enumerate()
    {
        let bad = dir.path(&format!("bad{}.frt", i + 1));
        export_fails(onnx, &bad, flags, needles);
        assert!(!bad.exists(), "{bad:?} written although the export failed");
    }
}

#[test]
fn missing_and_non_onnx_inputs() {
    let dir = TempDir::new("missing");
    let missing = dir.path("missing.onnx");
    fails_with(
        &[&"export", &missing, &"-o", &dir.path("m.frt")],
        &["missing.onnx"],
    );
    let frt = dir.path("missing.frt");
    fails_with(&[&"inspect", &frt], &["missing.frt"]);
    let cmd = args(&[&"sample", &frt, &"--seed 1 --num 2 -o", &dir.path("o.npy")]);
    fails_with(&[&cmd], &["missing.frt"]);

    for (name, bytes) in [
        ("junk", &b"hello, this is not a protobuf\n"[..]),
        ("empty", b""),
    ] {
        let onnx = dir.path(&format!("{name}.onnx"));
        std::fs::write(&onnx, bytes).unwrap();
        fails(&[&"export", &onnx, &"-o", &dir.path(&format!("{name}.frt"))]);
    }
    // A .frt file is not ONNX either.
    let frt = export_in(&dir, "m.frt", "moons_icfm/model.ts.onnx", "");
    fails(&[&"export", &frt, &"-o", &dir.path("x.frt")]);
    // Nor is an ONNX file a .frt.
    fails_with(&[&"inspect", &fx("moons_icfm/model.ts.onnx")], &["FLRT"]);
}

#[test]
fn corrupt_frt_files() {
    let (dir, frt) = temp_export("corrupt", "moons_icfm/model.ts.onnx", "");
    let bytes = std::fs::read(&frt).unwrap();
    let out = dir.path("o.npy");
    // `bytes` with `edit` applied, written to `dir/name`.
    let write = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut b = bytes.clone();
        edit(&mut b);
        let p = dir.path(name);
        std::fs::write(&p, &b).unwrap();
        p
    };
    let seeded = "--seed 1 --num 4";
    let noise = fx("moons_icfm/noise.npy");
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
        let cut = write(&format!("cut{len}.frt"), &|b| b.truncate(len));
        let e = fails(&[&"inspect", &cut]);
        assert!(
            e.contains("truncated") || len < 4,
            "truncated at {len}: {e}"
        );
        fails(&[&"sample", &cut, &seeded, &"-o", &out]);
        fails(&[&sample_args(&cut, &noise, &[], &out)]);
    }
    assert!(!out.exists(), "samples written from a corrupt model");

    // Version 4 does not exist (1: f32 constants, 2: typed weights, 3: compact records).
    let bad = write("v4.frt", &|b| b[4..6].copy_from_slice(&4u16.to_le_bytes()));
    fails_with(&[&"inspect", &bad], &["version"]);
    fails_with(&[&"sample", &bad, &seeded, &"-o", &out], &["version"]);

    let bad = write("flip.frt", &|b| {
        let mid = b.len() / 2;
        b[mid] ^= 0x10;
    });
    fails_with(&[&"inspect", &bad], &["checksum"]);
}

#[test]
fn bad_sample_arguments() {
    let (dir, frt) = temp_export("args", "moons_icfm/model.ts.onnx", "");
    let out = dir.path("o.npy");
    // `sample FRT FLAGS... -o OUT` fails, naming `needles`.
    let bad = |flags: &[&dyn Arg], needles: &[&str]| {
        fails_with(&[&"sample", &frt, &flags, &"-o", &out], needles);
    };

    bad(&[&"--seed 1 --num 4 --method banana"], &["banana", "rk4"]);
    bad(&[&"--seed 1 --num 4 --steps 0"], &["steps"]);
    bad(&[], &["--noise", "--seed"]);
    bad(&[&"--seed 1 --num 0"], &["--num"]);
    // Absurd sample counts: a clean error, not an allocation-failure abort.
    for num in [u64::MAX, 1 << 62, 1 << 60] {
        bad(
            &[&"--seed 1 --num", &num.to_string()],
            &["--num", "too large"],
        );
    }

    let write = |name: &str, data: &[f32], shape: &[usize]| {
        let p = dir.path(name);
        npy::write_f32(&p, data, shape).unwrap();
        p
    };
    let mut nan = vec![0.5f32; 8];
    nan[5] = f32::NAN;
    let junk = dir.path("junk.npy");
    std::fs::write(&junk, b"not an npy file").unwrap();
    for (noise, needles) in [
        (
            write("wide.npy", &[0.0; 12], &[4, 3]),
            &["noise shape", "[4, 3]"][..],
        ),
        (write("flat.npy", &[0.0; 4], &[4]), &[]),
        (write("empty.npy", &[], &[0, 2]), &[]),
        (write("nan.npy", &nan, &[4, 2]), &["NaN"]),
        (
            write("inf.npy", &[f32::INFINITY; 8], &[4, 2]),
            &["infinity"],
        ),
        (junk, &[]),
        (dir.path("missing.npy"), &["missing.npy"]),
    ] {
        bad(&[&"--noise", &noise], needles);
    }
    assert!(!out.exists(), "samples written although sampling failed");

    // An output path that cannot be created.
    let cmd = args(&[
        &"sample",
        &frt,
        &"--seed 1 --num 4 -o",
        &dir.path("no/such/dir/o.npy"),
    ]);
    fails_with(&[&cmd], &["o.npy"]);
}
