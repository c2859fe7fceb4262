//! Noise-level schedules: shifted (SD3), dynamic shift (Flux), and diffusers' exact
//! `FlowMatchEulerDiscreteScheduler` timesteps, each a [`TimeGrid`] in model time.

use super::*;

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
