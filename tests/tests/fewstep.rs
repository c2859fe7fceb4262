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
    let opts = ExportOptions {
        pipeline: vec![(
            StageKind::Block { a: 0.5, b: 1.0 },
            fx("moons_block1/model.ts.onnx"),
        )],
        ..Default::default()
    };
    let bytes = export_with("moons_block0/model.dynamo.onnx", &opts);
    let m = Model::from_bytes(bytes.as_slice()).unwrap();
    let p = m.pipeline().expect("pipeline");
    assert_eq!(p.stages().count(), 1);
    let noise = load("moons_block0/noise.npy");
    for method in [Method::Euler, Method::Rk4_38] {
        for n in [2usize, 4, 8] {
            let mut x = noise.clone();
            let need = flowrt::pipeline::pipeline_arena_bytes(&p, method, 256).unwrap();
            let mut arena = AlignedBytes::zeroed(need);
            flowrt::pipeline::sample_pipeline(
                &p,
                method,
                &Uniform::unit(n).unwrap(),
                &mut x,
                None,
                arena.as_mut_slice(),
            )
            .unwrap();
            let d = max_abs_diff(
                &x,
                &load(&format!("fewstep/blockwise_{}_{n}.npy", method.name())),
            );
            println!("blockwise {method} {n}: max abs diff {d:.2e}");
            assert!(d <= TOL, "blockwise {method} {n}: {d}");
        }
    }
    // Multistep methods cannot switch networks mid-history.
    let mut x = noise.clone();
    let mut arena = AlignedBytes::zeroed(1 << 20);
    assert!(flowrt::pipeline::sample_pipeline(
        &p,
        Method::Ab2,
        &Uniform::unit(4).unwrap(),
        &mut x,
        None,
        arena.as_mut_slice()
    )
    .is_err());
}

#[test]
fn refiner_pipeline_matches_reference() {
    let opts = ExportOptions {
        pipeline: vec![(
            StageKind::Refiner { from: 0.5, to: 1.0 },
            fx("moons_refiner/model.dynamo.onnx"),
        )],
        ..Default::default()
    };
    let bytes = export_with("moons_icfm/model.ts.onnx", &opts);
    let m = Model::from_bytes(bytes.as_slice()).unwrap();
    let p = m.pipeline().expect("pipeline");
    // The light net's arena is smaller: the pipeline needs the main net's.
    assert_eq!(
        p.required_arena_bytes(256).unwrap(),
        m.required_arena_bytes(256).unwrap()
    );
    let noise = load("moons_icfm/noise.npy");
    for method in [Method::Euler, Method::Heun] {
        for n in [4usize, 8] {
            let mut x = noise.clone();
            let need = flowrt::pipeline::pipeline_arena_bytes(&p, method, 256).unwrap();
            let mut arena = AlignedBytes::zeroed(need);
            flowrt::pipeline::sample_pipeline(
                &p,
                method,
                &Uniform::unit(n).unwrap(),
                &mut x,
                None,
                arena.as_mut_slice(),
            )
            .unwrap();
            let d = max_abs_diff(
                &x,
                &load(&format!("fewstep/refiner_{}_{n}.npy", method.name())),
            );
            println!("refiner {method} {n}: max abs diff {d:.2e}");
            assert!(d <= TOL, "refiner {method} {n}: {d}");
        }
    }
}
