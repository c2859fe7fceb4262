//! One- and few-step model families against their Python samplers
//! (`tests/fixtures/make_fewstep_fixtures.py`): MeanFlow (`u(z, t, h)`), shortcut models
//! (`v(x, t, log2 N)`), rectified flows, blockwise nets, a FlowTurbo-style refiner, latent
//! flow matching with a decoder graph, and an autoregressive PDE rollout.

use std::path::PathBuf;

use flowrt::format::AlignedBytes;
use flowrt::grid::{GridSpec, Uniform};
use flowrt::pipeline::StageKind;
use flowrt::solver::Method;
use flowrt::time::{SecondTime, TimeAxis, TimeConvention};
use flowrt::Model;
use flowrt_export::ExportOptions;
use flowrt_tests::{fixtures_dir, max_abs_diff, npy, EXPORTS};

const TOL: f32 = 5e-5;

fn fx(p: &str) -> PathBuf {
    fixtures_dir().join(p)
}

fn load(p: &str) -> Vec<f32> {
    npy(&fx(p)).0
}

fn export_with(onnx: &str, opts: &ExportOptions) -> AlignedBytes {
    AlignedBytes::copy_from(
        &flowrt_export::export_onnx(&fx(onnx), opts).unwrap_or_else(|e| panic!("{onnx}: {e:#}")),
    )
}

fn sample(
    bytes: &AlignedBytes,
    method: Method,
    grid: &dyn flowrt::grid::TimeGrid,
    x0: &[f32],
) -> Vec<f32> {
    let m = Model::from_bytes(bytes.as_slice()).unwrap();
    let batch = x0.len() / m.state_dim();
    let mut arena =
        AlignedBytes::zeroed(flowrt::sampler::sample_arena_bytes(&m, method, batch).unwrap());
    let mut x = x0.to_vec();
    flowrt::sampler::sample(&m, method, grid, &mut x, arena.as_mut_slice()).unwrap();
    x
}

/// Samples a pipeline with `n` uniform steps from `x0`, decoding into `out` when given.
fn run_pipeline(
    p: &flowrt::pipeline::Pipeline<'_>,
    method: Method,
    n: usize,
    x0: &[f32],
    out: Option<&mut [f32]>,
) -> Vec<f32> {
    let mut x = x0.to_vec();
    let batch = x0.len() / p.main().state_dim();
    let need = flowrt::pipeline::pipeline_arena_bytes(p, method, batch).unwrap();
    let mut arena = AlignedBytes::zeroed(need);
    flowrt::pipeline::sample_pipeline(
        p,
        method,
        &Uniform::unit(n).unwrap(),
        &mut x,
        out,
        arena.as_mut_slice(),
    )
    .unwrap();
    x
}

/// Exports `main` with one pipeline stage of `kind` running the network of `stage`, and hands
/// the loaded model and its pipeline to `check`.
fn with_pipeline(
    main: &str,
    kind: StageKind,
    stage: &str,
    check: impl FnOnce(&Model<'_>, &flowrt::pipeline::Pipeline<'_>),
) {
    let opts = ExportOptions {
        pipeline: vec![(kind, fx(stage))],
        ..Default::default()
    };
    let bytes = export_with(main, &opts);
    let m = Model::from_bytes(bytes.as_slice()).unwrap();
    check(&m, &m.pipeline().expect("pipeline"));
}

/// Samples the pipeline with every method and step count, against `fewstep/{name}_{method}_{n}.npy`.
fn check_pipeline(
    p: &flowrt::pipeline::Pipeline<'_>,
    name: &str,
    methods: &[Method],
    steps: &[usize],
    noise: &[f32],
) {
    for &method in methods {
        for &n in steps {
            let x = run_pipeline(p, method, n, noise, None);
            let d = max_abs_diff(
                &x,
                &load(&format!("fewstep/{name}_{}_{n}.npy", method.name())),
            );
            println!("{name} {method} {n}: max abs diff {d:.2e}");
            assert!(d <= TOL, "{name} {method} {n}: {d}");
        }
    }
}

