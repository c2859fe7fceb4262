//! Time grids against the reference libraries: diffusers' `FlowMatchEulerDiscreteScheduler`
//! sigmas and timesteps, bit for bit (`tests/fixtures/sampler/diffusers_sigmas.json`, written
//! by `make_sampler_fixtures.py` from diffusers itself).

use flowrt::grid::{DiffusersShift, GridSpec, ShiftKind, TimeGrid};
use flowrt::time::{TimeAxis, TimeConvention};
use flowrt_tests::fixtures_dir;

fn f32_bits(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|b| b.as_u64().expect("bits") as u32)
        .collect()
}

/// The flowrt grid spec that reproduces one recorded scheduler configuration.
fn spec_for(case: &serde_json::Value) -> (GridSpec<'static>, usize) {
    let ctor = &case["constructor_kwargs"];
    let call = &case["set_timesteps_kwargs"];
    let dynamic = ctor["use_dynamic_shifting"].as_bool().unwrap_or(false);
    let kind = match ctor["time_shift_type"].as_str().unwrap_or("exponential") {
        "linear" => ShiftKind::Linear,
        _ => ShiftKind::Exponential,
    };
    let shift = if dynamic {
        DiffusersShift::Dynamic {
            mu: call["mu"].as_f64().expect("mu"),
            kind,
        }
    } else {
        DiffusersShift::Static(ctor["shift"].as_f64().unwrap_or(1.0))
    };
    let (flux_sigmas, steps) = match call["sigmas"].as_array() {
        Some(s) => {
            // flowrt's Flux path builds np.linspace(1, 1/N, N) itself; check that is what
            // the fixture passed.
            let n = s.len();
            for (i, v) in s.iter().enumerate() {
                let want = if i + 1 == n {
                    1.0 / n as f64
                } else {
                    i as f64 * ((1.0 / n as f64 - 1.0) / (n - 1) as f64) + 1.0
                };
                let got = v.as_f64().unwrap();
                assert!(
                    (got - want).abs() < 1e-12,
                    "sigmas[{i}] of {}",
                    case["name"]
                );
            }
            (true, n)
        }
        None => (
            false,
            call["num_inference_steps"].as_u64().expect("N") as usize,
        ),
    };
    (GridSpec::Diffusers { shift, flux_sigmas }, steps)
}

#[test]
fn diffusers_flow_match_sigmas_and_timesteps_are_bit_identical() {
    let path = fixtures_dir().join("sampler/diffusers_sigmas.json");
    let text = std::fs::read_to_string(&path).expect("diffusers_sigmas.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20, "only {} cases", cases.len());
    // The diffusers convention: sigma axis, network timestep = 1000 * sigma.
    let conv = TimeConvention {
        axis: TimeAxis::Sigma,
        scale: 1000.0,
        negate_output: false,
        ..Default::default()
    };
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (spec, steps) = spec_for(case);
        let grid = spec.build(steps, conv.axis).unwrap();
        let sigmas: Vec<u32> = (0..=grid.steps())
            .map(|i| grid.point(i).unwrap().to_bits())
            .collect();
        assert_eq!(sigmas, f32_bits(&case["sigmas_f32_bits"]), "{name}: sigmas");
        let timesteps: Vec<u32> = (0..grid.steps())
            .map(|i| conv.network_time(grid.point(i).unwrap()).to_bits())
            .collect();
        assert_eq!(
            timesteps,
            f32_bits(&case["timesteps_f32_bits"]),
            "{name}: timesteps"
        );
        // On the t axis the same levels appear as t = 1 - sigma.
        let g_t = spec.build(steps, TimeAxis::T).unwrap();
        for i in 0..=steps {
            assert_eq!(
                g_t.point(i).unwrap(),
                1.0 - grid.point(i).unwrap(),
                "{name}: t axis"
            );
        }
    }
}

#[test]
fn shifted_grids_follow_their_formulas() {
    // SD3 shift: sigma' = s*sigma / (1 + (s-1)*sigma) on linspace(1, 0, N+1), both axes.
    for steps in [1usize, 4, 7, 28] {
        for shift in [1.0f64, 3.0, 0.5] {
            let g = GridSpec::Shift(shift)
                .build(steps, TimeAxis::Sigma)
                .unwrap();
            for i in 0..=steps {
                let s = 1.0 - i as f64 / steps as f64;
                let want = shift * s / (1.0 + (shift - 1.0) * s);
                let got = f64::from(g.point(i).unwrap());
                assert!((got - want).abs() < 1e-7, "shift {shift} N {steps} i {i}");
            }
            assert_eq!(g.point(0), Some(1.0));
            assert_eq!(g.point(steps), Some(0.0));
        }
        for (kind, mu) in [(ShiftKind::Exponential, 1.15f64), (ShiftKind::Linear, 0.7)] {
            let g = GridSpec::DynamicShift { mu, kind }
                .build(steps, TimeAxis::T)
                .unwrap();
            assert_eq!(g.point(0), Some(0.0));
            assert_eq!(g.point(steps), Some(1.0));
            for i in 1..steps {
                let s = 1.0 - i as f64 / steps as f64;
                let m = match kind {
                    ShiftKind::Exponential => mu.exp(),
                    ShiftKind::Linear => mu,
                };
                let want = 1.0 - m / (m + (1.0 / s - 1.0));
                assert!((f64::from(g.point(i).unwrap()) - want).abs() < 1e-6);
            }
        }
    }
    assert!(GridSpec::Shift(0.0).build(4, TimeAxis::T).is_err());
    assert!(GridSpec::Shift(f64::NAN).build(4, TimeAxis::T).is_err());
    assert!(GridSpec::DynamicShift {
        mu: -1.0,
        kind: ShiftKind::Linear
    }
    .build(4, TimeAxis::T)
    .is_err());
}

#[test]
fn grid_names_parse() {
    use flowrt::grid::GridSpec as G;
    assert_eq!(G::parse_named("uniform").unwrap(), G::Uniform);
    assert_eq!(G::parse_named("shift:3").unwrap(), G::Shift(3.0));
    assert_eq!(G::parse_named("step-size:0.25").unwrap(), G::StepSize(0.25));
    assert_eq!(
        G::parse_named("dynamic-shift:1.15").unwrap(),
        G::DynamicShift {
            mu: 1.15,
            kind: ShiftKind::Exponential
        }
    );
    assert_eq!(
        G::parse_named("flux:0.5:linear").unwrap(),
        G::Diffusers {
            shift: DiffusersShift::Dynamic {
                mu: 0.5,
                kind: ShiftKind::Linear
            },
            flux_sigmas: true
        }
    );
    assert_eq!(
        G::parse_named("diffusers:3").unwrap(),
        G::Diffusers {
            shift: DiffusersShift::Static(3.0),
            flux_sigmas: false
        }
    );
    for bad in [
        "",
        "shift",
        "shift:x",
        "flux:1:cubic",
        "cosine",
        "uniform:2",
    ] {
        assert!(G::parse_named(bad).is_err(), "{bad}");
    }
}
