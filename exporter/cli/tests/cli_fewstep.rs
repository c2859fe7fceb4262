//! Few-step families and multi-network files through the `flowrt` CLI, against the Python
//! references of `tests/fixtures/make_fewstep_fixtures.py`.

mod common;
use common::*;

#[test]
fn meanflow_one_step_from_the_command_line() {
    let dir = TempDir::new("cli-meanflow");
    let frt = dir.path("mf.frt");
    ok(&[
        "export",
        s(&fx("moons_meanflow/model.ts.onnx")),
        "-o",
        s(&frt),
        "--time",
        "sigma",
    ]);
    let text = ok(&["inspect", s(&frt)]);
    assert!(
        text.contains("role step") && text.contains("sigma axis"),
        "{text}"
    );
    let out = dir.path("x.npy");
    let noise = fx("moons_meanflow/noise.npy");
    let text = ok(&["sample", s(&frt), "--noise", s(&noise), "-o", s(&out)]);
    assert!(text.contains("1 velocity evaluations"), "{text}");
    assert_close(&out, "moons_meanflow/samples/meanflow_1.npy", 5e-5);
    ok(&[
        "sample",
        s(&frt),
        "--noise",
        s(&noise),
        "--steps",
        "4",
        "-o",
        s(&out),
    ]);
    assert_close(&out, "moons_meanflow/samples/meanflow_4.npy", 5e-5);
    let e = fails(&[
        "sample",
        s(&frt),
        "--noise",
        s(&noise),
        "--method",
        "rk4-38",
        "-o",
        s(&out),
    ]);
    assert!(e.contains("euler"), "{e}");
    // A wrong declared form is an error.
    let e = fails(&[
        "export",
        s(&fx("moons_icfm/model.ts.onnx")),
        "-o",
        s(&frt),
        "--second-time",
        "h",
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
        "export",
        s(&fx("moons_block0/model.ts.onnx")),
        "-o",
        s(&frt),
        "--block",
        &spec,
    ]);
    let text = ok(&["inspect", s(&frt)]);
    assert!(text.contains("pipeline stage: Block"), "{text}");
    let out = dir.path("x.npy");
    let noise = fx("moons_block0/noise.npy");
    let text = ok(&[
        "sample",
        s(&frt),
        "--noise",
        s(&noise),
        "--method",
        "rk4-38",
        "--steps",
        "8",
        "-o",
        s(&out),
    ]);
    assert!(text.contains("pipeline"), "{text}");
    assert_close(&out, "fewstep/blockwise_rk4-38_8.npy", 5e-5);
    // The refiner: the light net on the second half of the steps.
    let frt2 = dir.path("refined.frt");
    let refiner = fx("moons_refiner/model.ts.onnx");
    let spec = format!("0.5:1={}", s(&refiner));
    ok(&[
        "export",
        s(&fx("moons_icfm/model.ts.onnx")),
        "-o",
        s(&frt2),
        "--refiner",
        &spec,
    ]);
    ok(&[
        "sample",
        s(&frt2),
        "--noise",
        s(&fx("moons_icfm/noise.npy")),
        "--method",
        "heun",
        "--steps",
        "8",
        "-o",
        s(&out),
    ]);
    assert_close(&out, "fewstep/refiner_heun_8.npy", 5e-5);
    let e = fails(&[
        "export",
        s(&fx("moons_icfm/model.ts.onnx")),
        "-o",
        s(&frt2),
        "--refiner",
        "x",
    ]);
    assert!(e.contains("--refiner"), "{e}");
}

#[test]
fn latent_decoder_and_rollout_from_the_command_line() {
    let dir = TempDir::new("cli-latent");
    let frt = dir.path("latent.frt");
    ok(&[
        "export",
        s(&fx("moons_latent_flow/model.ts.onnx")),
        "-o",
        s(&frt),
        "--decoder",
        s(&fx("moons_latent_decoder/model.dynamo.onnx")),
    ]);
    let out = dir.path("y.npy");
    let text = ok(&[
        "sample",
        s(&frt),
        "--noise",
        s(&fx("moons_latent_flow/noise.npy")),
        "--method",
        "rk4-38",
        "--steps",
        "8",
        "-o",
        s(&out),
    ]);
    assert!(
        text.contains("decoder") && text.contains("[256, 8]"),
        "{text}"
    );
    assert_close(&out, "fewstep/latent_rk4-38_8.npy", 5e-5);
    // Rollout of the heat-equation surrogate.
    let heat = dir.path("heat.frt");
    ok(&[
        "export",
        s(&fx("heat_rollout/model.ts.onnx")),
        "-o",
        s(&heat),
    ]);
    let traj = dir.path("traj.npy");
    let text = ok(&[
        "rollout",
        s(&heat),
        "--init",
        s(&fx("heat_rollout/init.npy")),
        "--steps",
        "20",
        "-o",
        s(&traj),
    ]);
    assert!(text.contains("[21, 32, 16]"), "{text}");
    assert_close(&traj, "heat_rollout/rollout_20.npy", 5e-5);
    // A velocity model is not a rollout model.
    let v = dir.path("v.frt");
    ok(&["export", s(&fx("checker_fm/model.ts.onnx")), "-o", s(&v)]);
    let e = fails(&[
        "rollout",
        s(&v),
        "--init",
        s(&fx("checker_fm/noise.npy")),
        "--steps",
        "2",
        "-o",
        s(&traj),
    ]);
    assert!(e.contains("time input"), "{e}");
}
