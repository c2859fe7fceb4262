//! The sampler through the `flowrt` CLI: grids (named, explicit, file, step size), the
//! multistep / adaptive / torchdyn methods, baked-in solver defaults, trajectories,
//! inversion, SDE sampling, the sigma convention and classifier-free guidance — each checked
//! against the committed Python references (`tests/fixtures/make_sampler_fixtures.py`).

mod common;
use common::*;

#[test]
fn grids_and_methods_from_the_command_line() {
    let dir = TempDir::new("cli-sampler");
    let frt = dir.path("checker.frt");
    ok(&[&"export", &fx("checker_fm/model.ts.onnx"), &"-o", &frt]);
    let noise = fx("checker_fm/noise.npy");
    let out = dir.path("x.npy");
    // Explicit grid on the command line and from a file: flow_matching's ODESolver.
    let grid = "0,0.1,0.25,0.45,0.7,0.9,1";
    let text = ok(&[
        &"sample",
        &frt,
        &"--noise",
        &noise,
        &"--method rk4-38 --grid",
        &grid,
        &"-o",
        &out,
    ]);
    assert!(text.contains("x 6 steps"), "{text}");
    assert_close(&out, "sampler/checker_fm_timegrid_rk4-38.npy", 5e-5);
    ok(&[
        &"sample",
        &frt,
        &"--noise",
        &noise,
        &"--method midpoint --grid-file",
        &fx("sampler/timegrid.npy"),
        &"-o",
        &out,
    ]);
    assert_close(&out, "sampler/checker_fm_timegrid_midpoint.npy", 5e-5);
    // Adams-Bashforth and the pseudo-corrector.
    for m in ["ab2", "ab3", "ab4", "heun-reuse"] {
        let text = ok(&[
            &"sample",
            &frt,
            &"--noise",
            &noise,
            &"--method",
            &m,
            &"--steps 8 -o",
            &out,
        ]);
        let evals = if m == "heun-reuse" {
            "9 velocity"
        } else {
            "8 velocity"
        };
        assert!(text.contains(evals), "{m}: {text}");
        assert_close(&out, &format!("sampler/checker_fm_{m}_8.npy"), 5e-5);
    }
    // dopri5 with tolerances.
    let text = sample_ok(
        &frt,
        &noise,
        "--method dopri5 --rtol 1e-5 --atol 1e-5",
        &out,
    );
    assert!(text.contains("68 velocity evaluations"), "{text}");
    assert_close(&out, "sampler/checker_fm_dopri5_rtol1e-5.npy", 5e-5);
    // --step-size: torchdiffeq's grid (0.125 -> 8 steps).
    let text = sample_ok(&frt, &noise, "--method euler --step-size 0.125", &out);
    assert!(text.contains("x 8 steps"), "{text}");
    assert_close(&out, "checker_fm/samples/euler_8.npy", 5e-5);
    // Trajectory: [steps + 1, N, 2], first the noise, last the sample.
    let traj = dir.path("traj.npy");
    ok(&[
        &"sample",
        &frt,
        &"--noise",
        &noise,
        &"--method rk4-38 --steps 4 --trajectory",
        &traj,
        &"-o",
        &out,
    ]);
    let (t, shape) = read_npy(&traj);
    assert_eq!(shape, [5, 256, 2]);
    assert_eq!(&t[..512], &read_npy(&noise).0[..]);
    assert_eq!(&t[4 * 512..], &read_npy(&out).0[..]);
    // Bad grids are one-line errors.
    for bad in ["cosine", "shift:x", "0,0.5,0.5,1", "0"] {
        let e = fails(&[
            &"sample", &frt, &"--noise", &noise, &"--grid", &bad, &"-o", &out,
        ]);
        assert!(e.contains("grid"), "{bad}: {e}");
    }
    let e = fails(&[
        &"sample",
        &frt,
        &"--noise",
        &noise,
        &"--method ab7 -o",
        &out,
    ]);
    assert!(e.contains("--method ab7"), "{e}");
}

