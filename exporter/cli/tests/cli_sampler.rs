//! The sampler through the `flowrt` CLI: grids (named, explicit, file, step size), the
//! multistep / adaptive / torchdyn methods, baked-in solver defaults, trajectories,
//! inversion, SDE sampling, the sigma convention and classifier-free guidance — each checked
//! against the committed Python references (`tests/fixtures/make_sampler_fixtures.py`).

mod common;
use common::*;

#[test]
fn grids_and_methods_from_the_command_line() {
    let (dir, frt) = temp_export("cli-sampler", "checker_fm/model.ts.onnx", "");
    let noise = fx("checker_fm/noise.npy");
    let out = dir.path("x.npy");
    // Explicit grid on the command line and from a file: flow_matching's ODESolver.
    let grid = "0,0.1,0.25,0.45,0.7,0.9,1";
    let text = sample_ok(&frt, &noise, &[&"--method rk4-38 --grid", &grid], &out);
    assert!(text.contains("x 6 steps"), "{text}");
    assert_close(&out, "sampler/checker_fm_timegrid_rk4-38.npy", 5e-5);
    let grid_file = fx("sampler/timegrid.npy");
    sample_ok(
        &frt,
        &noise,
        &[&"--method midpoint --grid-file", &grid_file],
        &out,
    );
    assert_close(&out, "sampler/checker_fm_timegrid_midpoint.npy", 5e-5);
    // Adams-Bashforth and the pseudo-corrector.
    for (m, evals) in [
        ("ab2", "8 velocity"),
        ("ab3", "8 velocity"),
        ("ab4", "8 velocity"),
        ("heun-reuse", "9 velocity"),
    ] {
        let text = sample_ok(&frt, &noise, &[&"--method", &m, &"--steps 8"], &out);
        assert!(text.contains(evals), "{m}: {text}");
        assert_close(&out, &format!("sampler/checker_fm_{m}_8.npy"), 5e-5);
    }
    // (flags, stdout needle, reference): dopri5 with tolerances; --step-size, torchdiffeq's
    // grid (0.125 -> 8 steps).
    for (flags, needle, want) in [
        (
            "--method dopri5 --rtol 1e-5 --atol 1e-5",
            "68 velocity evaluations",
            "sampler/checker_fm_dopri5_rtol1e-5.npy",
        ),
        (
            "--method euler --step-size 0.125",
            "x 8 steps",
            "checker_fm/samples/euler_8.npy",
        ),
    ] {
        let text = sample_ok(&frt, &noise, &[&flags], &out);
        assert!(text.contains(needle), "{text}");
        assert_close(&out, want, 5e-5);
    }
    // Trajectory: [steps + 1, N, 2], first the noise, last the sample.
    let traj = dir.path("traj.npy");
    let flags: &[&dyn Arg] = &[&"--method rk4-38 --steps 4 --trajectory", &traj];
    sample_ok(&frt, &noise, flags, &out);
    let (t, shape) = read_npy(&traj);
    assert_eq!(shape, [5, 256, 2]);
    assert_eq!(&t[..512], &read_npy(&noise).0[..]);
    assert_eq!(&t[4 * 512..], &read_npy(&out).0[..]);
    // Bad grids are one-line errors.
    for bad in ["cosine", "shift:x", "0,0.5,0.5,1", "0"] {
        let e = fails(&[&sample_args(&frt, &noise, &[&"--grid", &bad], &out)]);
        assert!(e.contains("grid"), "{bad}: {e}");
    }
    sample_fails(&frt, &noise, &[&"--method ab7"], &out, &["--method ab7"]);
}

#[test]
fn baked_in_defaults_are_used_and_overridable() {
    let flags = "--method ab3 --steps 16";
    let (dir, frt) = temp_export("cli-defaults", "moons_icfm/model.dynamo.onnx", flags);
    inspect_has(&frt, &["solver defaults", "Ab3"]);
    let noise = fx("moons_icfm/noise.npy");
    let out = dir.path("x.npy");
    let text = sample_ok(&frt, &noise, &[], &out);
    assert!(text.contains("ab3 x 16 steps"), "{text}");
    assert_close(&out, "sampler/moons_icfm_ab3_16.npy", 5e-5);
    // The command line wins.
    sample_ok(&frt, &noise, &[&"--method rk4-38 --steps 8"], &out);
    assert_close(&out, "moons_icfm/samples/rk4-38_8.npy", 5e-5);
    // A baked explicit grid.
    let onnx = "moons_icfm/model.ts.onnx";
    let flags = "--method heun-reuse --grid 0,0.1,0.25,0.45,0.7,0.9,1";
    let frt2 = export_in(&dir, "icfm_grid.frt", onnx, flags);
    sample_ok(&frt2, &noise, &[], &out);
    assert_close(&out, "sampler/moons_icfm_heun-reuse_grid.npy", 5e-5);
    export_fails(onnx, &frt2, "--grid nope", &["grid"]);
}

#[test]
fn invert_round_trips() {
    let (dir, frt) = temp_export("cli-invert", "moons_icfm/model.ts.onnx", "");
    let z = dir.path("z.npy");
    let data = fx("moons_icfm/samples/rk4-38_32.npy");
    let text = ok(&[
        &"invert",
        &frt,
        &"--data",
        &data,
        &"--method rk4-38 --steps 32 -o",
        &z,
    ]);
    assert!(text.contains("round trip"), "{text}");
    assert_close(&z, "sampler/moons_icfm_invert_rk4-38_32.npy", 5e-5);
    assert_close(&z, "moons_icfm/noise.npy", 1e-3);
}

