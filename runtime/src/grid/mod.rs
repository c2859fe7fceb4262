//! Time grids: the points `t_0, t_1, ..., t_N` a fixed-step solver steps through.
//!
//! A grid is anything that implements [`TimeGrid`]: a step count `N` and the `N + 1` time
//! points, computed on demand (no storage, no allocation). The built-in grids reproduce the
//! float32 arithmetic of the reference samplers bit for bit, so a flowrt sample and a
//! PyTorch sample see exactly the same time values:
//!
//! | grid | same points as |
//! |---|---|
//! | [`Uniform`] | `torch.linspace(t0, t1, steps + 1)` in float32 |
//! | [`StepSize`] | torchdiffeq's fixed-grid `options={"step_size": h}` (what Meta `flow_matching`'s `ODESolver.sample(step_size=h)` uses) |
//! | [`Explicit`] | a caller-provided list (e.g. a schedule baked into a `.frt` file) |
//!
//! [`Grid`] is the closed enum of the built-in grids (what a `.frt` file or a command line can
//! name); later schedules (shifted, cosine / EDM-style, ...) are added as new variants and new
//! [`TimeGrid`] implementations without touching the solvers.
//!
//! A descending grid (`t0 > t1`) integrates backward in time (inversion, data → noise).

use crate::time::TimeAxis;
use crate::Error;

mod schedules;

pub use schedules::{
    exp_rounded, shift_noise_level, Diffusers, DiffusersShift, DynamicShift, ShiftKind, Shifted,
};

/// Largest step count a computed grid accepts: `2^24`, so every step index is exact in f32.
pub const MAX_GRID_STEPS: usize = 1 << 24;

/// A fixed sequence of time points `t_0, ..., t_N` for a fixed-step solver.
///
/// Implementations must return `Some` for every `i` in `0..=steps()`. The solvers call
/// [`validate`] before stepping, so a custom implementation that breaks this contract gives a
/// typed error, never a panic.
pub trait TimeGrid {
    /// Number of solver steps `N` (one less than the number of points).
    fn steps(&self) -> usize;

    /// The time point `t_i` for `i` in `0..=steps()`; `None` for any other `i`.
    fn point(&self, i: usize) -> Option<f32>;
}