#[test]
fn baked_in_defaults_are_used_and_overridable() {
    let dir = TempDir::new("cli-defaults");
    let frt = dir.path("icfm.frt");
    export_fx(
        "moons_icfm/model.dynamo.onnx",
        &frt,
        "--method ab3 --steps 16",
    );
    let text = ok(&[&"inspect", &frt]);
    assert!(
        text.contains("solver defaults") && text.contains("Ab3"),
        "{text}"
    );
    let noise = fx("moons_icfm/noise.npy");
    let out = dir.path("x.npy");
    let text = sample_ok(&frt, &noise, "", &out);
    assert!(text.contains("ab3 x 16 steps"), "{text}");
    assert_close(&out, "sampler/moons_icfm_ab3_16.npy", 5e-5);
    // The command line wins.
    sample_ok(&frt, &noise, "--method rk4-38 --steps 8", &out);
    assert_close(&out, "moons_icfm/samples/rk4-38_8.npy", 5e-5);
    // A baked explicit grid.
    let frt2 = dir.path("icfm_grid.frt");
    export_fx(
        "moons_icfm/model.ts.onnx",
        &frt2,
        "--method heun-reuse --grid 0,0.1,0.25,0.45,0.7,0.9,1",
    );
    sample_ok(&frt2, &noise, "", &out);
    assert_close(&out, "sampler/moons_icfm_heun-reuse_grid.npy", 5e-5);
    let e = fails(&[
        &"export",
        &fx("moons_icfm/model.ts.onnx"),
        &"-o",
        &frt2,
        &"--grid nope",
    ]);
    assert!(e.contains("grid"), "{e}");
}

#[test]
fn invert_round_trips() {
    let dir = TempDir::new("cli-invert");
    let frt = dir.path("icfm.frt");
    ok(&[&"export", &fx("moons_icfm/model.ts.onnx"), &"-o", &frt]);
    let z = dir.path("z.npy");
    let text = ok(&[
        &"invert",
        &frt,
        &"--data",
        &fx("moons_icfm/samples/rk4-38_32.npy"),
        &"--method rk4-38 --steps 32 -o",
        &z,
    ]);
    assert!(text.contains("round trip"), "{text}");
    assert_close(&z, "sampler/moons_icfm_invert_rk4-38_32.npy", 5e-5);
    assert_close(&z, "moons_icfm/noise.npy", 1e-3);
}

#[test]
fn sde_from_the_command_line() {
    let dir = TempDir::new("cli-sde");
    let frt = dir.path("checker.frt");
    let eps = dir.path("eps.frt");
    ok(&[&"export", &fx("checker_fm/model.ts.onnx"), &"-o", &frt]);
    ok(&[&"export", &fx("checker_eps/model.ts.onnx"), &"-o", &eps]);
    let out = dir.path("x.npy");
    let x0 = fx("sampler/sde_noise.npy");
    ok(&[
        &"sample",
        &frt,
        &"--noise",
        &x0,
        &"--steps 16 --sde linear:0.5 --sde-noise",
        &fx("sampler/sde_z_16.npy"),
        &"-o",
        &out,
    ]);
    assert_close(&out, "sampler/checker_fm_sde_linear0.5_16.npy", 5e-5);
    // The same SDE with ONNX Runtime evaluating the velocity.
    let frt_ort = dir.path("checker_ort.frt");
    export_fx("checker_fm/model.ts.onnx", &frt_ort, "--embed-onnx");
    ok(&[
        &"sample",
        &frt_ort,
        &"--noise",
        &x0,
        &"--steps 16 --sde linear:0.5 --sde-noise",
        &fx("sampler/sde_z_16.npy"),
        &"--backend ort -o",
        &out,
    ]);
    assert_close(&out, "sampler/checker_fm_sde_linear0.5_16.npy", 5e-5);
    ok(&[
        &"sample",
        &frt,
        &"--noise",
        &x0,
        &"--steps 16 --sde linear:1.0 --score-model",
        &eps,
        &"--sde-noise",
        &fx("sampler/sde_z_16.npy"),
        &"-o",
        &out,
    ]);
    assert_close(&out, "sampler/checker_fm_sde_eps_linear1.0_16.npy", 5e-5);
    // Seeded noise is deterministic.
    let a = dir.path("a.npy");
    sample_ok(&frt, &x0, "--steps 8 --sde const:0.3 --sde-seed 5", &a);
    sample_ok(&frt, &x0, "--steps 8 --sde const:0.3 --sde-seed 5", &out);
    assert_eq!(read_npy(&a).0, read_npy(&out).0);
    let e = fails(&[&"sample", &frt, &"--noise", &x0, &"--sde cubic:1 -o", &out]);
    assert!(e.contains("--sde"), "{e}");
    let e = fails(&[
        &"sample",
        &frt,
        &"--noise",
        &x0,
        &"--steps 16 --sde linear:1 --sde-noise",
        &fx("sampler/sde_z_32.npy"),
        &"-o",
        &out,
    ]);
    assert!(e.contains("steps x N x dim"), "{e}");
}

