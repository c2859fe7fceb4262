use super::*;
use std::vec::Vec;

fn points<G: TimeGrid>(g: &G) -> Vec<f32> {
    (0..=g.steps()).map(|i| g.point(i).unwrap()).collect()
}

/// Reference: torch's linspace formula written independently (f64 bookkeeping of the
/// index, f32 arithmetic).
fn torch_linspace(start: f32, end: f32, n: usize) -> Vec<f32> {
    let step = (end - start) / ((n - 1) as f32);
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * (i as f32)
            } else {
                end - step * ((n - i - 1) as f32)
            }
        })
        .collect()
}

#[test]
fn uniform_matches_torch_linspace_formula() {
    // Every 7th step count under Miri (scripts/miri.sh, ~10^5 times slower).
    for steps in (1..200).step_by(if cfg!(miri) { 7 } else { 1 }) {
        let g = Uniform::unit(steps).unwrap();
        assert_eq!(
            points(&g),
            torch_linspace(0.0, 1.0, steps + 1),
            "steps={steps}"
        );
        let g = Uniform::new(steps, 1.0, 0.0).unwrap();
        assert_eq!(
            points(&g),
            torch_linspace(1.0, 0.0, steps + 1),
            "steps={steps}"
        );
    }
}

#[test]
fn uniform_known_values() {
    // torch.linspace(0, 1, 11) in float32: 0.1 * 3 rounds to 0.3 (f32 0x3e99999a), and the
    // second half is computed from the end: 1 - 0.1*4 = 0.6 (0x3f19999a).
    let g = Uniform::unit(10).unwrap();
    let p = points(&g);
    assert_eq!(p[0], 0.0);
    assert_eq!(p[10], 1.0);
    assert_eq!(p[3].to_bits(), (0.1f32 * 3.0).to_bits());
    assert_eq!(p[6].to_bits(), (1.0f32 - 0.1f32 * 4.0).to_bits());
    // Endpoints are always exact.
    for steps in [1, 3, 7, 49, 1000] {
        let g = Uniform::new(steps, 0.25, -3.5).unwrap();
        assert_eq!(g.point(0), Some(0.25));
        assert_eq!(g.point(steps), Some(-3.5));
        assert_eq!(g.point(steps + 1), None);
    }
}

#[test]
fn uniform_rejects_bad_config() {
    assert!(matches!(
        Uniform::unit(0),
        Err(Error::BadSolverConfig { .. })
    ));
    assert!(matches!(
        Uniform::new(4, 1.0, 1.0),
        Err(Error::BadSolverConfig { .. })
    ));
    assert!(matches!(
        Uniform::new(4, f32::NAN, 1.0),
        Err(Error::NonFiniteInput { .. })
    ));
    assert!(matches!(
        Uniform::new(4, 0.0, f32::INFINITY),
        Err(Error::NonFiniteInput { .. })
    ));
    assert!(matches!(
        Uniform::new(MAX_GRID_STEPS + 1, 0.0, 1.0),
        Err(Error::BadSolverConfig { .. })
    ));
    // Too many steps for the range: points collide in f32.
    assert!(matches!(
        Uniform::new(1000, 1.0, 1.0 + 1e-6),
        Err(Error::BadSolverConfig { .. })
    ));
}

/// torchdiffeq's step-size grid written out as its Python does it, for ascending ranges.
fn torchdiffeq_grid(t0: f32, t1: f32, h: f32) -> Vec<f32> {
    let niters = ((t1 - t0) / h + 1.0).ceil() as usize;
    let mut v: Vec<f32> = (0..niters).map(|i| (i as f32) * h + t0).collect();
    *v.last_mut().unwrap() = t1;
    v
}