/// Checks what every solver needs from a grid: at least one step, and every point present
/// and finite. O(steps).
///
/// Monotonicity is not required here (the grid constructors enforce it where it is part of
/// their contract): any finite grid is a well-defined integration.
///
/// Errors: [`Error::BadSolverConfig`] for zero steps or a missing point,
/// [`Error::NonFiniteInput`] for a NaN / infinite point.
pub fn validate<G: TimeGrid + ?Sized>(grid: &G) -> Result<(), Error> {
    let steps = grid.steps();
    if steps == 0 {
        return Err(Error::BadSolverConfig {
            what: "time grid has zero steps",
        });
    }
    for i in 0..=steps {
        match grid.point(i) {
            None => {
                return Err(Error::BadSolverConfig {
                    what: "time grid is missing a point",
                })
            }
            Some(t) if !t.is_finite() => {
                return Err(Error::NonFiniteInput { what: "time grid" });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks that `t_0, ..., t_N` are strictly increasing or strictly decreasing.
fn check_strictly_monotone<G: TimeGrid + ?Sized>(grid: &G) -> Result<(), Error> {
    validate(grid)?;
    let first = grid.point(0).ok_or(Error::BadSolverConfig {
        what: "time grid is empty",
    })?;
    let last = grid.point(grid.steps()).ok_or(Error::BadSolverConfig {
        what: "time grid is missing a point",
    })?;
    let ascending = last > first;
    let mut prev = first;
    for i in 1..=grid.steps() {
        let t = grid.point(i).ok_or(Error::BadSolverConfig {
            what: "time grid is missing a point",
        })?;
        let ok = if ascending { t > prev } else { t < prev };
        if !ok {
            return Err(Error::BadSolverConfig {
                what: "time grid is not strictly monotone",
            });
        }
        prev = t;
    }
    Ok(())
}

fn check_endpoints(t0: f32, t1: f32) -> Result<(), Error> {
    if !t0.is_finite() || !t1.is_finite() {
        return Err(Error::NonFiniteInput {
            what: "time grid endpoint",
        });
    }
    if t0 == t1 {
        return Err(Error::BadSolverConfig {
            what: "time grid start equals its end",
        });
    }
    Ok(())
}

/// `steps` equal intervals from `t0` to `t1`, with the points of
/// `torch.linspace(t0, t1, steps + 1, dtype=torch.float32)`, bit for bit.
///
/// PyTorch's linspace kernel (CPU and CUDA alike; its CPU kernel is scalar since the
/// vectorised path was removed for precision) computes, all in float32, with
/// `n = steps + 1` points and `step = (t1 - t0) / (n - 1)`:
/// `t_i = t0 + step * i` for `i < n / 2` (integer division) and
/// `t_i = t1 - step * (n - 1 - i)` for the rest. So `t_0 = t0` and `t_N = t1` exactly, and
/// the grid is symmetric in rounding about its middle. [`Uniform::point`] evaluates the same
/// expressions in the same order (Rust does not contract `a + b * c` into an FMA).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Uniform {
    steps: usize,
    t0: f32,
    t1: f32,
    step: f32,
}

impl Uniform {
    /// A uniform grid of `steps` intervals from `t0` to `t1` (either direction).
    ///
    /// Errors: [`Error::BadSolverConfig`] if `steps` is 0 or above [`MAX_GRID_STEPS`],
    /// `t0 == t1`, or the points are not strictly monotone in f32 (too many steps for the
    /// range); [`Error::NonFiniteInput`] if an endpoint is NaN / infinite.
    pub fn new(steps: usize, t0: f32, t1: f32) -> Result<Self, Error> {
        check_steps(steps)?;
        check_endpoints(t0, t1)?;
        // `steps` <= 2^24, so the conversion is exact (torch converts `n - 1` the same way).
        let step = (t1 - t0) / steps as f32;
        let grid = Uniform {
            steps,
            t0,
            t1,
            step,
        };
        check_strictly_monotone(&grid)?;
        Ok(grid)
    }

    /// The usual flow-matching grid: `steps` intervals from `t = 0` (noise) to `t = 1` (data).
    ///
    /// Errors: as [`Uniform::new`].
    pub fn unit(steps: usize) -> Result<Self, Error> {
        Self::new(steps, 0.0, 1.0)
    }

    /// First time point.
    pub fn t0(&self) -> f32 {
        self.t0
    }

    /// Last time point.
    pub fn t1(&self) -> f32 {
        self.t1
    }
}

impl TimeGrid for Uniform {
    fn steps(&self) -> usize {
        self.steps
    }

    fn point(&self, i: usize) -> Option<f32> {
        if i > self.steps {
            return None;
        }
        let points = self.steps + 1;
        let halfway = points / 2;
        Some(if i < halfway {
            self.t0 + self.step * i as f32
        } else {
            self.t1 - self.step * (self.steps - i) as f32
        })
    }
}

/// The grid torchdiffeq builds for its fixed-step solvers from `options={"step_size": h}`,
/// bit for bit in float32 (as computed on the CPU).
///
/// torchdiffeq 0.2.5 (`FixedGridODESolver._grid_constructor_from_step_size`) does, in the
/// dtype of `t` (float32):
/// `niters = ceil((t1 - t0) / h + 1)`, `t_i = arange(niters)[i] * h + t0`, then overwrites the
/// last point with `t1`. `h` (a Python float) is rounded to f32 first. So the step count is
/// `niters - 1`, every step but the last has length ≈ `h`, and rounding can add a tiny extra
/// last step (`h = 1/61` on `[0, 1]` gives 62 steps, the last ≈ 6e-8 long).
///
/// A descending range is integrated by torchdiffeq on negated times (`t -> -t`, `v -> -v`);
/// the grid is built on `[-t0, -t1]` and negated back, which this type reproduces.
///
/// Faithful to torchdiffeq, the last interval may be degenerate (zero or, for rare `h`,
/// slightly negative length) when rounding puts the second-to-last point on or past `t1`.
/// (On CUDA, PyTorch divides by a scalar as `x * (1/h)`, which can change `niters` in rare
/// edge cases; this type follows the CPU.)
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSize {
    steps: usize,
    t0: f32,
    t1: f32,
    h: f32,
}

impl StepSize {
    /// The torchdiffeq step-size grid from `t0` to `t1` (either direction) with step `h > 0`.
    ///
    /// Errors: [`Error::BadSolverConfig`] if `h <= 0`, `t0 == t1`, or the grid would have more
    /// than [`MAX_GRID_STEPS`] steps; [`Error::NonFiniteInput`] if `t0`, `t1` or `h` is not
    /// finite.
    pub fn new(t0: f32, t1: f32, h: f32) -> Result<Self, Error> {
        check_endpoints(t0, t1)?;
        if !h.is_finite() {
            return Err(Error::NonFiniteInput { what: "step size" });
        }
        if h <= 0.0 {
            return Err(Error::BadSolverConfig {
                what: "step size must be positive",
            });
        }
        // torchdiffeq works on ascending times: -t for a descending range.
        let (s, e) = if t1 > t0 { (t0, t1) } else { (-t0, -t1) };
        let niters = libm::ceilf((e - s) / h + 1.0);
        if !niters.is_finite() || niters > (MAX_GRID_STEPS + 1) as f32 {
            return Err(Error::BadSolverConfig {
                what: "too many solver steps (max 2^24)",
            });
        }
        // niters >= 2 because e - s > 0; the cast is exact (integer-valued, <= 2^24 + 1).
        let points = niters as usize;
        let steps = points.saturating_sub(1).max(1);
        let grid = StepSize { steps, t0, t1, h };
        validate(&grid)?;
        Ok(grid)
    }

    /// The step size `h` (as f32).
    pub fn step_size(&self) -> f32 {
        self.h
    }
}

impl TimeGrid for StepSize {
    fn steps(&self) -> usize {
        self.steps
    }

    fn point(&self, i: usize) -> Option<f32> {
        if i > self.steps {
            return None;
        }
        if i == self.steps {
            return Some(self.t1);
        }
        // i < steps <= 2^24: exact in f32, like torch.arange's float32 values.
        let a = i as f32 * self.h;
        Some(if self.t1 > self.t0 {
            a + self.t0
        } else {
            // -(a + (-t0)) == t0 - a exactly (rounding is symmetric under negation).
            -(a + -self.t0)
        })
    }
}

/// A caller-provided list of time points (at least two, strictly monotone, finite), e.g. an
/// optimised schedule baked into a `.frt` file. Borrowed, not copied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Explicit<'a> {
    points: &'a [f32],
}

impl<'a> Explicit<'a> {
    /// Wraps `points` after validating it.
    ///
    /// Errors: [`Error::BadSolverConfig`] if there are fewer than two points or they are not
    /// strictly increasing or strictly decreasing; [`Error::NonFiniteInput`] if one is NaN /
    /// infinite.
    pub fn new(points: &'a [f32]) -> Result<Self, Error> {
        if points.len() < 2 {
            return Err(Error::BadSolverConfig {
                what: "explicit time grid needs at least two points",
            });
        }
        let grid = Explicit { points };
        check_strictly_monotone(&grid)?;
        Ok(grid)
    }

    /// The points, as given.
    pub fn points(&self) -> &'a [f32] {
        self.points
    }
}

impl TimeGrid for Explicit<'_> {
    fn steps(&self) -> usize {
        self.points.len().saturating_sub(1)
    }

    fn point(&self, i: usize) -> Option<f32> {
        self.points.get(i).copied()
    }
}