#[test]
fn meanflow_one_and_few_steps_match_the_official_rule() {
    let opts = ExportOptions {
        time: TimeConvention {
            axis: TimeAxis::Sigma,
            ..Default::default()
        },
        ..Default::default()
    };
    let noise = load("moons_meanflow/noise.npy");
    for (_, file) in EXPORTS {
        let bytes = export_with(&format!("moons_meanflow/{file}"), &opts);
        let m = Model::from_bytes(bytes.as_slice()).unwrap();
        // h detected from the input's name: u(z, t, h = t - r).
        assert_eq!(m.time_convention().second, SecondTime::H);
        for k in [1usize, 2, 4, 8, 32] {
            let grid = GridSpec::Uniform
                .build(k, m.time_convention().axis)
                .unwrap();
            let got = sample(&bytes, Method::Euler, &grid, &noise);
            let d = max_abs_diff(
                &got,
                &load(&format!("moons_meanflow/samples/meanflow_{k}.npy")),
            );
            println!("meanflow {file} {k} steps: max abs diff {d:.2e}");
            assert!(d <= TOL, "{file} {k}: {d}");
        }
        // Only its own rule applies.
        let mut x = noise.clone();
        let mut arena = AlignedBytes::zeroed(
            flowrt::sampler::sample_arena_bytes(&m, Method::Rk4_38, 256).unwrap(),
        );
        assert!(flowrt::sampler::sample(
            &m,
            Method::Rk4_38,
            &Uniform::new(2, 1.0, 0.0).unwrap(),
            &mut x,
            arena.as_mut_slice()
        )
        .is_err());
    }
}

#[test]
fn shortcut_model_steps_match_the_official_rule() {
    let noise = load("moons_shortcut/noise.npy");
    for (_, file) in EXPORTS {
        let bytes = export_with(&format!("moons_shortcut/{file}"), &ExportOptions::default());
        let m = Model::from_bytes(bytes.as_slice()).unwrap();
        // dt_base detected from the input's name: log2 of the step count.
        assert_eq!(m.time_convention().second, SecondTime::Log2Steps);
        for n in [1usize, 2, 4, 8, 128] {
            let got = sample(&bytes, Method::Euler, &Uniform::unit(n).unwrap(), &noise);
            let d = max_abs_diff(
                &got,
                &load(&format!("moons_shortcut/samples/shortcut_{n}.npy")),
            );
            println!("shortcut {file} {n} steps: max abs diff {d:.2e}");
            assert!(d <= TOL, "{file} {n}: {d}");
        }
    }
}

#[test]
fn blockwise_pipeline_matches_reference() {
    let block = StageKind::Block { a: 0.5, b: 1.0 };
    with_pipeline(
        "moons_block0/model.dynamo.onnx",
        block,
        "moons_block1/model.ts.onnx",
        |_, p| {
            assert_eq!(p.stages().count(), 1);
            let noise = load("moons_block0/noise.npy");
            let methods = [Method::Euler, Method::Rk4_38];
            check_pipeline(p, "blockwise", &methods, &[2, 4, 8], &noise);
            // Multistep methods cannot switch networks mid-history.
            let mut x = noise.clone();
            let mut arena = AlignedBytes::zeroed(1 << 20);
            assert!(flowrt::pipeline::sample_pipeline(
                p,
                Method::Ab2,
                &Uniform::unit(4).unwrap(),
                &mut x,
                None,
                arena.as_mut_slice()
            )
            .is_err());
        },
    );
}

#[test]
fn refiner_pipeline_matches_reference() {
    let refiner = StageKind::Refiner { from: 0.5, to: 1.0 };
    with_pipeline(
        "moons_icfm/model.ts.onnx",
        refiner,
        "moons_refiner/model.dynamo.onnx",
        |m, p| {
            // The light net's arena is smaller: the pipeline needs the main net's.
            assert_eq!(
                p.required_arena_bytes(256).unwrap(),
                m.required_arena_bytes(256).unwrap()
            );
            let noise = load("moons_icfm/noise.npy");
            let methods = [Method::Euler, Method::Heun];
            check_pipeline(p, "refiner", &methods, &[4, 8], &noise);
        },
    );
}

