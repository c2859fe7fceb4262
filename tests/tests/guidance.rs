//! Classifier-free guidance against the Python formula on the trained class-conditional
//! `moons_cfg` model (`make_sampler_fixtures.py`: label dropout to the null label 2):
//! guided velocities at probe points, torchdiffeq samples of the guided field, the guidance
//! interval, both exporters, and the ONNX Runtime backend.

use flowrt::exec::CpuField;
use flowrt::field::Conditioning;
use flowrt::format::AlignedBytes;
use flowrt::grid::Uniform;
use flowrt::guidance::{CfgField, Guidance};
use flowrt::solver::Method;
use flowrt::time::TimeConvention;
use flowrt::{CpuOps, Model, VelocityField};
use flowrt_tests::{export, fixtures_dir, max_abs_diff, npy};

const NULL: i64 = 2;

fn file(name: &str) -> Vec<f32> {
    npy(&fixtures_dir().join("moons_cfg").join(name)).0
}

fn labels(name: &str) -> Vec<i64> {
    flowrt_export::npy::read_labels(&fixtures_dir().join("moons_cfg").join(name))
        .unwrap()
        .0
}

/// Conditioning on the labels `l` only.
fn labelled(l: &[i64]) -> Conditioning<'_> {
    Conditioning {
        label: Some(l),
        ..Default::default()
    }
}

fn doubled(y: &[i64]) -> Vec<i64> {
    y.iter().copied().chain(y.iter().map(|_| NULL)).collect()
}

#[test]
fn guided_velocity_matches_the_python_formula() {
    let px = file("probe_x.npy");
    let pt = file("probe_t.npy");
    let py = labels("probe_cfg_y.npy");
    for onnx in ["model.ts.onnx", "model.dynamo.onnx"] {
        let bytes = export(&fixtures_dir().join("moons_cfg").join(onnx));
        let m = Model::from_bytes(bytes.as_slice()).unwrap();
        assert_eq!(m.label_classes(), Some(3));
        for w in ["0", "1", "2.5", "4"] {
            let want = file(&format!("cfg_v_w{w}.npy"));
            let g = Guidance {
                scale: w.parse().unwrap(),
                interval: None,
            };
            // One time per probe row: evaluate row by row (2 rows: conditional + null).
            let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(2).unwrap());
            let mut net = CpuField::new(&m, 2, arena.as_mut_slice()).unwrap();
            let mut got = vec![0f32; want.len()];
            for r in 0..pt.len() {
                let lab = doubled(&py[r..r + 1]);
                let (mut x2, mut v2) = ([0f32; 4], [0f32; 4]);
                let mut cfg = CfgField::new(
                    &flowrt::CpuOps,
                    &mut net,
                    TimeConvention::default(),
                    g,
                    1,
                    2,
                    0,
                    labelled(&lab),
                    &mut x2,
                    &mut v2,
                )
                .unwrap();
                cfg.eval(
                    &mut CpuOps,
                    pt[r],
                    &px[2 * r..2 * r + 2],
                    &mut got[2 * r..2 * r + 2],
                )
                .unwrap();
            }
            let d = max_abs_diff(&got, &want);
            // 16 ulps of the largest guided velocity: the formula (1 + w) v_c - w v_u
            // amplifies each evaluation's rounding by up to 1 + 2w. ONNX Runtime on the same
            // rows and formula: 1.9e-6, 1.4e-6, 4.8e-6 and 9.5e-6 for w = 0, 1, 2.5, 4
            // (|v| up to 15.3, whose ulp is 9.5e-7), so this is ORT's own class of error.
            let top = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let tol = 16.0 * (f32::from_bits(top.to_bits() + 1) - top);
            println!("moons_cfg {onnx} guided velocity w={w}: max abs diff {d:.2e} (tolerance {tol:.2e})");
            assert!(d <= tol, "{onnx} w={w}: {d} > {tol}");
        }
    }
}

fn guided_sample(m: &Model<'_>, method: Method, steps: usize, g: Guidance) -> Vec<f32> {
    let mut x = file("noise.npy");
    let lab = doubled(&labels("labels.npy"));
    let batch = x.len() / 2;
    let need = flowrt::sampler::guided_arena_bytes(m, method, batch).unwrap();
    let mut arena = AlignedBytes::zeroed(need);
    let cond = labelled(&lab);
    flowrt::sampler::sample_guided(
        m,
        method,
        &Uniform::unit(steps).unwrap(),
        &mut x,
        &cond,
        &g,
        arena.as_mut_slice(),
    )
    .unwrap();
    x
}