#[test]
fn sigma_convention_and_diffusers_grids() {
    let dir = TempDir::new("cli-sigma");
    let frt = dir.path("sigma.frt");
    export_fx(
        "moons_sigma/model.ts.onnx",
        &frt,
        "--time sigma --time-scale 1000",
    );
    let text = ok(&[&"inspect", &frt]);
    assert!(
        text.contains("sigma axis") && text.contains("1000"),
        "{text}"
    );
    let out = dir.path("x.npy");
    let noise = fx("moons_sigma/noise.npy");
    for (grid, steps, want) in [
        (
            "diffusers:3",
            "4",
            "moons_sigma/samples/diffusers_shift3_4.npy",
        ),
        (
            "flux:1.15",
            "8",
            "moons_sigma/samples/diffusers_dynamic_exp_mu1.15_8.npy",
        ),
    ] {
        ok(&[
            &"sample", &frt, &"--noise", &noise, &"--grid", &grid, &"--steps", &steps, &"-o", &out,
        ]);
        assert_close(&out, want, 5e-5);
    }
    let e = fails(&[
        &"export",
        &fx("moons_sigma/model.ts.onnx"),
        &"-o",
        &frt,
        &"--time tau",
    ]);
    assert!(e.contains("--time tau"), "{e}");
    let e = fails(&[
        &"sample",
        &frt,
        &"--noise",
        &noise,
        &"--sde linear:1 -o",
        &out,
    ]);
    assert!(e.contains("t axis"), "{e}");
}

#[test]
fn classifier_free_guidance_from_the_command_line() {
    let dir = TempDir::new("cli-cfg");
    let frt = dir.path("cfg.frt");
    ok(&[&"export", &fx("moons_cfg/model.ts.onnx"), &"-o", &frt]);
    let out = dir.path("x.npy");
    let noise = fx("moons_cfg/noise.npy");
    let labels = fx("moons_cfg/labels.npy");
    let text = ok(&[
        &"sample",
        &frt,
        &"--noise",
        &noise,
        &"--label",
        &labels,
        &"--guidance 2.5 --null-label 2 --method rk4-38 --steps 8 -o",
        &out,
    ]);
    assert!(text.contains("guidance w=2.5"), "{text}");
    assert_close(&out, "moons_cfg/samples/cfg2.5_rk4-38_8.npy", 5e-5);
    ok(&[
        &"sample",
        &frt,
        &"--noise",
        &noise,
        &"--label",
        &labels,
        &"--guidance 2.5 --null-label 2 --guidance-interval 0.2,0.8 --method rk4-38 --steps 8 -o",
        &out,
    ]);
    assert_close(
        &out,
        "moons_cfg/samples/cfg2.5_interval0.2-0.8_rk4-38_8.npy",
        5e-5,
    );
    // Baked-in guidance.
    let baked = dir.path("cfg_baked.frt");
    export_fx(
        "moons_cfg/model.dynamo.onnx",
        &baked,
        "--guidance 2.5 --null-label 2 --method midpoint --steps 4",
    );
    ok(&[
        &"sample", &baked, &"--noise", &noise, &"--label", &labels, &"-o", &out,
    ]);
    assert_close(&out, "moons_cfg/samples/cfg2.5_midpoint_4.npy", 5e-5);
    // Errors.
    let e = fails(&[
        &"sample",
        &frt,
        &"--noise",
        &noise,
        &"--label",
        &labels,
        &"--guidance 2 -o",
        &out,
    ]);
    assert!(e.contains("--null-label"), "{e}");
    let e = fails(&[
        &"sample",
        &frt,
        &"--noise",
        &noise,
        &"--label",
        &labels,
        &"--guidance 2 --null-label 9 -o",
        &out,
    ]);
    assert!(e.contains("out of range"), "{e}");
    let plain = dir.path("plain.frt");
    ok(&[&"export", &fx("checker_fm/model.ts.onnx"), &"-o", &plain]);
    let e = fails(&[&"sample", &plain, &"--seed 1 --num 4 --guidance 2 -o", &out]);
    assert!(e.contains("label or cond input"), "{e}");
}
