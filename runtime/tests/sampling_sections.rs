//! The `TIME` and `SOLVER_DEFAULTS` sections: round trips, the convention reaching the
//! network, and typed errors for malformed contents.
#![cfg(feature = "alloc")]

mod common;

use common::{assert_invalid_patches, load, section_range};
use flowrt::format::sampling::GuidanceDefaults;
use flowrt::format::{self, section, AlignedBytes};
use flowrt::grid::{DiffusersShift, GridSpec, ShiftKind, TimeGrid, Uniform};
use flowrt::ir::{Dim, ModelBuilder, ModelDesc, Role, SolverDefaultsDesc};
use flowrt::solver::Method;
use flowrt::time::{TimeAxis, TimeConvention};
use flowrt::Model;

/// v(x, t) = t (broadcast to x's shape): the network's output reveals the time it was fed.
fn echo_t() -> ModelDesc {
    let mut m = ModelBuilder::default();
    let x = m.input(&[Dim::Batch, Dim::Fixed(2)], Role::X);
    let t = m.input(&[Dim::Batch, Dim::Fixed(1)], Role::T);
    let o = common::zero_plus(&mut m, x, t);
    m.finish(o)
}

/// [`echo_t`] with its time on the sigma axis, scaled by `scale`.
fn echo_sigma(scale: f32, negate_output: bool) -> ModelDesc {
    let mut desc = echo_t();
    desc.time = TimeConvention {
        axis: TimeAxis::Sigma,
        scale,
        negate_output,
        ..Default::default()
    };
    desc
}

#[test]
fn default_convention_writes_no_time_section() {
    let f = load(&echo_t());
    let m = Model::from_bytes(f.as_slice()).unwrap();
    assert!(m.time_convention().is_default());
    assert!(section_range(f.as_slice(), section::TIME).is_none());
    assert!(m.solver_defaults().is_none());
}

#[test]
fn time_convention_round_trips_and_reaches_the_network() {
    let desc = echo_sigma(1000.0, true);
    let f = load(&desc);
    let m = Model::from_bytes(f.as_slice()).unwrap();
    assert_eq!(m.time_convention(), desc.time);
    // The TIME section is marked required.
    let count = u32::from_le_bytes(f.as_slice()[20..24].try_into().unwrap()) as usize;
    let flags = (0..count)
        .filter_map(|i| format::section_entry(f.as_slice(), m.version(), count, i))
        .find(|e| e.0 == section::TIME)
        .map(|e| e.1);
    assert_eq!(flags, Some(format::SECTION_FLAG_REQUIRED));
    // One Euler step from sigma = 1 to 0: dx/dsigma = -(1000 * sigma) = -1000, so
    // x = 0 + (0 - 1) * -1000 = 1000.
    let grid = Uniform::new(1, 1.0, 0.0).unwrap();
    let mut x = [0.0f32; 2];
    let need = flowrt::sampler::sample_arena_bytes(&m, Method::Euler, 1).unwrap();
    let mut arena = AlignedBytes::zeroed(need);
    flowrt::sampler::sample(&m, Method::Euler, &grid, &mut x, arena.as_mut_slice()).unwrap();
    assert_eq!(x, [1000.0, 1000.0]);
}

#[test]
fn malformed_time_sections_are_typed_errors() {
    let mut desc = echo_sigma(1.0, false);
    let f = load(&desc);
    let (off, len) = section_range(f.as_slice(), section::TIME).unwrap();
    assert_eq!(len, 16);
    assert_invalid_patches(
        f.as_slice(),
        [
            (off, vec![7u8], "unknown time axis"),
            (off + 1, vec![2u8], "unknown flag bits"),
            (off + 2, vec![1u8], "second-time form"),
            (off + 2, vec![9u8], "unknown second-time form"),
            (off + 4, f32::NAN.to_le_bytes().to_vec(), "scale"),
            (off + 4, (-1.0f32).to_le_bytes().to_vec(), "scale"),
            (off + 12, vec![1u8], "reserved"),
        ],
    );
    // A writer refuses an invalid convention too.
    desc.time.scale = 0.0;
    assert!(flowrt::write::write(&desc).is_err());
}

#[test]
fn solver_defaults_round_trip() {
    let cases: Vec<SolverDefaultsDesc> = vec![
        SolverDefaultsDesc {
            method: Some(Method::Rk4_38),
            steps: Some(8),
            grid: Some(GridSpec::Shift(3.0)),
            ..Default::default()
        },
        SolverDefaultsDesc {
            method: Some(Method::Ab3),
            grid_points: Some(vec![0.0, 0.1, 0.5, 1.0]),
            guidance: GuidanceDefaults {
                scale: Some(2.5),
                null_label: Some(10),
                interval: Some((0.2, 0.8)),
            },
            ..Default::default()
        },
        SolverDefaultsDesc {
            grid: Some(GridSpec::Diffusers {
                shift: DiffusersShift::Dynamic {
                    mu: 1.15,
                    kind: ShiftKind::Linear,
                },
                flux_sigmas: true,
            }),
            ..Default::default()
        },
        SolverDefaultsDesc {
            method: Some(Method::Dopri5),
            grid: Some(GridSpec::DynamicShift {
                mu: 0.5,
                kind: ShiftKind::Exponential,
            }),
            ..Default::default()
        },
    ];
    for d in cases {
        let mut desc = echo_t();
        desc.solver_defaults = Some(d.clone());
        let f = load(&desc);
        let m = Model::from_bytes(f.as_slice()).unwrap();
        let got = m.solver_defaults().unwrap();
        assert_eq!(got.method, d.method);
        assert_eq!(got.steps, d.steps);
        assert_eq!(got.guidance, d.guidance);
        match (&d.grid_points, got.grid) {
            (Some(p), Some(GridSpec::Explicit(q))) => {
                assert_eq!(p.as_slice(), q);
                let g = got.grid.unwrap().build(0, TimeAxis::T).unwrap();
                assert_eq!(g.steps(), 3);
            }
            (None, g) => assert_eq!(g, d.grid),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn malformed_solver_defaults_are_typed_errors() {
    let mut desc = echo_t();
    desc.solver_defaults = Some(SolverDefaultsDesc {
        method: Some(Method::Euler),
        grid_points: Some(vec![0.0, 1.0]),
        ..Default::default()
    });
    let f = load(&desc);
    let (off, len) = section_range(f.as_slice(), section::SOLVER_DEFAULTS).unwrap();
    assert_eq!(len, 48 + 8);
    assert_invalid_patches(
        f.as_slice(),
        [
            (off, 99u16.to_le_bytes().to_vec(), "unknown method"),
            (off + 2, 42u16.to_le_bytes().to_vec(), "unknown grid kind"),
            (off + 2, 1u16.to_le_bytes().to_vec(), "points given"),
            (off + 16, vec![5u8], "time-shift kind"),
            (off + 18, vec![8u8], "guidance flag"),
            (off + 36, 3u32.to_le_bytes().to_vec(), "wrong length"),
            (off + 44, vec![1u8], "reserved"),
            (off + 48, f32::INFINITY.to_le_bytes().to_vec(), "not finite"),
        ],
    );
}
