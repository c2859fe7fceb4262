//! `flowrt eval`: the network evaluated once on the fixtures' probe inputs (by input name or
//! role) equals PyTorch's output there (`v_torch.npy`, computed by the fixture scripts) within
//! `1e-5 * max(1, |v_torch|)`, for every input shape the Python helper exports (`xt`, `x`+`t`,
//! 0-dim `t`, labels, a second time input); bad inputs are one-line errors.

mod common;
use common::*;

use flowrt_export::npy;

/// The largest `|got - want| / max(1, |want|)`.
fn scaled_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths");
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
        .fold(0.0, f32::max)
}

/// Exports `model/model.ts.onnx`, evaluates it with `inputs` (`--input` values, fixture paths
/// relative to the model folder) and checks the output against `v_torch.npy`.
fn eval_matches_torch(model: &str, inputs: &[(&str, &str)]) {
    let (dir, frt) = temp_export(
        &format!("eval-{model}"),
        &format!("{model}/model.ts.onnx"),
        "",
    );
    let out = dir.path("v.npy");
    let mut parts: Vec<String> = vec!["eval".into(), s(&frt).into()];
    for (name, file) in inputs {
        parts.push("--input".into());
        parts.push(format!("{name}={}", s(&fx(&format!("{model}/{file}")))));
    }
    parts.extend(["-o".into(), s(&out).into()]);
    let text = ok(&[&parts]);
    assert_contains(&text, &["evaluated", "at batch"]);
    let (got, gs) = read_npy(&out);
    let (want, ws) = read_npy(&fx(&format!("{model}/v_torch.npy")));
    assert_eq!(gs, ws, "{model}: output shape");
    let e = scaled_err(&got, &want);
    assert!(e <= 1e-5, "{model}: scaled error {e:e} against PyTorch");
}

#[test]
fn x_t_and_label_inputs_match_pytorch() {
    eval_matches_torch(
        "digits_unet",
        &[
            ("x", "probe_x.npy"),
            ("t", "probe_t.npy"),
            ("y", "probe_y.npy"),
        ],
    );
    // By role instead of name.
    eval_matches_torch(
        "moons_cfg",
        &[
            ("x", "probe_x.npy"),
            ("t", "probe_t.npy"),
            ("label", "probe_y.npy"),
        ],
    );
    eval_matches_torch("checker_fm", &[("x", "probe_x.npy"), ("t", "probe_t.npy")]);
}

#[test]
fn second_time_inputs_match_pytorch() {
    eval_matches_torch(
        "moons_meanflow",
        &[
            ("z", "probe_z.npy"),
            ("t", "probe_t.npy"),
            ("h", "probe_h.npy"),
        ],
    );
    eval_matches_torch(
        "moons_shortcut",
        &[
            ("x", "probe_x.npy"),
            ("t", "probe_t.npy"),
            ("step", "probe_dt_base.npy"),
        ],
    );
}

