//! GPU-only conformance (issue 7): the image models sampled on the device equal the CPU
//! backend within 1e-4 (the whole ODE loop on the device), and single velocity evaluations of
//! every architecture fixture equal onnxruntime's. What every backend shares (fixtures x
//! solvers, guidance, few-step, SDE, errors) is the one suite of `backends.rs`.
//!
//! `wgpu_*` runs on whatever wgpu adapter exists (lavapipe in CI: the test command installs
//! it, and a missing adapter fails); `cuda_*` on CUDA device 0, skipped with the reason
//! printed when there is none.

use flowrt::exec::CpuField;
use flowrt::field::Conditioned;
use flowrt::field::Conditioning;
use flowrt::field::ConventionField;
use flowrt::format::AlignedBytes;
use flowrt::grid::{TimeGrid, Uniform};
use flowrt::guidance::Guidance;
use flowrt::run::Request;
use flowrt::solver::{adaptive, Method, Workspace};
use flowrt::{CpuOps, Model};
use flowrt_cubecl::cubecl::Runtime;
use flowrt_cubecl::sample::sample;
use flowrt_cubecl::{Gpu, GpuField, GpuOps};
use flowrt_tests::{export, fixtures_dir, max_abs_diff, npy};

/// Issue 7: GPU samples within 1e-4 of the CPU backend's.
const TOL: f32 = 1e-4;

fn file(model: &str, name: &str) -> Vec<f32> {
    npy(&fixtures_dir().join(model).join(name)).0
}

fn labels(model: &str, name: &str) -> Vec<i64> {
    flowrt_export::npy::read_labels(&fixtures_dir().join(model).join(name))
        .unwrap()
        .0
}

fn tolerances() -> adaptive::Tolerances {
    adaptive::Tolerances {
        rtol: 1e-5,
        atol: 1e-6,
        max_steps: 10_000,
    }
}

/// One sampling configuration: a model, a solver on a grid, noise, and its conditioning (or
/// guidance with the doubled conditioning).
#[derive(Clone, Copy)]
struct Case<'a> {
    m: &'a Model<'a>,
    method: Method,
    grid: &'a dyn TimeGrid,
    noise: &'a [f32],
    cond: Conditioning<'a>,
    guided: Option<(Guidance, Conditioning<'a>)>,
}

/// The CPU backend's samples (the reference), through the same solver loop.
fn cpu_sample(c: Case<'_>) -> Vec<f32> {
    let Case {
        m,
        method,
        grid,
        noise,
        cond,
        guided,
    } = c;
    let mut x = noise.to_vec();
    let batch = x.len() / m.state_dim();
    if let Some((g, doubled)) = guided {
        let need = flowrt::sampler::guided_arena_bytes(m, method, batch).unwrap();
        let mut arena = AlignedBytes::zeroed(need);
        flowrt::sampler::sample_guided(m, method, grid, &mut x, &doubled, &g, arena.as_mut_slice())
            .unwrap();
        return x;
    }
    if method != Method::Dopri5 {
        let need = flowrt::sampler::sample_arena_bytes(m, method, batch).unwrap();
        let mut arena = AlignedBytes::zeroed(need);
        flowrt::sampler::sample_cond(m, method, grid, &mut x, &cond, arena.as_mut_slice()).unwrap();
        return x;
    }
    let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(batch).unwrap());
    let mut net = CpuField::new(m, batch, arena.as_mut_slice()).unwrap();
    let mut f = Conditioned {
        field: &mut net,
        cond,
    };
    let mut field = ConventionField::new(&mut f, m.time_convention());
    let mut flat = vec![0f32; x.len() * method.work_buffers()];
    let mut work = Workspace::from_slice(&mut flat, x.len(), method.work_buffers()).unwrap();
    adaptive::dopri5(
        &mut CpuOps,
        &mut field,
        &tolerances(),
        grid,
        &mut x,
        &mut work,
        &mut flowrt::solver::NoObserver,
    )
    .unwrap();
    x
}

/// GPU samples, with the report's launch count per step printed once per model.
fn gpu_sample<R: Runtime>(
    ops: &mut GpuOps<R>,
    c: Case<'_>,
) -> (Vec<f32>, flowrt_cubecl::sample::SampleReport) {
    let mut x = c.noise.to_vec();
    let req = Request {
        method: c.method,
        grid: c.grid,
        tol: tolerances(),
        cond: c.cond,
        guidance: c.guided,
    };
    let report = sample(ops, c.m, &mut x, &req).unwrap_or_else(|e| panic!("{:?}: {e}", c.method));
    (x, report)
}

/// Compares GPU and CPU samples for one configuration; returns the difference.
fn compare<R: Runtime>(ops: &mut GpuOps<R>, what: &str, c: Case<'_>) -> f32 {
    let want = cpu_sample(c);
    let (got, report) = gpu_sample(ops, c);
    let d = max_abs_diff(&got, &want);
    let (method, grid) = (c.method, c.grid);
    assert!(
        d <= TOL,
        "{what} {} x {} steps: GPU vs CPU max abs diff {d}",
        method.name(),
        grid.steps()
    );
    assert_eq!(
        report.steps,
        if method == Method::Dopri5 {
            report.steps
        } else {
            grid.steps()
        }
    );
    d
}

