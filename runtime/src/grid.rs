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

fn check_steps(steps: usize) -> Result<(), Error> {
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

/// A static shift must be finite and positive.
fn check_shift(shift: f64) -> Result<(), Error> {
    if !shift.is_finite() {
        return Err(Error::NonFiniteInput { what: "time shift" });
    }
    if shift <= 0.0 {
        return Err(Error::BadSolverConfig {
            what: "time shift must be positive",
        });
    }
    Ok(())
}

/// A dynamic shift's `mu` must be finite, and positive for the linear kind.
fn check_mu(mu: f64, kind: ShiftKind) -> Result<(), Error> {
    if !mu.is_finite() {
        return Err(Error::NonFiniteInput {
            what: "time shift mu",
        });
    }
    if kind == ShiftKind::Linear && mu <= 0.0 {
        return Err(Error::BadSolverConfig {
            what: "linear time shift needs mu > 0",
        });
    }
    Ok(())
}

/// The static shift as torch / numpy compute it on a float32 array with Python-float
/// scalars: `f32(shift)·σ / (1 + f32(shift − 1)·σ)`, all in f32.
fn shift_noise_level_f32(sigma: f32, shift: f64) -> f32 {
    let a = (shift as f32) * sigma;
    a / (1.0 + ((shift - 1.0) as f32) * sigma)
}

/// The SD3 / diffusers static time shift of a noise level:
/// `σ' = shift·σ / (1 + (shift − 1)·σ)` (shift > 1 spends more steps at high noise).
pub fn shift_noise_level(sigma: f64, shift: f64) -> f64 {
    shift * sigma / (1.0 + (shift - 1.0) * sigma)
}

/// The two resolution-dependent time shifts of diffusers / Flux (`time_shift_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShiftKind {
    /// `σ' = e^μ / (e^μ + (1/σ − 1))` (Flux's default).
    Exponential,
    /// `σ' = μ / (μ + (1/σ − 1))`.
    Linear,
}

/// `e^x` in double-double arithmetic, rounded once to f64: correctly rounded for all but
/// astronomically rare inputs, so it agrees with glibc's `exp` (what Python's `math.exp`
/// calls) where `libm::exp` can be 1 ulp off (e.g. at 1.15). Pure IEEE basic operations, the
/// same on every target. Used for the `e^μ` of the diffusers time shift.
pub fn exp_rounded(x: f64) -> f64 {
    #[derive(Clone, Copy)]
    struct Dd(f64, f64);
    fn two_sum(a: f64, b: f64) -> Dd {
        let s = a + b;
        let bb = s - a;
        Dd(s, (a - (s - bb)) + (b - bb))
    }
    fn quick(a: f64, b: f64) -> Dd {
        let s = a + b;
        Dd(s, b - (s - a))
    }
    fn split(a: f64) -> (f64, f64) {
        let c = 134_217_729.0 * a;
        let hi = c - (c - a);
        (hi, a - hi)
    }
    fn two_prod(a: f64, b: f64) -> Dd {
        let p = a * b;
        let (ah, al) = split(a);
        let (bh, bl) = split(b);
        Dd(p, ((ah * bh - p) + ah * bl + al * bh) + al * bl)
    }
    fn add(x: Dd, y: Dd) -> Dd {
        let s = two_sum(x.0, y.0);
        quick(s.0, s.1 + x.1 + y.1)
    }
    fn mul(x: Dd, y: Dd) -> Dd {
        let p = two_prod(x.0, y.0);
        quick(p.0, p.1 + x.0 * y.1 + x.1 * y.0)
    }
    fn div_small(x: Dd, n: f64) -> Dd {
        let q1 = x.0 / n;
        let p = two_prod(q1, n);
        let r = ((x.0 - p.0) - p.1 + x.1) / n;
        quick(q1, r)
    }
    if !x.is_finite() || x.abs() > 700.0 {
        return libm::exp(x);
    }
    // x = k ln2 + r, |r| <= ln2 / 2, with ln2 split into an exact high part and a low part.
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
    let k = libm::round(x / core::f64::consts::LN_2);
    let r = add(Dd(x - k * LN2_HI, 0.0), two_prod(-k, LN2_LO));
    let mut sum = Dd(1.0, 0.0);
    let mut term = Dd(1.0, 0.0);
    for i in 1..=27 {
        term = div_small(mul(term, r), f64::from(i));
        sum = add(sum, term);
    }
    libm::ldexp(sum.0 + sum.1, k as i32)
}

