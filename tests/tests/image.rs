//! Image models (issue 4): a torchcfm `UNetModel` and a small DiT, both class-conditional,
//! trained on scikit-learn's 8×8 digits (`tests/fixtures/make_image_fixtures.py`), exported
//! with both torch exporters. flowrt's velocities match onnxruntime's at probe points
//! within 1e-4, and its samples match torchdiffeq's (same noise and labels) within 2e-4 for
//! euler / midpoint / rk4-38 at 1, 2, 4, 8 and 32 steps, plus a classifier-free guided run.

use flowrt::exec::CpuField;
use flowrt::field::Conditioning;
use flowrt::format::AlignedBytes;
use flowrt::grid::Uniform;
use flowrt::guidance::Guidance;
use flowrt::solver::Method;
use flowrt::Model;
use flowrt_tests::{export, fixtures_dir, max_abs_diff, npy};

/// Issue 4: samples within 2e-4 of torchdiffeq.
const SAMPLE_TOL: f32 = 2e-4;
/// Velocities within 1e-4 of onnxruntime.
const VELOCITY_TOL: f32 = 1e-4;
const NULL_LABEL: i64 = 10;

fn file(model: &str, name: &str) -> Vec<f32> {
    npy(&fixtures_dir().join(model).join(name)).0
}

fn labels(model: &str, name: &str) -> Vec<i64> {
    flowrt_export::npy::read_labels(&fixtures_dir().join(model).join(name))
        .unwrap()
        .0
}

fn check_velocities(model: &str, m: &Model<'_>, export_name: &str) {
    let px = file(model, "probe_x.npy");
    let pt = file(model, "probe_t.npy");
    let py = labels(model, "probe_y.npy");
    let want = file(model, &format!("v_ort_{export_name}.npy"));
    let d = m.state_dim();
    let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(1).unwrap());
    let mut net = CpuField::new(m, 1, arena.as_mut_slice()).unwrap();
    let mut got = vec![0f32; want.len()];
    // One time per probe row: evaluate row by row.
    for r in 0..pt.len() {
        let cond = Conditioning {
            label: Some(&py[r..r + 1]),
            ..Default::default()
        };
        net.eval_cond(
            pt[r],
            &px[r * d..(r + 1) * d],
            &cond,
            &mut got[r * d..(r + 1) * d],
        )
        .unwrap();
    }
    let diff = max_abs_diff(&got, &want);
    let torch = max_abs_diff(&got, &file(model, "v_torch.npy"));
    println!("{model} {export_name}: velocity vs onnxruntime {diff:.2e}, vs torch {torch:.2e}");
    assert!(
        diff <= VELOCITY_TOL,
        "{model} {export_name}: velocity {diff}"
    );
    assert!(
        torch <= VELOCITY_TOL,
        "{model} {export_name}: velocity vs torch {torch}"
    );
}

fn check_samples(model: &str, m: &Model<'_>, export_name: &str) {
    let noise = file(model, "noise.npy");
    let lab = labels(model, "labels.npy");
    let batch = lab.len();
    let mut worst = 0f32;
    for method in [Method::Euler, Method::Midpoint, Method::Rk4_38] {
        for steps in [1usize, 2, 4, 8, 32] {
            let mut x = noise.clone();
            let need = flowrt::sampler::sample_arena_bytes(m, method, batch).unwrap();
            let mut arena = AlignedBytes::zeroed(need);
            let cond = Conditioning {
                label: Some(&lab),
                ..Default::default()
            };
            let grid = Uniform::unit(steps).unwrap();
            flowrt::sampler::sample_cond(m, method, &grid, &mut x, &cond, arena.as_mut_slice())
                .unwrap();
            let want = file(model, &format!("samples/{}_{steps}.npy", method.name()));
            let d = max_abs_diff(&x, &want);
            assert!(
                d <= SAMPLE_TOL,
                "{model} {export_name} {method} x {steps}: {d}"
            );
            worst = worst.max(d);
        }
    }
    // Classifier-free guidance, w = 2 (v_u + 2 (v_c - v_u)), rk4-38 x 8.
    let mut x = noise.clone();
    let doubled: Vec<i64> = lab
        .iter()
        .copied()
        .chain(lab.iter().map(|_| NULL_LABEL))
        .collect();
    let need = flowrt::sampler::guided_arena_bytes(m, Method::Rk4_38, batch).unwrap();
    let mut arena = AlignedBytes::zeroed(need);
    let cond = Conditioning {
        label: Some(&doubled),
        ..Default::default()
    };
    let g = Guidance {
        scale: 2.0,
        interval: None,
    };
    let grid = Uniform::unit(8).unwrap();
    flowrt::sampler::sample_guided(
        m,
        Method::Rk4_38,
        &grid,
        &mut x,
        &cond,
        &g,
        arena.as_mut_slice(),
    )
    .unwrap();
    let d = max_abs_diff(&x, &file(model, "samples/cfg2_rk4-38_8.npy"));
    assert!(d <= SAMPLE_TOL, "{model} {export_name} guided: {d}");
    worst = worst.max(d);
    println!(
        "{model} {export_name}: 16 sample sets vs torchdiffeq, worst max abs diff {worst:.2e}"
    );
}

fn run(model: &str, export_name: &str) {
    let file_name = if export_name == "ts" {
        "model.ts.onnx"
    } else {
        "model.dynamo.onnx"
    };
    let bytes = export(&fixtures_dir().join(model).join(file_name));
    let m = Model::from_bytes(bytes.as_slice()).unwrap();
    assert_eq!(m.state_dim(), 64, "{model}: 1 x 8 x 8 images");
    check_velocities(model, &m, export_name);
    check_samples(model, &m, export_name);
}

#[test]
fn digits_unet_torchscript_export_matches_torchdiffeq() {
    run("digits_unet", "ts");
}

#[test]
fn digits_unet_dynamo_export_matches_torchdiffeq() {
    run("digits_unet", "dynamo");
}

#[test]
fn digits_dit_torchscript_export_matches_torchdiffeq() {
    run("digits_dit", "ts");
}

#[test]
fn digits_dit_dynamo_export_matches_torchdiffeq() {
    run("digits_dit", "dynamo");
}