#[test]
fn xt_and_scalar_time_inputs_match_pytorch() {
    let dir = TempDir::new("eval-xt");
    let (x, _) = read_npy(&fx("moons_icfm/probe_x.npy"));
    let (t, _) = read_npy(&fx("moons_icfm/probe_t.npy"));
    let xt: Vec<f32> = x
        .chunks_exact(2)
        .zip(&t)
        .flat_map(|(r, t)| [r[0], r[1], *t])
        .collect();
    let xt_path = dir.path("xt.npy");
    npy::write_f32(&xt_path, &xt, &[t.len(), 3]).unwrap();
    let frt = export_in(&dir, "icfm.frt", "moons_icfm/model.ts.onnx", "");
    let out = dir.path("v.npy");
    ok(&[
        &"eval",
        &frt,
        &"--input",
        &format!("xt={}", s(&xt_path)),
        &"-o",
        &out,
    ]);
    let (got, _) = read_npy(&out);
    let (want, _) = read_npy(&fx("moons_icfm/v_torch.npy"));
    assert!(scaled_err(&got, &want) <= 1e-5);

    // A 0-dim time input, row by row as the fixture's reference was computed.
    let frt = export_in(&dir, "scalar.frt", "checker_fm_scalar_t/model.ts.onnx", "");
    let (x, _) = read_npy(&fx("checker_fm_scalar_t/probe_x.npy"));
    let (t, _) = read_npy(&fx("checker_fm_scalar_t/probe_t.npy"));
    let (want, _) = read_npy(&fx("checker_fm_scalar_t/v_torch.npy"));
    for i in [0usize, 1, 17] {
        let (xi, ti) = (dir.path("xi.npy"), dir.path("ti.npy"));
        npy::write_f32(&xi, &x[2 * i..2 * i + 2], &[1, 2]).unwrap();
        npy::write_f32(&ti, &t[i..=i], &[]).unwrap();
        let text = ok(&[
            &"eval",
            &frt,
            &"--input",
            &format!("x={}", s(&xi)),
            &"--input",
            &format!("t={}", s(&ti)),
            &"-o",
            &out,
        ]);
        assert_contains(&text, &["at batch 1"]);
        let (got, gs) = read_npy(&out);
        assert_eq!(gs, [1, 2]);
        assert!(scaled_err(&got, &want[2 * i..2 * i + 2]) <= 1e-5, "row {i}");
    }
}

#[test]
fn bad_eval_inputs_are_one_line_errors() {
    let (dir, frt) = temp_export("eval-bad", "digits_unet/model.ts.onnx", "");
    let out = dir.path("v.npy");
    let px = fx("digits_unet/probe_x.npy");
    let pt = fx("digits_unet/probe_t.npy");
    let py = fx("digits_unet/probe_y.npy");
    let inp = |name: &str, p: &std::path::Path| format!("{name}={}", s(p));
    let run = |inputs: &[String], needles: &[&str]| {
        let mut parts: Vec<String> = vec!["eval".into(), s(&frt).into()];
        for i in inputs {
            parts.extend(["--input".into(), i.clone()]);
        }
        parts.extend(["-o".into(), s(&out).into()]);
        fails_with(&[&parts], needles);
    };
    run(
        &[inp("x", &px), inp("t", &pt)],
        &["input `y` (role label", "not given", "--input y="],
    );
    run(
        &[inp("x", &px), inp("t", &pt), inp("y", &py), inp("z", &py)],
        &[
            "no input named `z`",
            "x (role x), t (role t), y (role label)",
        ],
    );
    run(
        &[
            inp("x", &px),
            inp("t", &pt),
            inp("y", &py),
            inp("label", &py),
        ],
        &["input `y` is given twice"],
    );
    run(
        &[inp("x", &px), inp("t", &px), inp("y", &py)],
        &["shape [32, 1, 8, 8] does not fit input `t` (shape [B])"],
    );
    let t64 = fx("moons_icfm/probe_t.npy");
    run(
        &[inp("x", &px), inp("t", &t64), inp("y", &py)],
        &["batch sizes disagree", "64 rows"],
    );
    // A float label that is not an integer, a label as the wrong dtype for x.
    run(
        &[inp("x", &px), inp("t", &pt), inp("y", &pt)],
        &["is not an integer"],
    );
    run(
        &[inp("x", &py), inp("t", &pt), inp("y", &py)],
        &["is not supported (use float32)"],
    );
    run(&[s(&px).to_string()], &["--input expects NAME=FILE.npy"]);
    // A label outside the embedding table: the runtime's typed error, not a panic.
    let big = dir.path("big.npy");
    npy::write_f32(&big, &[99.0; 32], &[32]).unwrap();
    run(
        &[inp("x", &px), inp("t", &pt), inp("y", &big)],
        &["evaluating"],
    );
    assert!(!out.exists(), "no output after a failure");
}
