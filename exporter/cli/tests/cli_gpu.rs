//! `--backend wgpu|cuda|auto` through the `flowrt` CLI: the GPU backend's samples equal the
//! CPU backend's, `auto -v` says what it chose and why, a missing device is an error naming
//! the backend and what was looked for, and `bench --backend wgpu` prints its ratio line.
//! (CI runs wgpu on lavapipe, Mesa's software Vulkan; `scripts/test.sh` installs it.)

mod common;
use common::*;

#[test]
fn gpu_backends_on_the_command_line() {
    let (dir, frt) = temp_export("cli-gpu", "moons_cfg/model.ts.onnx", "--embed-onnx");
    let noise = fx("moons_cfg/noise.npy");
    let labels = fx("moons_cfg/labels.npy");
    // `sample` with the labels on `backend`.
    let run = |backend: &str, flags: &[&dyn Arg], out: &std::path::Path| {
        sample_ok(
            &frt,
            &noise,
            &[&"--label", &labels, &"--backend", &backend, &flags],
            out,
        )
    };
    let guided: &[&dyn Arg] = &[&"--guidance 2.5 --null-label 2 --method rk4-38 --steps 8 -v"];
    let (cpu, gpu) = (dir.path("cpu.npy"), dir.path("gpu.npy"));
    let text = run("cpu", guided, &cpu);
    assert!(text.contains("backend cpu"), "{text}");
    let text = run("wgpu", guided, &gpu);
    assert_contains(&text, &["backend wgpu", "launches per evaluation"]);
    let d = npy_diff(&gpu, &cpu);
    assert!(d <= 1e-4, "guided wgpu vs cpu: {d}");
    assert_close(&gpu, "moons_cfg/samples/cfg2.5_rk4-38_8.npy", 2e-4);

    // auto: this small model stays on the CPU, and -v says why.
    let text = run("auto", guided, &dir.path("auto.npy"));
    let why = [
        "backend auto: cpu (",
        "multiply-adds per evaluation",
        "backend cpu)",
    ];
    assert_contains(&text, &why);

    // No CUDA device here: the error names the backend and what was looked for.
    let cuda = flowrt(&[
        &"sample",
        &frt,
        &"--seed 1 --num 4 --label-cycle 2 --backend cuda -o",
        &dir.path("c.npy"),
    ]);
    if cuda.status.success() {
        println!("a CUDA device exists here: the missing-device error is not checked");
    } else {
        let err = String::from_utf8_lossy(&cuda.stderr);
        assert!(err.contains("no cuda device"), "{err}");
        assert!(err.contains("libcuda"), "{err}");
    }

    // --trajectory reads every step back: the same trajectory as the CPU backend's.
    let (tc, tg) = (dir.path("traj_cpu.npy"), dir.path("traj_gpu.npy"));
    let t_out = dir.path("t_out.npy");
    let traj = |t| -> Vec<String> { args(&[&"--method midpoint --steps 4 --trajectory", &t]) };
    run("cpu", &[&traj(&tc)], &t_out);
    let text = run("wgpu", &[&traj(&tg)], &t_out);
    assert!(text.contains("trajectory: 5 states"), "{text}");
    let d = npy_diff(&tg, &tc);
    assert!(d <= 1e-4, "trajectory wgpu vs cpu: {d}");

    // Options the GPU path does not take are refused, not ignored.
    let flags: &[&dyn Arg] = &[&"--label", &labels, &"--backend wgpu --sde linear:0.5"];
    sample_fails(
        &frt,
        &noise,
        flags,
        &gpu,
        &["not available with --backend wgpu"],
    );

    // bench: the GPU against ONNX Runtime, side by side.
    let text = ok(&[
        &"bench",
        &frt,
        &"--backend wgpu --batch 256 --runs 2 --warmup 1",
    ]);
    assert!(text.contains("flowrt backend: wgpu on "), "{text}");
    assert!(text.contains("ratio flowrt/ort: "), "{text}");
    let diff: f32 = text
        .lines()
        .find_map(|l| l.strip_prefix("max |flowrt - ort| over the outputs: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("diff line");
    assert!(diff <= 1e-4, "{text}");
}