/// Element `i` of `torch.linspace(1, 0, steps + 1)` in float32: the uniform noise-level grid.
fn uniform_noise_level(steps: usize, i: usize) -> Option<f32> {
    Uniform::new(steps, 1.0, 0.0).ok()?.point(i)
}

pub(crate) fn check_steps(steps: usize) -> Result<(), Error> {
    if steps == 0 {
        return Err(Error::BadSolverConfig {
            what: "zero solver steps",
        });
    }
    if steps > MAX_GRID_STEPS {
        return Err(Error::BadSolverConfig {
            what: "too many solver steps (max 2^24)",
        });
    }
    Ok(())
}

/// The built-in time grids, as one value (what solver defaults in a `.frt` file or a command
/// line select). New schedules become new variants.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Grid<'a> {
    /// `torch.linspace`-exact uniform grid.
    Uniform(Uniform),
    /// torchdiffeq's `step_size` grid.
    StepSize(StepSize),
    /// A caller-provided list.
    Explicit(Explicit<'a>),
    /// Uniform noise levels under the SD3 static shift.
    Shifted(Shifted),
    /// Uniform noise levels under diffusers' dynamic (resolution-dependent) shift.
    DynamicShift(DynamicShift),
    /// diffusers' `FlowMatchEulerDiscreteScheduler` levels, bit for bit.
    Diffusers(Diffusers),
}

