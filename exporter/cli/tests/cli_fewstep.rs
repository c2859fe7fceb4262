//! Few-step families and multi-network files through the `flowrt` CLI, against the Python
//! references of `tests/fixtures/make_fewstep_fixtures.py`.

mod common;
use common::*;

#[test]
fn meanflow_one_step_from_the_command_line() {
    let onnx = "moons_meanflow/model.ts.onnx";
    let (dir, frt) = temp_export("cli-meanflow", onnx, "--time sigma");
    inspect_has(&frt, &["role step", "sigma axis"]);
    let out = dir.path("x.npy");
    let noise = fx("moons_meanflow/noise.npy");
    let text = sample_ok(&frt, &noise, &[], &out);
    assert!(text.contains("1 velocity evaluations"), "{text}");
    assert_close(&out, "moons_meanflow/samples/meanflow_1.npy", 5e-5);
    sample_ok(&frt, &noise, &[&"--steps 4"], &out);
    assert_close(&out, "moons_meanflow/samples/meanflow_4.npy", 5e-5);
    sample_fails(&frt, &noise, &[&"--method rk4-38"], &out, &["euler"]);
    // A wrong declared form is an error.
    let onnx = "moons_icfm/model.ts.onnx";
    export_fails(onnx, &frt, "--second-time h", &["no second time input"]);
}

#[test]
fn pipelines_from_the_command_line() {
    let dir = TempDir::new("cli-pipeline");
    // `--FLAG 0.5:1=PATH` for the fixture model `onnx`.
    let stage = |flag, onnx| args(&[&flag, &format!("0.5:1={}", s(&fx(onnx)))]);
    let block = stage("--block", "moons_block1/model.ts.onnx");
    let frt = export_in(&dir, "blocks.frt", "moons_block0/model.ts.onnx", &block);
    inspect_has(&frt, &["pipeline stage: Block"]);
    let out = dir.path("x.npy");
    let noise = fx("moons_block0/noise.npy");
    let text = sample_ok(&frt, &noise, &[&"--method rk4-38 --steps 8"], &out);
    assert!(text.contains("pipeline"), "{text}");
    assert_close(&out, "fewstep/blockwise_rk4-38_8.npy", 5e-5);
    // The refiner: the light net on the second half of the steps.
    let onnx = "moons_icfm/model.ts.onnx";
    let refiner = stage("--refiner", "moons_refiner/model.ts.onnx");
    let frt2 = export_in(&dir, "refined.frt", onnx, &refiner);
    let noise = fx("moons_icfm/noise.npy");
    sample_ok(&frt2, &noise, &[&"--method heun --steps 8"], &out);
    assert_close(&out, "fewstep/refiner_heun_8.npy", 5e-5);
    export_fails(onnx, &frt2, "--refiner x", &["--refiner"]);
}

#[test]
fn latent_decoder_and_rollout_from_the_command_line() {
    let dir = TempDir::new("cli-latent");
    let decoder = args(&[&"--decoder", &fx("moons_latent_decoder/model.dynamo.onnx")]);
    let frt = export_in(
        &dir,
        "latent.frt",
        "moons_latent_flow/model.ts.onnx",
        &decoder,
    );
    let out = dir.path("y.npy");
    let noise = fx("moons_latent_flow/noise.npy");
    let text = sample_ok(&frt, &noise, &[&"--method rk4-38 --steps 8"], &out);
    assert_contains(&text, &["decoder", "[256, 8]"]);
    assert_close(&out, "fewstep/latent_rk4-38_8.npy", 5e-5);
    // A class-conditional flow with a decoder: the labels reach the flow, the decoder maps
    // the final state, exactly as the flow alone and then the decoder graph.
    let dec_onnx = "moons_latent_decoder/model.ts.onnx";
    let cond = export_in(
        &dir,
        "cond.frt",
        "moons_cfg/model.ts.onnx",
        args(&[&"--decoder", &fx(dec_onnx)]),
    );
    let flow = export_in(&dir, "flow.frt", "moons_cfg/model.ts.onnx", "");
    let dec = export_in(&dir, "dec.frt", dec_onnx, "");
    let (noise, labels) = (fx("moons_cfg/noise.npy"), fx("moons_cfg/labels.npy"));
    let run = [&"--method rk4-38 --steps 8 --label" as &dyn Arg, &labels];
    let (y, z) = (dir.path("cond_y.npy"), dir.path("cond_z.npy"));
    assert_contains(&sample_ok(&cond, &noise, &run, &y), &["decoder"]);
    sample_ok(&flow, &noise, &run, &z);
    let (zv, zs) = read_npy(&z);
    let bytes = flowrt::format::AlignedBytes::copy_from(&std::fs::read(&dec).unwrap());
    let model = flowrt::Model::from_bytes(bytes.as_slice()).unwrap();
    let mut want = vec![0f32; zs[0] * model.output_dim()];
    let mut arena = flowrt::format::AlignedBytes::zeroed(model.graph_arena_bytes(zs[0]).unwrap());
    flowrt::exec::run(&model, zs[0], &[&zv], &mut want, arena.as_mut_slice()).unwrap();
    assert_eq!(read_npy(&y).0, want, "pipeline = flow, then decoder");
    // Other labels, other samples.
    let flipped = dir.path("flipped.npy");
    let (lv, _) = flowrt_export::npy::read_labels(std::path::Path::new(&labels)).unwrap();
    let other: Vec<i64> = lv.iter().map(|l| 1 - l.min(&1)).collect();
    flowrt_export::npy::write_i64(&flipped, &other).unwrap();
    let y2 = dir.path("cond_y2.npy");
    let run2 = [&"--method rk4-38 --steps 8 --label" as &dyn Arg, &flipped];
    sample_ok(&cond, &noise, &run2, &y2);
    assert!(npy_diff(&y, &y2) > 0.1, "the labels change the samples");
    // The edge-scale latent model (class-conditional DiT + conv decoder to 32x32 digits):
    // one file, labels in, images out, as torch draws them (2 Euler steps).
    let e = |f: &str| fx(&format!("edge_digits/{f}"));
    let edge = export_in(
        &dir,
        "edge.frt",
        "edge_digits/flow.ts.onnx",
        args(&[&"--decoder", &e("decoder.ts.onnx")]),
    );
    let img = dir.path("edge.npy");
    let run = [
        &"--method euler --steps 2 --label" as &dyn Arg,
        &e("labels.npy"),
    ];
    let text = sample_ok(&edge, &e("noise.npy"), &run, &img);
    assert_contains(&text, &["decoder", "[80, 1, 32, 32]"]);
    assert_close(&img, "edge_digits/samples/image_euler_2.npy", 1e-4);
    // Rollout of the heat-equation surrogate.
    let heat = export_in(&dir, "heat.frt", "heat_rollout/model.ts.onnx", "");
    let traj = dir.path("traj.npy");
    let rollout = |frt: &std::path::Path, init: &str, steps: &str| -> Vec<String> {
        args(&[
            &"rollout",
            &frt,
            &"--init",
            &fx(init),
            &"--steps",
            &steps,
            &"-o",
            &traj,
        ])
    };
    let text = ok(&[&rollout(&heat, "heat_rollout/init.npy", "20")]);
    assert!(text.contains("[21, 32, 16]"), "{text}");
    assert_close(&traj, "heat_rollout/rollout_20.npy", 5e-5);
    // A velocity model is not a rollout model.
    let v = export_in(&dir, "v.frt", "checker_fm/model.ts.onnx", "");
    fails_with(
        &[&rollout(&v, "checker_fm/noise.npy", "2")],
        &["time input"],
    );
}
