//! Few-step families and multi-network files through the `flowrt` CLI, against the Python
//! references of `tests/fixtures/make_fewstep_fixtures.py`.

mod common;
use common::*;

#[test]
fn meanflow_one_step_from_the_command_line() {
    let dir = TempDir::new("cli-meanflow");
    let frt = dir.path("mf.frt");
    export_fx("moons_meanflow/model.ts.onnx", &frt, "--time sigma");
    let text = ok(&[&"inspect", &frt]);
    assert!(
        text.contains("role step") && text.contains("sigma axis"),
        "{text}"
    );
    let out = dir.path("x.npy");
    let noise = fx("moons_meanflow/noise.npy");
    let text = sample_ok(&frt, &noise, "", &out);
    assert!(text.contains("1 velocity evaluations"), "{text}");
    assert_close(&out, "moons_meanflow/samples/meanflow_1.npy", 5e-5);
    sample_ok(&frt, &noise, "--steps 4", &out);
    assert_close(&out, "moons_meanflow/samples/meanflow_4.npy", 5e-5);
    let e = fails(&[
        &"sample",
        &frt,
        &"--noise",
        &noise,
        &"--method rk4-38 -o",
        &out,
    ]);
    assert!(e.contains("euler"), "{e}");
    // A wrong declared form is an error.
    let e = fails(&[
        &"export",
        &fx("moons_icfm/model.ts.onnx"),
        &"-o",
        &frt,
        &"--second-time h",
    ]);
    assert!(e.contains("no second time input"), "{e}");
}

#[test]
fn pipelines_from_the_command_line() {
    let dir = TempDir::new("cli-pipeline");
    let frt = dir.path("blocks.frt");
    let block1 = fx("moons_block1/model.ts.onnx");
    let spec = format!("0.5:1={}", s(&block1));
    ok(&[
        &"export",
        &fx("moons_block0/model.ts.onnx"),
        &"-o",
        &frt,
        &"--block",
        &&spec,
    ]);
    let text = ok(&[&"inspect", &frt]);
    assert!(text.contains("pipeline stage: Block"), "{text}");
    let out = dir.path("x.npy");
    let noise = fx("moons_block0/noise.npy");
    let text = sample_ok(&frt, &noise, "--method rk4-38 --steps 8", &out);
    assert!(text.contains("pipeline"), "{text}");
    assert_close(&out, "fewstep/blockwise_rk4-38_8.npy", 5e-5);
    // The refiner: the light net on the second half of the steps.
    let frt2 = dir.path("refined.frt");
    let refiner = fx("moons_refiner/model.ts.onnx");
    let spec = format!("0.5:1={}", s(&refiner));
    ok(&[
        &"export",
        &fx("moons_icfm/model.ts.onnx"),
        &"-o",
        &frt2,
        &"--refiner",
        &&spec,
    ]);
    ok(&[
        &"sample",
        &frt2,
        &"--noise",
        &fx("moons_icfm/noise.npy"),
        &"--method heun --steps 8 -o",
        &out,
    ]);
    assert_close(&out, "fewstep/refiner_heun_8.npy", 5e-5);
    let e = fails(&[
        &"export",
        &fx("moons_icfm/model.ts.onnx"),
        &"-o",
        &frt2,
        &"--refiner x",
    ]);
    assert!(e.contains("--refiner"), "{e}");
}

#[test]
fn latent_decoder_and_rollout_from_the_command_line() {
    let dir = TempDir::new("cli-latent");
    let frt = dir.path("latent.frt");
    ok(&[
        &"export",
        &fx("moons_latent_flow/model.ts.onnx"),
        &"-o",
        &frt,
        &"--decoder",
        &fx("moons_latent_decoder/model.dynamo.onnx"),
    ]);
    let out = dir.path("y.npy");
    let text = ok(&[
        &"sample",
        &frt,
        &"--noise",
        &fx("moons_latent_flow/noise.npy"),
        &"--method rk4-38 --steps 8 -o",
        &out,
    ]);
    assert!(
        text.contains("decoder") && text.contains("[256, 8]"),
        "{text}"
    );
    assert_close(&out, "fewstep/latent_rk4-38_8.npy", 5e-5);
    // Rollout of the heat-equation surrogate.
    let heat = dir.path("heat.frt");
    ok(&[&"export", &fx("heat_rollout/model.ts.onnx"), &"-o", &heat]);
    let traj = dir.path("traj.npy");
    let text = ok(&[
        &"rollout",
        &heat,
        &"--init",
        &fx("heat_rollout/init.npy"),
        &"--steps 20 -o",
        &traj,
    ]);
    assert!(text.contains("[21, 32, 16]"), "{text}");
    assert_close(&traj, "heat_rollout/rollout_20.npy", 5e-5);
    // A velocity model is not a rollout model.
    let v = dir.path("v.frt");
    ok(&[&"export", &fx("checker_fm/model.ts.onnx"), &"-o", &v]);
    let e = fails(&[
        &"rollout",
        &v,
        &"--init",
        &fx("checker_fm/noise.npy"),
        &"--steps 2 -o",
        &traj,
    ]);
    assert!(e.contains("time input"), "{e}");
}