#[test]
fn latent_pipeline_decodes_like_the_reference() {
    for (_, file) in EXPORTS {
        let main = format!("moons_latent_flow/{file}");
        let decoder = "moons_latent_decoder/model.ts.onnx";
        with_pipeline(&main, StageKind::Decoder, decoder, |_, p| {
            assert_eq!(p.output_dim(), 8);
            let noise = load("moons_latent_flow/noise.npy");
            for method in [Method::Euler, Method::Rk4_38] {
                for n in [4usize, 8] {
                    let mut y = vec![0f32; 256 * 8];
                    let z = run_pipeline(p, method, n, &noise, Some(&mut y));
                    let dz = max_abs_diff(
                        &z,
                        &load(&format!("fewstep/latent_z_{}_{n}.npy", method.name())),
                    );
                    let dy = max_abs_diff(
                        &y,
                        &load(&format!("fewstep/latent_{}_{n}.npy", method.name())),
                    );
                    println!("latent {file} {method} {n}: latent {dz:.2e}, decoded {dy:.2e}");
                    assert!(dz <= TOL && dy <= TOL, "{file} {method} {n}: {dz} {dy}");
                }
            }
        });
    }
    // The decoder alone, at the probe points: against onnxruntime.
    let dec = export_with(
        "moons_latent_decoder/model.ts.onnx",
        &ExportOptions::default(),
    );
    let m = Model::from_bytes(dec.as_slice()).unwrap();
    assert_eq!((m.state_dim(), m.output_dim()), (2, 8));
    let pz = load("moons_latent_decoder/probe_z.npy");
    let mut out = vec![0f32; 64 * 8];
    let mut arena = AlignedBytes::zeroed(m.graph_arena_bytes(64).unwrap());
    flowrt::exec::run(&m, 64, &[&pz], &mut out, arena.as_mut_slice()).unwrap();
    let d = max_abs_diff(&out, &load("moons_latent_decoder/v_ort_ts.npy"));
    assert!(d <= 1e-5, "decoder vs onnxruntime: {d}");
}

#[test]
fn rollout_matches_torch() {
    let bytes = export_with("heat_rollout/model.dynamo.onnx", &ExportOptions::default());
    let m = Model::from_bytes(bytes.as_slice()).unwrap();
    assert_eq!(m.input_count(), 1);
    let x0 = load("heat_rollout/init.npy");
    let want = load("heat_rollout/rollout_20.npy");
    let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(32).unwrap());
    let mut net = flowrt::exec::CpuField::new(&m, 32, arena.as_mut_slice()).unwrap();
    struct Keep(Vec<f32>);
    impl flowrt::solver::StepObserver<flowrt::CpuOps> for Keep {
        fn on_step(
            &mut self,
            _: &mut flowrt::CpuOps,
            _: usize,
            _: f32,
            x: &mut [f32],
        ) -> Result<(), flowrt::Error> {
            self.0.extend_from_slice(x);
            Ok(())
        }
    }
    let mut traj = Keep(x0.clone());
    let mut x = x0.clone();
    let mut next = vec![0f32; x.len()];
    flowrt::fewstep::rollout(
        &mut flowrt::CpuOps,
        &mut net,
        &flowrt::field::Conditioning::default(),
        20,
        &mut x,
        &mut next,
        &mut traj,
    )
    .unwrap();
    let d = max_abs_diff(&traj.0, &want);
    println!("heat rollout 20 steps: max abs diff {d:.2e}");
    assert!(d <= TOL, "{d}");
}

#[test]
fn rectified_flows_in_few_euler_steps() {
    for (model, prefix) in [
        ("moons_reflow", "fewstep/reflow_euler_"),
        ("moons_rectified1", "moons_rectified1/samples/euler_"),
    ] {
        for (_, file) in EXPORTS {
            let bytes = export_with(&format!("{model}/{file}"), &ExportOptions::default());
            let noise = load(&format!("{model}/noise.npy"));
            for k in [1usize, 2, 4] {
                let got = sample(&bytes, Method::Euler, &Uniform::unit(k).unwrap(), &noise);
                let d = max_abs_diff(&got, &load(&format!("{prefix}{k}.npy")));
                assert!(d <= TOL, "{model} {file} euler {k}: {d}");
            }
        }
    }
}