impl Grid<'static> {
    /// `steps` uniform intervals from 0 to 1 (see [`Uniform::unit`]).
    ///
    /// Errors: as [`Uniform::new`].
    pub fn uniform(steps: usize) -> Result<Self, Error> {
        Uniform::unit(steps).map(Grid::Uniform)
    }
}

impl TimeGrid for Grid<'_> {
    fn steps(&self) -> usize {
        match self {
            Grid::Uniform(g) => g.steps(),
            Grid::StepSize(g) => g.steps(),
            Grid::Explicit(g) => g.steps(),
            Grid::Shifted(g) => g.steps(),
            Grid::DynamicShift(g) => g.steps(),
            Grid::Diffusers(g) => g.steps(),
        }
    }

    fn point(&self, i: usize) -> Option<f32> {
        match self {
            Grid::Uniform(g) => g.point(i),
            Grid::StepSize(g) => g.point(i),
            Grid::Explicit(g) => g.point(i),
            Grid::Shifted(g) => g.point(i),
            Grid::DynamicShift(g) => g.point(i),
            Grid::Diffusers(g) => g.point(i),
        }
    }
}

/// A grid described independently of its step count and time axis: what a command line
/// (`--grid`) or a `.frt` file's solver defaults name. [`GridSpec::build`] makes the grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GridSpec<'a> {
    /// `uniform`: `torch.linspace` from the noise end to the data end.
    Uniform,
    /// `step-size:H` (CLI `--step-size H`): torchdiffeq's step-size grid.
    StepSize(f32),
    /// `shift:S`: [`Shifted`].
    Shift(f64),
    /// `dynamic-shift:MU` / `dynamic-shift-linear:MU`: [`DynamicShift`].
    DynamicShift {
        /// `mu`.
        mu: f64,
        /// Exponential or linear.
        kind: ShiftKind,
    },
    /// `diffusers`, `diffusers:S`, `diffusers-dynamic:MU[:linear]`, `flux:MU[:linear]`:
    /// [`Diffusers`] (`flux` = the `sigmas=linspace(1, 1/N, N)` + `mu` call).
    Diffusers {
        /// The scheduler's shift.
        shift: DiffusersShift,
        /// Flux-style `sigmas` input.
        flux_sigmas: bool,
    },
    /// An explicit list of model times (sets the step count).
    Explicit(&'a [f32]),
}

