//! `--backend wgpu|cuda|auto` through the `flowrt` CLI: the GPU backend's samples equal the
//! CPU backend's, `auto -v` says what it chose and why, a missing device is an error naming
//! the backend and what was looked for, and `bench --backend wgpu` prints its ratio line.
//! (CI runs wgpu on lavapipe, Mesa's software Vulkan; `scripts/test.sh` installs it.)

mod common;
use common::*;

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn gpu_backends_on_the_command_line() {
    let dir = TempDir::new("cli-gpu");
    let frt = dir.path("cfg.frt");
    ok(&[
        &"export --embed-onnx",
        &fx("moons_cfg/model.ts.onnx"),
        &"-o",
        &frt,
    ]);
    let noise = fx("moons_cfg/noise.npy");
    let labels = fx("moons_cfg/labels.npy");
    let run = |backend: &str, out: &std::path::Path| {
        ok(&[
            &"sample",
            &frt,
            &"--noise",
            &noise,
            &"--label",
            &labels,
            &"--guidance 2.5 --null-label 2 --method rk4-38 --steps 8 --backend",
            &backend,
            &"-v -o",
            &out,
        ])
    };
    let (cpu, gpu) = (dir.path("cpu.npy"), dir.path("gpu.npy"));
    let text = run("cpu", &cpu);
    assert!(text.contains("backend cpu"), "{text}");
    let text = run("wgpu", &gpu);
    assert!(text.contains("backend wgpu"), "{text}");
    assert!(text.contains("launches per evaluation"), "{text}");
    let d = max_diff(&read_npy(&gpu).0, &read_npy(&cpu).0);
    assert!(d <= 1e-4, "guided wgpu vs cpu: {d}");
    assert_close(&gpu, "moons_cfg/samples/cfg2.5_rk4-38_8.npy", 2e-4);

    // auto: this small model stays on the CPU, and -v says why.
    let text = run("auto", &dir.path("auto.npy"));
    assert!(text.contains("backend auto: cpu ("), "{text}");
    assert!(text.contains("multiply-adds per evaluation"), "{text}");
    assert!(text.contains("backend cpu)"), "{text}");

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
    let traj = |backend: &str, t: &std::path::Path| {
        ok(&[
            &"sample",
            &frt,
            &"--noise",
            &noise,
            &"--label",
            &labels,
            &"--method midpoint --steps 4 --backend",
            &backend,
            &"--trajectory",
            &t,
            &"-o",
            &dir.path("t_out.npy"),
        ])
    };
    let (tc, tg) = (dir.path("traj_cpu.npy"), dir.path("traj_gpu.npy"));
    traj("cpu", &tc);
    let text = traj("wgpu", &tg);
    assert!(text.contains("trajectory: 5 states"), "{text}");
    let (a, sa) = read_npy(&tg);
    let (b, sb) = read_npy(&tc);
    assert_eq!(sa, sb);
    let d = max_diff(&a, &b);
    assert!(d <= 1e-4, "trajectory wgpu vs cpu: {d}");

    // Options the GPU path does not take are refused, not ignored.
    let err = fails(&[
        &"sample",
        &frt,
        &"--noise",
        &noise,
        &"--label",
        &labels,
        &"--backend wgpu --sde linear:0.5 -o",
        &gpu,
    ]);
    assert!(err.contains("not available with --backend wgpu"), "{err}");

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
