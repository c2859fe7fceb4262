//! The sampling options the runtime parses from strings (`--method`, `--grid`, `--time`,
//! `--second-time`, `--diffusion`) and the grids it builds from them.
//!
//! Input: byte 0 picks the parser, byte 1 the step count (1..=256), byte 2 the time axis; the
//! rest is the string. Every grid that builds is walked point by point and validated.
#![no_main]

use flowrt::grid::{self, Explicit, GridSpec, TimeGrid};
use flowrt::solver::Method;
use flowrt::time::{SecondTime, TimeAxis};
use libfuzzer_sys::fuzz_target;

fn walk(g: &dyn TimeGrid) {
    let n = g.steps();
    if n > 1 << 20 {
        return;
    }
    for i in 0..=n + 1 {
        let _ = g.point(i);
    }
    let _ = grid::validate(g);
}

fuzz_target!(|data: &[u8]| {
    let [which, steps, ax, rest @ ..] = data else {
        return;
    };
    let Ok(s) = core::str::from_utf8(rest) else {
        return;
    };
    let steps = 1 + *steps as usize;
    let axis = if ax & 1 == 0 {
        TimeAxis::T
    } else {
        TimeAxis::Sigma
    };
    match which % 6 {
        0 => {
            if let Ok(m) = s.parse::<Method>() {
                assert_eq!(m.name().parse::<Method>().ok(), Some(m));
                let _ = m.workspace_bytes(steps);
                let _ = m.order();
            }
        }
        1 => {
            if let Ok(spec) = GridSpec::parse_named(s) {
                if let Ok(g) = spec.build(steps, axis) {
                    walk(&g);
                }
            }
        }
        2 => {
            // An explicit list, as the CLI splits it: `t0,t1,...`.
            let pts: Result<Vec<f32>, _> = s.split(',').map(|v| v.trim().parse::<f32>()).collect();
            if let Ok(pts) = pts {
                if let Ok(g) = GridSpec::Explicit(&pts).build(steps, axis) {
                    walk(&g);
                }
                if let Ok(g) = Explicit::new(&pts) {
                    walk(&g);
                }
            }
        }
        3 => {
            let _ = TimeAxis::parse(s);
        }
        4 => {
            if let Ok(st) = SecondTime::parse(s) {
                assert_eq!(SecondTime::parse(st.name()).ok(), Some(st));
            }
        }
        _ => {
            let _ = flowrt::sde::Diffusion::parse(s);
        }
    }
});