impl ShiftKind {
    /// Applies the shift to a noise level in f64 (`σ = 0` stays 0, `σ = 1` stays 1).
    pub fn apply(self, mu: f64, sigma: f64) -> f64 {
        let m = match self {
            ShiftKind::Exponential => exp_rounded(mu),
            ShiftKind::Linear => mu,
        };
        m / (m + (1.0 / sigma - 1.0))
    }

    /// The same in f32 arithmetic (`e^μ` rounded to f32 first), as numpy computes it on a
    /// float32 array with a Python float (diffusers' `set_timesteps(sigmas=...)` path).
    pub fn apply_f32(self, mu: f64, sigma: f32) -> f32 {
        let m = match self {
            ShiftKind::Exponential => exp_rounded(mu) as f32,
            ShiftKind::Linear => mu as f32,
        };
        m / (m + (1.0 / sigma - 1.0))
    }
}

/// `steps` uniform noise levels `σ = torch.linspace(1, 0, steps + 1)` (float32), each
/// shifted by [`shift_noise_level`] (in f64, rounded to f32), mapped to model time by `axis`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shifted {
    steps: usize,
    shift: f64,
    axis: TimeAxis,
}

impl Shifted {
    /// The shifted grid. `shift = 1` gives the uniform noise levels.
    ///
    /// Errors: [`Error::BadSolverConfig`] for 0 or too many steps or `shift <= 0`;
    /// [`Error::NonFiniteInput`] for a non-finite shift.
    pub fn new(steps: usize, shift: f64, axis: TimeAxis) -> Result<Self, Error> {
        check_steps(steps)?;
        check_shift(shift)?;
        let g = Shifted { steps, shift, axis };
        check_strictly_monotone(&g)?;
        Ok(g)
    }
}

impl TimeGrid for Shifted {
    fn steps(&self) -> usize {
        self.steps
    }

    fn point(&self, i: usize) -> Option<f32> {
        let s = uniform_noise_level(self.steps, i)?;
        let shifted = shift_noise_level(f64::from(s), self.shift) as f32;
        Some(self.axis.from_noise_level(shifted))
    }
}

/// `steps` uniform noise levels (as [`Shifted`]) under diffusers' resolution-dependent
/// shift with parameter `mu` ([`ShiftKind`], in f64, rounded to f32), mapped by `axis`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamicShift {
    steps: usize,
    mu: f64,
    kind: ShiftKind,
    axis: TimeAxis,
}

impl DynamicShift {
    /// The dynamically shifted grid.
    ///
    /// Errors: [`Error::BadSolverConfig`] for 0 or too many steps, or `mu <= 0` with the
    /// linear kind; [`Error::NonFiniteInput`] for a non-finite `mu`.
    pub fn new(steps: usize, mu: f64, kind: ShiftKind, axis: TimeAxis) -> Result<Self, Error> {
        check_steps(steps)?;
        check_mu(mu, kind)?;
        let g = DynamicShift {
            steps,
            mu,
            kind,
            axis,
        };
        check_strictly_monotone(&g)?;
        Ok(g)
    }
}

impl TimeGrid for DynamicShift {
    fn steps(&self) -> usize {
        self.steps
    }

    fn point(&self, i: usize) -> Option<f32> {
        let s = uniform_noise_level(self.steps, i)?;
        let shifted = if s == 0.0 {
            0.0
        } else {
            self.kind.apply(self.mu, f64::from(s)) as f32
        };
        Some(self.axis.from_noise_level(shifted))
    }
}

/// The shift a [`Diffusers`] schedule applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DiffusersShift {
    /// Static `shift` (scheduler config `shift`, `use_dynamic_shifting=False`; 1.0 = none).
    Static(f64),
    /// `use_dynamic_shifting=True` with `time_shift_type` and the `mu` passed to
    /// `set_timesteps`.
    Dynamic {
        /// `mu` (a Python float: keep it f64 to match).
        mu: f64,
        /// `time_shift_type`.
        kind: ShiftKind,
    },
}