#[test]
fn step_size_matches_torchdiffeq() {
    // 1/61: rounding adds a tiny 62nd step (documented in ENVIRONMENT.md).
    let g = StepSize::new(0.0, 1.0, (1.0f64 / 61.0) as f32).unwrap();
    assert_eq!(g.steps(), 62);
    let last_dt = g.point(62).unwrap() - g.point(61).unwrap();
    assert!(last_dt > 0.0 && last_dt < 1e-6, "{last_dt}");
    for n in 1..100u32 {
        let h = (1.0f64 / n as f64) as f32;
        let g = StepSize::new(0.0, 1.0, h).unwrap();
        assert_eq!(points(&g), torchdiffeq_grid(0.0, 1.0, h), "h=1/{n}");
    }
    // Step larger than the range: one step.
    let g = StepSize::new(0.0, 1.0, 5.0).unwrap();
    assert_eq!(points(&g), [0.0, 1.0]);
    // h = 0.25 exactly: 4 steps.
    let g = StepSize::new(0.0, 1.0, 0.25).unwrap();
    assert_eq!(points(&g), [0.0, 0.25, 0.5, 0.75, 1.0]);
}

#[test]
fn step_size_descending_is_negated_ascending() {
    for n in 1..50u32 {
        let h = (1.0f64 / n as f64) as f32;
        let down = StepSize::new(1.0, 0.0, h).unwrap();
        let up: Vec<f32> = torchdiffeq_grid(-1.0, 0.0, h).iter().map(|t| -t).collect();
        assert_eq!(points(&down), up, "h=1/{n}");
    }
}

#[test]
fn step_size_rejects_bad_config() {
    assert!(matches!(
        StepSize::new(0.0, 1.0, 0.0),
        Err(Error::BadSolverConfig { .. })
    ));
    assert!(matches!(
        StepSize::new(0.0, 1.0, -0.1),
        Err(Error::BadSolverConfig { .. })
    ));
    assert!(matches!(
        StepSize::new(0.0, 1.0, f32::NAN),
        Err(Error::NonFiniteInput { .. })
    ));
    assert!(matches!(
        StepSize::new(0.0, 0.0, 0.1),
        Err(Error::BadSolverConfig { .. })
    ));
    assert!(matches!(
        StepSize::new(0.0, 1.0, 1e-9),
        Err(Error::BadSolverConfig { .. })
    ));
}

#[test]
fn explicit_validation() {
    let p = [0.0, 0.1, 0.5, 1.0];
    let g = Explicit::new(&p).unwrap();
    assert_eq!(g.steps(), 3);
    assert_eq!(g.point(2), Some(0.5));
    assert_eq!(g.point(4), None);
    assert!(Explicit::new(&[1.0, 0.3, 0.0]).is_ok());
    assert!(matches!(
        Explicit::new(&[0.0]),
        Err(Error::BadSolverConfig { .. })
    ));
    assert!(matches!(
        Explicit::new(&[]),
        Err(Error::BadSolverConfig { .. })
    ));
    assert!(matches!(
        Explicit::new(&[0.0, 0.5, 0.5, 1.0]),
        Err(Error::BadSolverConfig { .. })
    ));
    assert!(matches!(
        Explicit::new(&[0.0, 0.6, 0.5, 1.0]),
        Err(Error::BadSolverConfig { .. })
    ));
    assert!(matches!(
        Explicit::new(&[0.0, f32::NAN, 1.0]),
        Err(Error::NonFiniteInput { .. })
    ));
}

#[test]
fn grid_enum_delegates() {
    let g = Grid::uniform(4).unwrap();
    assert_eq!(points(&g), [0.0, 0.25, 0.5, 0.75, 1.0]);
    let p = [1.0, 0.5, 0.0];
    let g = Grid::Explicit(Explicit::new(&p).unwrap());
    assert_eq!(points(&g), p);
    let d: &dyn TimeGrid = &g;
    assert_eq!(d.steps(), 2);
}

struct Broken;
impl TimeGrid for Broken {
    fn steps(&self) -> usize {
        3
    }
    fn point(&self, i: usize) -> Option<f32> {
        (i < 2).then_some(i as f32)
    }
}

#[test]
fn validate_catches_broken_custom_grid() {
    assert!(matches!(
        validate(&Broken),
        Err(Error::BadSolverConfig { .. })
    ));
}