impl<'a> GridSpec<'a> {
    /// The grid for `steps` steps on `axis` (from its noise end to its data end). `steps` is
    /// ignored by [`GridSpec::StepSize`] and [`GridSpec::Explicit`], which fix their own.
    ///
    /// Errors: as the constructors of the grid types.
    pub fn build(&self, steps: usize, axis: TimeAxis) -> Result<Grid<'a>, Error> {
        let (noise, data) = (axis.noise_end(), axis.data_end());
        Ok(match *self {
            GridSpec::Uniform => Grid::Uniform(Uniform::new(steps, noise, data)?),
            GridSpec::StepSize(h) => Grid::StepSize(StepSize::new(noise, data, h)?),
            GridSpec::Shift(s) => Grid::Shifted(Shifted::new(steps, s, axis)?),
            GridSpec::DynamicShift { mu, kind } => {
                Grid::DynamicShift(DynamicShift::new(steps, mu, kind, axis)?)
            }
            GridSpec::Diffusers { shift, flux_sigmas } => {
                Grid::Diffusers(Diffusers::new(steps, shift, flux_sigmas, axis)?)
            }
            GridSpec::Explicit(p) => Grid::Explicit(Explicit::new(p)?),
        })
    }

    /// `true` when the spec fixes the step count itself (explicit list, step size).
    pub fn fixes_steps(&self) -> bool {
        matches!(self, GridSpec::StepSize(_) | GridSpec::Explicit(_))
    }

    /// Parses a named grid (`uniform`, `step-size:H`, `shift:S`, `dynamic-shift:MU`,
    /// `dynamic-shift-linear:MU`, `diffusers`, `diffusers:S`, `diffusers-dynamic:MU`,
    /// `diffusers-dynamic:MU:linear`, `flux:MU`, `flux:MU:linear`). Explicit lists are parsed
    /// by the caller, which owns their storage.
    ///
    /// Errors: [`Error::BadSolverConfig`] for an unknown name or a malformed number.
    pub fn parse_named(s: &str) -> Result<GridSpec<'static>, Error> {
        const BAD_NUMBER: Error = Error::BadSolverConfig {
            what: "malformed number in the grid name",
        };
        let num = |v: &str| v.trim().parse::<f64>().map_err(|_| BAD_NUMBER);
        let kind = |k: Option<&str>| match k {
            None | Some("exponential") => Ok(ShiftKind::Exponential),
            Some("linear") => Ok(ShiftKind::Linear),
            Some(_) => Err(Error::BadSolverConfig {
                what: "unknown time-shift kind (expected exponential or linear)",
            }),
        };
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        fn split_kind(a: &str) -> (&str, Option<&str>) {
            match a.split_once(':') {
                Some((m, k)) => (m, Some(k)),
                None => (a, None),
            }
        }
        Ok(match (name, arg) {
            ("uniform", None) => GridSpec::Uniform,
            ("step-size", Some(h)) => GridSpec::StepSize(num(h)? as f32),
            ("shift", Some(v)) => GridSpec::Shift(num(v)?),
            ("dynamic-shift", Some(v)) => {
                let (m, k) = split_kind(v);
                GridSpec::DynamicShift {
                    mu: num(m)?,
                    kind: kind(k)?,
                }
            }
            ("dynamic-shift-linear", Some(v)) => GridSpec::DynamicShift {
                mu: num(v)?,
                kind: ShiftKind::Linear,
            },
            ("diffusers", None) => GridSpec::Diffusers {
                shift: DiffusersShift::Static(1.0),
                flux_sigmas: false,
            },
            ("diffusers", Some(v)) => GridSpec::Diffusers {
                shift: DiffusersShift::Static(num(v)?),
                flux_sigmas: false,
            },
            ("diffusers-dynamic" | "flux", Some(v)) => {
                let (m, k) = split_kind(v);
                GridSpec::Diffusers {
                    shift: DiffusersShift::Dynamic {
                        mu: num(m)?,
                        kind: kind(k)?,
                    },
                    flux_sigmas: name == "flux",
                }
            }
            _ => {
                return Err(Error::BadSolverConfig {
                    what: "unknown grid (expected uniform, shift:S, dynamic-shift:MU, \
                           dynamic-shift-linear:MU, diffusers[:S], diffusers-dynamic:MU[:linear], \
                           flux:MU[:linear], step-size:H or a list t0,t1,...)",
                })
            }
        })
    }
}

impl<G: TimeGrid + ?Sized> TimeGrid for &G {
    fn steps(&self) -> usize {
        (**self).steps()
    }

    fn point(&self, i: usize) -> Option<f32> {
        (**self).point(i)
    }
}

#[cfg(test)]
mod tests;
