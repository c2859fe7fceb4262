//! The solver methods by name ([`Method`]): what a `.frt` file's solver defaults and the
//! command line refer to. How each one steps lives in [`crate::solver`].

use core::fmt;
use core::str::FromStr;

use crate::Error;

/// The built-in methods, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `euler`: forward Euler, order 1, 1 evaluation per step.
    Euler,
    /// `midpoint`: explicit midpoint, order 2, 2 evaluations per step.
    Midpoint,
    /// `heun`: Heun / explicit trapezoid, order 2, 2 evaluations per step.
    Heun,
    /// `ralston`: Ralston's method, order 2, 2 evaluations per step.
    Ralston,
    /// `rk4`: classic Runge–Kutta (1/6, 1/3, 1/3, 1/6), order 4, 4 evaluations per step.
    /// Note: torchdiffeq's `rk4` is [`Method::Rk4_38`], not this.
    Rk4,
    /// `rk4-38`: Kutta's 3/8 rule, order 4, 4 evaluations per step; torchdiffeq's `rk4`.
    Rk4_38,
    /// `rk4-torchdyn`: torchdyn's `rk4` as it computes it ([`crate::solver::RK4_TORCHDYN`]), 4 evaluations
    /// per step; only for reproducing torchdyn / torchcfm-tutorial samples.
    Rk4Torchdyn,
    /// `ab2`: Adams–Bashforth, 2 steps, exact variable-step coefficients; 1 evaluation per
    /// step; the first step is Euler.
    Ab2,
    /// `ab3`: Adams–Bashforth, 3 steps (start-up: Euler, AB2); 1 evaluation per step.
    Ab3,
    /// `ab4`: Adams–Bashforth, 4 steps (start-up: Euler, AB2, AB3); 1 evaluation per step.
    Ab4,
    /// `heun-reuse`: FlowTurbo's pseudo-corrector — Heun whose predictor reuses the
    /// corrector velocity of the previous step; `steps + 1` evaluations in total.
    HeunReuse,
    /// `dopri5`: adaptive Dormand–Prince 5(4) with torchdiffeq's step-size controller (see
    /// [`crate::solver::adaptive`]); the grid's first and last points are the interval, the step count is
    /// chosen by the error tolerances.
    Dopri5,
}

impl Method {
    /// Every built-in method: the fixed-step ones, then dopri5. The position is the method's
    /// code in a `.frt` file's solver defaults (`format::sampling::METHOD_CODES`), so the
    /// order never changes; new methods go at the end.
    pub const EVERY: [Method; 12] = [
        Method::Euler,
        Method::Midpoint,
        Method::Heun,
        Method::Ralston,
        Method::Rk4,
        Method::Rk4_38,
        Method::Rk4Torchdyn,
        Method::Ab2,
        Method::Ab3,
        Method::Ab4,
        Method::HeunReuse,
        Method::Dopri5,
    ];

    /// Every built-in fixed-step method, in a fixed order (all but [`Method::Dopri5`]).
    pub const ALL: [Method; 11] = {
        let [a, b, c, d, e, f, g, h, i, j, k, _dopri5] = Method::EVERY;
        [a, b, c, d, e, f, g, h, i, j, k]
    };

    /// The command-line name (`euler`, `midpoint`, `heun`, `ralston`, `rk4`, `rk4-38`,
    /// `rk4-torchdyn`, `ab2`, `ab3`, `ab4`, `heun-reuse`, `dopri5`); [`Method::from_str`]
    /// parses it back.
    pub fn name(self) -> &'static str {
        match self {
            Method::Euler => "euler",
            Method::Midpoint => "midpoint",
            Method::Heun => "heun",
            Method::Ralston => "ralston",
            Method::Rk4 => "rk4",
            Method::Rk4_38 => "rk4-38",
            Method::Rk4Torchdyn => "rk4-torchdyn",
            Method::Ab2 => "ab2",
            Method::Ab3 => "ab3",
            Method::Ab4 => "ab4",
            Method::HeunReuse => "heun-reuse",
            Method::Dopri5 => "dopri5",
        }
    }

    /// Order of accuracy (global error ~ `dt^order`).
    pub fn order(self) -> u32 {
        match self {
            Method::Euler | Method::Rk4Torchdyn => 1,
            Method::Midpoint | Method::Heun | Method::Ralston | Method::Ab2 => 2,
            Method::HeunReuse => 2,
            Method::Ab3 => 3,
            Method::Rk4 | Method::Rk4_38 | Method::Ab4 => 4,
            Method::Dopri5 => 5,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = Error;

    /// Parses a command-line name (ASCII case-insensitive; `rk4_38` is accepted for `rk4-38`).
    ///
    /// Errors: [`Error::BadSolverConfig`] for an unknown name.
    fn from_str(s: &str) -> Result<Self, Error> {
        for m in Method::EVERY {
            if s.eq_ignore_ascii_case(m.name()) {
                return Ok(m);
            }
        }
        if s.eq_ignore_ascii_case("rk4_38") {
            return Ok(Method::Rk4_38);
        }
        Err(Error::BadSolverConfig {
            what: "unknown solver method (expected euler, midpoint, heun, ralston, rk4, rk4-38, \
                   rk4-torchdyn, ab2, ab3, ab4, heun-reuse or dopri5)",
        })
    }
}