#[test]
fn sde_from_the_command_line() {
    let (dir, frt) = temp_export("cli-sde", "checker_fm/model.ts.onnx", "");
    let eps = export_in(&dir, "eps.frt", "checker_eps/model.ts.onnx", "");
    let ort = export_in(&dir, "ort.frt", "checker_fm/model.ts.onnx", "--embed-onnx");
    let out = dir.path("x.npy");
    let x0 = fx("sampler/sde_noise.npy");
    let (z16, z32) = (fx("sampler/sde_z_16.npy"), fx("sampler/sde_z_32.npy"));
    let linear = "sampler/checker_fm_sde_linear0.5_16.npy";
    // The fm model, the same SDE with ONNX Runtime evaluating the velocity, an eps score.
    for (model, flags, want) in [
        (&frt, args(&[&"--sde linear:0.5"]), linear),
        (&ort, args(&[&"--sde linear:0.5 --backend ort"]), linear),
        (
            &frt,
            args(&[&"--sde linear:1.0 --score-model", &eps]),
            "sampler/checker_fm_sde_eps_linear1.0_16.npy",
        ),
    ] {
        sample_ok(
            model,
            &x0,
            &[&"--steps 16", &flags, &"--sde-noise", &z16],
            &out,
        );
        assert_close(&out, want, 5e-5);
    }
    // Seeded noise is deterministic.
    let a = dir.path("a.npy");
    let seeded: &[&dyn Arg] = &[&"--steps 8 --sde const:0.3 --sde-seed 5"];
    sample_ok(&frt, &x0, seeded, &a);
    sample_ok(&frt, &x0, seeded, &out);
    assert_eq!(read_npy(&a).0, read_npy(&out).0);
    sample_fails(&frt, &x0, &[&"--sde cubic:1"], &out, &["--sde"]);
    let flags: &[&dyn Arg] = &[&"--steps 16 --sde linear:1 --sde-noise", &z32];
    sample_fails(&frt, &x0, flags, &out, &["steps x N x dim"]);
}

#[test]
fn sigma_convention_and_diffusers_grids() {
    let onnx = "moons_sigma/model.ts.onnx";
    let (dir, frt) = temp_export("cli-sigma", onnx, "--time sigma --time-scale 1000");
    inspect_has(&frt, &["sigma axis", "1000"]);
    let out = dir.path("x.npy");
    let noise = fx("moons_sigma/noise.npy");
    for (flags, want) in [
        (
            "--grid diffusers:3 --steps 4",
            "moons_sigma/samples/diffusers_shift3_4.npy",
        ),
        (
            "--grid flux:1.15 --steps 8",
            "moons_sigma/samples/diffusers_dynamic_exp_mu1.15_8.npy",
        ),
    ] {
        sample_ok(&frt, &noise, &[&flags], &out);
        assert_close(&out, want, 5e-5);
    }
    export_fails(onnx, &frt, "--time tau", &["--time tau"]);
    sample_fails(&frt, &noise, &[&"--sde linear:1"], &out, &["t axis"]);
}

#[test]
fn classifier_free_guidance_from_the_command_line() {
    let (dir, frt) = temp_export("cli-cfg", "moons_cfg/model.ts.onnx", "");
    let out = dir.path("x.npy");
    let noise = fx("moons_cfg/noise.npy");
    let labels = fx("moons_cfg/labels.npy");
    let label = |flags: &'static str| -> Vec<String> { args(&[&"--label", &labels, &flags]) };
    let guided = "--guidance 2.5 --null-label 2";
    let text = sample_ok(
        &frt,
        &noise,
        &[&label(guided), &"--method rk4-38 --steps 8"],
        &out,
    );
    assert!(text.contains("guidance w=2.5"), "{text}");
    assert_close(&out, "moons_cfg/samples/cfg2.5_rk4-38_8.npy", 5e-5);
    let interval = "--guidance-interval 0.2,0.8 --method rk4-38 --steps 8";
    sample_ok(&frt, &noise, &[&label(guided), &interval], &out);
    let want = "moons_cfg/samples/cfg2.5_interval0.2-0.8_rk4-38_8.npy";
    assert_close(&out, want, 5e-5);
    // Baked-in guidance.
    let flags = "--guidance 2.5 --null-label 2 --method midpoint --steps 4";
    let baked = export_in(&dir, "cfg_baked.frt", "moons_cfg/model.dynamo.onnx", flags);
    sample_ok(&baked, &noise, &[&label("")], &out);
    assert_close(&out, "moons_cfg/samples/cfg2.5_midpoint_4.npy", 5e-5);
    // Errors.
    sample_fails(
        &frt,
        &noise,
        &[&label("--guidance 2")],
        &out,
        &["--null-label"],
    );
    let flags = label("--guidance 2 --null-label 9");
    sample_fails(&frt, &noise, &[&flags], &out, &["out of range"]);
    let plain = export_in(&dir, "plain.frt", "checker_fm/model.ts.onnx", "");
    let cmd = args(&[&"sample", &plain, &"--seed 1 --num 4 --guidance 2 -o", &out]);
    fails_with(&[&cmd], &["label or cond input"]);
}
