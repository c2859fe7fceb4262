//! Conformance of the CPU path against independent references computed in Python by
//! `tests/fixtures/make_fixtures.py`: onnxruntime velocities and torchdiffeq samples.

use flowrt::format::{AlignedBytes, InputRole};
use flowrt::grid::Uniform;
use flowrt::solver::Method;
use flowrt::Model;
use flowrt_tests::{export, fixtures, max_abs_diff, npy, reference_grid, EXPORTS};

/// Velocity tolerance against onnxruntime (issue: ≤ 1e-5 max abs).
const VELOCITY_TOL: f32 = 1e-5;
/// Sample tolerance against torchdiffeq / the reference RK loop (≤ 5e-5 max abs).
const SAMPLE_TOL: f32 = 5e-5;

/// Evaluates the model's velocity at probe points the way the reference did.
fn velocities(model: &Model<'_>, px: &[f32], pt: &[f32], dim: usize) -> Vec<f32> {
    let rows = pt.len();
    let mut out = vec![0f32; rows * dim];
    let scalar_t = model
        .inputs()
        .any(|i| i.role == InputRole::T && !i.shape.has_batch());
    if scalar_t {
        // One time value per call: evaluate row by row, as the reference did.
        let mut arena = AlignedBytes::zeroed(model.required_arena_bytes(1).unwrap());
        for r in 0..rows {
            let x = &px[r * dim..(r + 1) * dim];
            let mut v = vec![0f32; dim];
            let mut field = flowrt::exec::CpuField::new(model, 1, arena.as_mut_slice()).unwrap();
            field.eval_into(pt[r], x, &mut v).unwrap();
            out[r * dim..(r + 1) * dim].copy_from_slice(&v);
        }
        return out;
    }
    // Per-row times: build the inputs by role and run the graph directly.
    let mut arena = AlignedBytes::zeroed(model.graph_arena_bytes(rows).unwrap());
    let xt: Vec<f32> = (0..rows)
        .flat_map(|r| px[r * dim..(r + 1) * dim].iter().copied().chain([pt[r]]))
        .collect();
    let inputs: Vec<&[f32]> = model
        .inputs()
        .map(|i| match i.role {
            InputRole::X => px,
            InputRole::T => pt,
            InputRole::Xt => &xt[..],
            other => panic!("the trained fixtures have no {} input", other.name()),
        })
        .collect();
    flowrt::exec::run(model, rows, &inputs, &mut out, arena.as_mut_slice()).unwrap();
    out
}

#[test]
fn velocities_match_onnxruntime() {
    let mut checked = 0;
    for fx in fixtures() {
        let (px, _) = npy(&fx.dir.join("probe_x.npy"));
        let (pt, _) = npy(&fx.dir.join("probe_t.npy"));
        for (tag, file) in EXPORTS {
            let bytes = export(&fx.dir.join(file));
            let model = Model::from_bytes(bytes.as_slice()).unwrap();
            let dim = model.state_dim();
            let (want, _) = npy(&fx.dir.join(format!("v_ort_{tag}.npy")));
            let got = velocities(&model, &px, &pt, dim);
            let err = max_abs_diff(&got, &want);
            println!(
                "velocity {:<22} {tag:<7} max|flowrt - ort| = {err:.3e}",
                fx.name
            );
            assert!(
                err <= VELOCITY_TOL,
                "{} {tag}: velocity error {err:e} > {VELOCITY_TOL:e}",
                fx.name
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * fixtures().len());
}

#[test]
fn samples_match_torchdiffeq() {
    let (methods, steps) = reference_grid();
    let mut checked = 0;
    let mut report = Vec::new();
    for fx in fixtures() {
        let (noise, shape) = npy(&fx.dir.join("noise.npy"));
        let batch = shape[0];
        for (tag, file) in EXPORTS {
            let bytes = export(&fx.dir.join(file));
            let model = Model::from_bytes(bytes.as_slice()).unwrap();
            for m in &methods {
                let method: Method = m.parse().unwrap();
                let mut worst = 0f32;
                for &n in &steps {
                    let (want, _) = npy(&fx.dir.join("samples").join(format!("{m}_{n}.npy")));
                    let mut x = noise.clone();
                    let need = flowrt::sampler::sample_arena_bytes(&model, method, batch).unwrap();
                    let mut arena = AlignedBytes::zeroed(need);
                    let grid = Uniform::new(n, 0.0, 1.0).unwrap();
                    flowrt::sampler::sample(&model, method, &grid, &mut x, arena.as_mut_slice())
                        .unwrap();
                    let err = max_abs_diff(&x, &want);
                    assert!(
                        err <= SAMPLE_TOL,
                        "{} {tag} {m} {n} steps: sample error {err:e} > {SAMPLE_TOL:e}",
                        fx.name
                    );
                    worst = worst.max(err);
                    checked += 1;
                }
                report.push(format!(
                    "samples  {:<22} {tag:<7} {m:<9} max over steps {steps:?}: {worst:.3e}",
                    fx.name
                ));
            }
        }
    }
    for line in report {
        println!("{line}");
    }
    assert_eq!(checked, fixtures().len() * 2 * methods.len() * steps.len());
}

#[test]
fn batch_size_does_not_change_a_row() {
    // A row's bytes must not depend on how many rows are sampled with it.
    for fx in fixtures() {
        let bytes = export(&fx.dir.join(EXPORTS[0].1));
        let model = Model::from_bytes(bytes.as_slice()).unwrap();
        let dim = model.state_dim();
        let (noise, shape) = npy(&fx.dir.join("noise.npy"));
        let run = |x: &mut [f32]| {
            let batch = x.len() / dim;
            let need = flowrt::sampler::sample_arena_bytes(&model, Method::Rk4_38, batch).unwrap();
            let mut arena = AlignedBytes::zeroed(need);
            let grid = Uniform::new(4, 0.0, 1.0).unwrap();
            flowrt::sampler::sample(&model, Method::Rk4_38, &grid, x, arena.as_mut_slice())
                .unwrap();
        };
        let mut all = noise.clone();
        run(&mut all);
        for r in [0, 1, shape[0] / 2, shape[0] - 1] {
            let mut one = noise[r * dim..(r + 1) * dim].to_vec();
            run(&mut one);
            let a: Vec<u32> = one.iter().map(|v| v.to_bits()).collect();
            let b: Vec<u32> = all[r * dim..(r + 1) * dim]
                .iter()
                .map(|v| v.to_bits())
                .collect();
            assert_eq!(
                a, b,
                "{}: row {r} differs between batch 1 and batch {}",
                fx.name, shape[0]
            );
        }
    }
}