/// The exact noise levels of diffusers' `FlowMatchEulerDiscreteScheduler` (0.42.1, with
/// `num_train_timesteps=1000` and no Karras/exponential/beta sigmas), bit for bit, mapped to
/// model time by `axis`:
///
/// * **default path** `set_timesteps(N)`: the constructor builds the 1000-entry table
///   `σ_k = f32(k)/1000` in float32 and, for a static shift, shifts it in float32; then
///   `σ_max, σ_min` are its first and last entries; `set_timesteps` takes
///   `np.linspace(1000 σ_max, 1000 σ_min, N) / 1000` in **float64**, applies the shift (again:
///   with a static shift the end point is shifted twice) or the dynamic shift in float64, and
///   rounds to float32;
/// * **Flux path** `set_timesteps(sigmas=np.linspace(1, 1/N, N), mu=...)` (`flux_sigmas`):
///   the given levels are rounded to float32 and shifted in **float32**.
///
/// The terminal level 0 is appended, so the grid has `N + 1` points and the last step ends
/// at data exactly. With the `sigma` axis and `scale = 1000`, flowrt's Euler step and network
/// time are then identical to the scheduler's `step` and `timesteps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Diffusers {
    steps: usize,
    shift: DiffusersShift,
    flux_sigmas: bool,
    axis: TimeAxis,
    /// 1000 σ_max and 1000 σ_min of the constructor's table, as Python floats.
    t_max: f64,
    t_min: f64,
}

/// The constructor's float32 table entry `k` (1..=1000) under a static shift.
fn diffusers_table(k: u32, shift: DiffusersShift) -> f32 {
    let s = k as f32 / 1000.0;
    match shift {
        DiffusersShift::Static(sh) => shift_noise_level_f32(s, sh),
        DiffusersShift::Dynamic { .. } => s,
    }
}

impl Diffusers {
    /// The scheduler's grid for `steps` inference steps.
    ///
    /// Errors: [`Error::BadSolverConfig`] for 0 or too many steps, a non-positive static
    /// shift or linear `mu`, or levels that are not strictly decreasing;
    /// [`Error::NonFiniteInput`] for non-finite parameters.
    pub fn new(
        steps: usize,
        shift: DiffusersShift,
        flux_sigmas: bool,
        axis: TimeAxis,
    ) -> Result<Self, Error> {
        check_steps(steps)?;
        match shift {
            DiffusersShift::Static(s) => check_shift(s)?,
            DiffusersShift::Dynamic { mu, kind } => check_mu(mu, kind)?,
        }
        let g = Diffusers {
            steps,
            shift,
            flux_sigmas,
            axis,
            t_max: f64::from(diffusers_table(1000, shift)) * 1000.0,
            t_min: f64::from(diffusers_table(1, shift)) * 1000.0,
        };
        check_strictly_monotone(&g)?;
        Ok(g)
    }

    /// The noise level σ_i (`i <= steps`; σ_steps = 0).
    pub fn noise_level(&self, i: usize) -> Option<f32> {
        if i > self.steps {
            return None;
        }
        if i == self.steps {
            return Some(0.0);
        }
        let n = self.steps;
        if self.flux_sigmas {
            let s = numpy_linspace(1.0, 1.0 / n as f64, n, i) as f32;
            return Some(match self.shift {
                DiffusersShift::Static(sh) => shift_noise_level_f32(s, sh),
                DiffusersShift::Dynamic { mu, kind } => kind.apply_f32(mu, s),
            });
        }
        let s = numpy_linspace(self.t_max, self.t_min, n, i) / 1000.0;
        Some(match self.shift {
            DiffusersShift::Static(sh) => shift_noise_level(s, sh) as f32,
            DiffusersShift::Dynamic { mu, kind } => kind.apply(mu, s) as f32,
        })
    }
}

/// Element `i` of `np.linspace(start, stop, num)` in float64 (`i * step + start`, the last
/// element exactly `stop`, a single element `start`).
fn numpy_linspace(start: f64, stop: f64, num: usize, i: usize) -> f64 {
    if num <= 1 {
        return start;
    }
    if i + 1 == num {
        return stop;
    }
    let step = (stop - start) / (num - 1) as f64;
    i as f64 * step + start
}

impl TimeGrid for Diffusers {
    fn steps(&self) -> usize {
        self.steps
    }

    fn point(&self, i: usize) -> Option<f32> {
        self.noise_level(i).map(|s| self.axis.from_noise_level(s))
    }
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
mod tests {
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
        for steps in 1..200 {
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
}