#[test]
fn guided_samples_match_torchdiffeq() {
    for onnx in ["model.ts.onnx", "model.dynamo.onnx"] {
        let bytes = export(&fixtures_dir().join("moons_cfg").join(onnx));
        let m = Model::from_bytes(bytes.as_slice()).unwrap();
        let g = |scale: f32| Guidance {
            scale,
            interval: None,
        };
        let mut worst = 0f32;
        for method in [Method::Euler, Method::Midpoint, Method::Rk4_38] {
            for steps in [1usize, 4, 8] {
                let got = guided_sample(&m, method, steps, g(2.5));
                let want = file(&format!("samples/cfg2.5_{}_{steps}.npy", method.name()));
                let d = max_abs_diff(&got, &want);
                assert!(d <= 5e-5, "{onnx} {method} {steps}: {d}");
                worst = worst.max(d);
            }
        }
        for (w, name) in [(0.0, "cfg0"), (1.0, "cfg1")] {
            let got = guided_sample(&m, Method::Rk4_38, 8, g(w));
            let d = max_abs_diff(&got, &file(&format!("samples/{name}_rk4-38_8.npy")));
            assert!(d <= 5e-5, "{onnx} {name}: {d}");
            worst = worst.max(d);
        }
        let got = guided_sample(
            &m,
            Method::Rk4_38,
            8,
            Guidance {
                scale: 2.5,
                interval: Some((0.2, 0.8)),
            },
        );
        let d = max_abs_diff(&got, &file("samples/cfg2.5_interval0.2-0.8_rk4-38_8.npy"));
        assert!(d <= 5e-5, "{onnx} interval: {d}");
        worst = worst.max(d);
        // Plain conditional / unconditional sampling (no guidance) through sample_cond.
        for (lab, name) in [(labels("labels.npy"), "cond"), (vec![NULL; 256], "uncond")] {
            let mut x = file("noise.npy");
            let need = flowrt::sampler::sample_arena_bytes(&m, Method::Rk4_38, 256).unwrap();
            let mut arena = AlignedBytes::zeroed(need);
            let cond = labelled(&lab);
            flowrt::sampler::sample_cond(
                &m,
                Method::Rk4_38,
                &Uniform::unit(8).unwrap(),
                &mut x,
                &cond,
                arena.as_mut_slice(),
            )
            .unwrap();
            let d = max_abs_diff(&x, &file(&format!("samples/{name}_rk4-38_8.npy")));
            assert!(d <= 5e-5, "{onnx} {name}: {d}");
            worst = worst.max(d);
        }
        println!(
            "moons_cfg {onnx}: 14 guided / conditional sample sets, worst max abs diff {worst:.2e}"
        );
    }
}

#[test]
fn guidance_is_the_same_through_onnx_runtime() {
    let bytes = AlignedBytes::copy_from(
        &flowrt_export::export_onnx(
            &fixtures_dir().join("moons_cfg/model.ts.onnx"),
            &flowrt_export::ExportOptions {
                embed_onnx: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let m = Model::from_bytes(bytes.as_slice()).unwrap();
    let mut session = flowrt_host::open_ort(&m, None, 1).unwrap();
    let mut field = session.field(512).unwrap();
    let lab = doubled(&labels("labels.npy"));
    let (mut x2, mut v2) = (vec![0f32; 1024], vec![0f32; 1024]);
    let mut cfg = CfgField::new(
        &flowrt::CpuOps,
        &mut field,
        m.time_convention(),
        Guidance {
            scale: 2.5,
            interval: None,
        },
        256,
        2,
        0,
        labelled(&lab),
        &mut x2,
        &mut v2,
    )
    .unwrap();
    let mut x = file("noise.npy");
    let mut flat = vec![0f32; x.len() * Method::Rk4_38.work_buffers()];
    let mut ws = flowrt::solver::Workspace::from_slice(&mut flat, x.len(), 5).unwrap();
    flowrt::solver::integrate(
        &mut CpuOps,
        &mut cfg,
        Method::Rk4_38,
        &Uniform::unit(8).unwrap(),
        &mut x,
        &mut ws,
    )
    .unwrap();
    assert_eq!(cfg.evaluations(), 32);
    let d = max_abs_diff(&x, &file("samples/cfg2.5_rk4-38_8.npy"));
    println!("moons_cfg guided rk4-38 x 8 through ONNX Runtime: max abs diff {d:.2e}");
    assert!(d <= 5e-5, "{d}");
}

#[test]
fn guidance_rejects_bad_configurations() {
    let bytes = export(&fixtures_dir().join("moons_cfg/model.ts.onnx"));
    let m = Model::from_bytes(bytes.as_slice()).unwrap();
    let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(4).unwrap());
    let mut net = CpuField::new(&m, 4, arena.as_mut_slice()).unwrap();
    let (mut x2, mut v2) = ([0f32; 8], [0f32; 8]);
    let lab = [0i64, 1, NULL];
    let ok_g = Guidance {
        scale: 2.0,
        interval: None,
    };
    // Labels for 3 rows where 2 x 2 are needed.
    assert!(CfgField::new(
        &flowrt::CpuOps,
        &mut net,
        TimeConvention::default(),
        ok_g,
        2,
        2,
        0,
        labelled(&lab),
        &mut x2,
        &mut v2
    )
    .is_err());
    let bad = Guidance {
        scale: f32::NAN,
        interval: None,
    };
    let lab4 = [0i64, 1, NULL, NULL];
    assert!(CfgField::new(
        &flowrt::CpuOps,
        &mut net,
        TimeConvention::default(),
        bad,
        2,
        2,
        0,
        labelled(&lab4),
        &mut x2,
        &mut v2
    )
    .is_err());
    let inverted = Guidance {
        scale: 1.0,
        interval: Some((0.8, 0.2)),
    };
    assert!(CfgField::new(
        &flowrt::CpuOps,
        &mut net,
        TimeConvention::default(),
        inverted,
        2,
        2,
        0,
        labelled(&lab4),
        &mut x2,
        &mut v2
    )
    .is_err());
    // A null label out of range fails at evaluation with a typed error, not a panic.
    let lab_oob = [0i64, 1, 7, 7];
    let mut cfg = CfgField::new(
        &flowrt::CpuOps,
        &mut net,
        TimeConvention::default(),
        ok_g,
        2,
        2,
        0,
        labelled(&lab_oob),
        &mut x2,
        &mut v2,
    )
    .unwrap();
    let mut v = [0f32; 4];
    assert!(cfg.eval(&mut CpuOps, 0.5, &[0.0; 4], &mut v).is_err());
}