/// Labels `l`, then as many null labels: the doubled batch of guidance.
fn doubled(l: &[i64], null: i64) -> Vec<i64> {
    let mut v = l.to_vec();
    v.extend(std::iter::repeat_n(null, l.len()));
    v
}

fn image_models<R: Runtime>(ops: &mut GpuOps<R>) {
    for name in ["digits_unet", "digits_dit"] {
        let bytes = export(&fixtures_dir().join(name).join("model.ts.onnx"));
        let m = Model::from_bytes(bytes.as_slice()).unwrap();
        let noise = file(name, "noise.npy");
        let lab = labels(name, "labels.npy");
        let dl = doubled(&lab, 10);
        let cond = Conditioning {
            label: Some(&lab),
            ..Default::default()
        };
        let grid = Uniform::unit(2).unwrap();
        let case = Case {
            m: &m,
            method: Method::Euler,
            grid: &grid,
            noise: &noise,
            cond,
            guided: None,
        };
        let mut worst = 0f32;
        for (method, n) in [
            (Method::Euler, 1usize),
            (Method::Midpoint, 2),
            (Method::Rk4_38, 2),
        ] {
            let grid = Uniform::unit(n).unwrap();
            let c = Case {
                method,
                grid: &grid,
                ..case
            };
            worst = worst.max(compare(ops, name, c));
        }
        let g = Guidance {
            scale: 2.0,
            interval: None,
        };
        let dcond = Conditioning {
            label: Some(&dl),
            ..Default::default()
        };
        let guided = Case {
            cond: Conditioning::default(),
            guided: Some((g, dcond)),
            ..case
        };
        worst = worst.max(compare(ops, name, guided));
        let midpoint = Case {
            method: Method::Midpoint,
            ..case
        };
        let (got, r) = gpu_sample(ops, midpoint);
        let reference = max_abs_diff(&got, &file(name, "samples/midpoint_2.npy"));
        println!(
            "{name}: euler x1, midpoint x2, rk4-38 x2, guided euler x2: worst GPU vs CPU \
             {worst:.2e}; midpoint x2 vs torchdiffeq {reference:.2e}; {} graph launches per \
             evaluation, {:.1} launches per step",
            r.graph_launches,
            r.launches_per_step()
        );
        assert!(reference <= 2e-4, "{name} vs torchdiffeq {reference}");
    }
}

/// One GPU velocity evaluation of every architecture fixture against onnxruntime's.
fn architectures<R: Runtime>(ops: &mut GpuOps<R>) {
    let dir = fixtures_dir().join("arch");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let t = manifest["t"].as_f64().unwrap() as f32;
    for entry in manifest["models"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        let x = npy(&dir.join(format!("{name}.x.npy"))).0;
        let y = entry["labels"].as_bool().unwrap_or(true).then(|| {
            flowrt_export::npy::read_labels(&dir.join(format!("{name}.y.npy")))
                .unwrap()
                .0
        });
        let bytes = export(&dir.join(format!("{name}.ts.onnx")));
        let m = Model::from_bytes(bytes.as_slice()).unwrap();
        let rows = x.len() / m.state_dim();
        let mut field = GpuField::new(ops, &m, rows).unwrap();
        let cond = Conditioning {
            label: y.as_deref(),
            ..Default::default()
        };
        let xs = ops.upload(&x);
        let mut v = ops.buffer(x.len());
        flowrt::field::ConditionalField::eval_cond(&mut field, ops, t, &xs, &cond, &mut v).unwrap();
        let got = ops.read(&v).unwrap();
        let want = npy(&dir.join(format!("{name}.v_ort_ts.npy"))).0;
        let d = max_abs_diff(&got, &want);
        println!(
            "{name}: {} nodes in {} launches, GPU velocity vs onnxruntime {d:.2e}",
            m.node_count(),
            field.launches_per_eval(rows).unwrap()
        );
        assert!(d <= TOL, "{name}: {d}");
    }
}

fn suite<R: Runtime>(mut ops: GpuOps<R>) {
    println!("device: {:?}", ops.gpu.info());
    image_models(&mut ops);
    architectures(&mut ops);
}

#[test]
fn wgpu_samples_equal_the_cpu_backend() {
    let gpu = Gpu::wgpu().unwrap_or_else(|e| {
        panic!("{e} (scripts/test.sh installs lavapipe: mesa-vulkan-drivers libvulkan1)")
    });
    suite(GpuOps::new(gpu));
}

#[test]
fn cuda_samples_equal_the_cpu_backend() {
    match Gpu::cuda() {
        Ok(gpu) => suite(GpuOps::new(gpu)),
        Err(e) => println!("skipped: {e}"),
    }
}
