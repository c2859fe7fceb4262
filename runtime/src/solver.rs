//! Fixed-step explicit Runge–Kutta solvers, generic over the state storage.
//!
//! Every method is a Butcher tableau ([`Tableau`]) and all of them run through **one** stepping
//! loop, [`integrate_tableau`], written against [`StateOps`] and [`VelocityField`] only, so the
//! CPU executor, ONNX Runtime and GPU backends share it unchanged. One step from `t_n` to
//! `t_{n+1}` (with `dt = t_{n+1} - t_n` in f32) is:
//!
//! ```text
//! for i in 1..=s:  tmp = x + (dt*a_i1) k_1 + ... + (dt*a_i,i-1) k_{i-1}     (zero a_ij skipped;
//!                  k_i = v(tmp, t_n + c_i*dt)                                 tmp = x if all zero)
//! x <- x + (dt*b_1) k_1 + ... + (dt*b_s) k_s                                 (zero b_i skipped)
//! ```
//!
//! Stage times: `c_i = 0` uses `t_n` and `c_i = 1` uses the grid point `t_{n+1}` itself (as
//! torchdiffeq's `rk4` does for its last stage); other stages use `t_n + c_i*dt` in f32.
//! Sums go through [`StateOps::lincomb`], which accumulates left to right, so results are
//! reproducible on every backend. With this order Euler and midpoint are bit-identical to
//! torchdiffeq's `euler` / `midpoint` in float32; `rk4-38` (torchdiffeq's `rk4`) differs only
//! by float rounding order (~1e-7 relative).
//!
//! # Memory
//!
//! Nothing is allocated. The caller provides [`Method::work_buffers`] state-sized buffers in a
//! [`Workspace`]: buffer 0 is a temporary state, buffers `1..=s` hold the stage velocities
//! `k_i`. The update ping-pongs between the caller's `x` and the temporary (no copy per step);
//! if the final state lands in the temporary it is copied into `x` once at the end.
//!
//! # Example
//!
//! ```
//! use flowrt::grid::Uniform;
//! use flowrt::solver::{integrate, Method, Workspace};
//! use flowrt::{CpuOps, Error, VelocityField};
//!
//! /// v(x, t) = target - x
//! struct Toward(f32);
//! impl VelocityField<CpuOps> for Toward {
//!     fn eval(&mut self, _: &mut CpuOps, _t: f32, x: &[f32], v: &mut [f32]) -> Result<(), Error> {
//!         for (v, x) in v.iter_mut().zip(x) {
//!             *v = self.0 - x;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let method = Method::Rk4_38; // torchdiffeq's "rk4"
//! let grid = Uniform::unit(8)?; // torch.linspace(0, 1, 9)
//! let mut x = [0.0f32; 4]; // noise in, sample out
//!
//! // Workspace from one flat f32 slice: work_buffers() x state length.
//! let mut flat = [0.0f32; 5 * 4];
//! assert_eq!(method.workspace_len(x.len()), Some(flat.len()));
//! let mut ws = Workspace::from_slice(&mut flat, x.len(), method.work_buffers())?;
//! integrate(&mut CpuOps, &mut Toward(1.0), method, &grid, &mut x, &mut ws)?;
//! assert!((x[0] - (1.0 - (-1.0f32).exp())).abs() < 1e-5);
//!
//! // ... or carved from a byte arena (the rest of the arena is handed back).
//! let mut arena = [0u8; 256];
//! let (mut ws, _rest) = Workspace::from_arena(&mut arena, x.len(), method.work_buffers())?;
//! integrate(&mut CpuOps, &mut Toward(1.0), method, &grid, &mut x, &mut ws)?;
//! # Ok::<(), Error>(())
//! ```
//!
//! # Errors and checks
//!
//! Before stepping: the tableau, the grid ([`grid::validate`]), the workspace size, and that
//! `x` is finite ([`Error::NonFiniteInput`]). After the last step: that the result is finite
//! ([`Error::NonFiniteOutput`]) — a single check, so GPU backends do not read back per step.
//! An error from the velocity field or the observer stops the integration and is returned
//! as is; `x` then holds an unspecified intermediate state.

use core::fmt;

pub use crate::method::Method;

use crate::field::{StateOps, VelocityField};
use crate::grid::{self, TimeGrid};
use crate::select::{self, All, Selection};
use crate::Error;

/// Most stages any tableau may have (room for Dormand–Prince's 7).
pub const MAX_STAGES: usize = 7;

/// Most buffers a [`Workspace`] holds: one temporary state plus [`MAX_STAGES`] stage buffers.
pub const MAX_WORK_BUFFERS: usize = MAX_STAGES + 1;

/// An explicit Runge–Kutta method as its Butcher tableau.
///
/// `a` is strictly lower triangular and stored by rows: row `i` (0-based) has exactly `i`
/// entries `a_i0 .. a_i,i-1`. `b` are the update weights and `c` the stage time fractions;
/// `a`, `b` and `c` all have one entry (row) per stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tableau<'a> {
    /// Stage coefficients, row `i` has `i` entries.
    pub a: &'a [&'a [f32]],
    /// Update weights, one per stage.
    pub b: &'a [f32],
    /// Stage times as fractions of the step, one per stage.
    pub c: &'a [f32],
}

/// f32 of `1/3` as Python's float `1/3` cast to float32 (what torchdiffeq multiplies by).
const ONE_THIRD: f32 = (1.0f64 / 3.0) as f32;
/// f32 of `2/3` as Python's float `2/3` cast to float32.
const TWO_THIRDS: f32 = (2.0f64 / 3.0) as f32;

/// Forward Euler (order 1, 1 stage).
pub const EULER: Tableau<'static> = Tableau {
    a: &[&[]],
    b: &[1.0],
    c: &[0.0],
};

/// Explicit midpoint (order 2, 2 stages): `x + dt * v(x + dt/2 * v(x, t), t + dt/2)`,
/// torchdiffeq's `midpoint`.
pub const MIDPOINT: Tableau<'static> = Tableau {
    a: &[&[], &[0.5]],
    b: &[0.0, 1.0],
    c: &[0.0, 0.5],
};

/// Heun's method / explicit trapezoid (order 2, 2 stages).
pub const HEUN: Tableau<'static> = Tableau {
    a: &[&[], &[1.0]],
    b: &[0.5, 0.5],
    c: &[0.0, 1.0],
};

/// Ralston's second-order method (order 2, 2 stages, minimal error bound).
pub const RALSTON: Tableau<'static> = Tableau {
    a: &[&[], &[TWO_THIRDS]],
    b: &[0.25, 0.75],
    c: &[0.0, TWO_THIRDS],
};

/// `1/6` for the classic RK4 weights, chosen as `(1 - 2·f32(1/3)) / 2` (exact in f32) so that
/// the four f32 weights sum to exactly 1: with `f32(1/6)` they would sum to `1 + 3e-8`, an
/// inconsistency that stops convergence at ~1e-8 relative error.
const RK4_SIXTH: f32 = (1.0 - 2.0 * ONE_THIRD) / 2.0;

/// The classic Runge–Kutta method (order 4, 4 stages, weights 1/6, 1/3, 1/3, 1/6 — rounded to
/// f32 so that they sum to exactly 1).
pub const RK4: Tableau<'static> = Tableau {
    a: &[&[], &[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
    b: &[RK4_SIXTH, ONE_THIRD, ONE_THIRD, RK4_SIXTH],
    c: &[0.0, 0.5, 0.5, 1.0],
};

/// Kutta's 3/8 rule (order 4, 4 stages) — what torchdiffeq's `method="rk4"` computes:
/// `k2 = v(x + dt/3 k1, t + dt/3)`, `k3 = v(x + dt(k2 - k1/3), t + 2dt/3)`,
/// `k4 = v(x + dt(k1 - k2 + k3), t_{n+1})`, `x + dt/8 (k1 + 3k2 + 3k3 + k4)`.
pub const RK4_38: Tableau<'static> = Tableau {
    a: &[&[], &[ONE_THIRD], &[-ONE_THIRD, 1.0], &[1.0, -1.0, 1.0]],
    b: &[0.125, 0.375, 0.375, 0.125],
    c: &[0.0, ONE_THIRD, TWO_THIRDS, 1.0],
};

impl Tableau<'_> {
    /// Number of stages (velocity evaluations per step).
    pub fn stages(&self) -> usize {
        self.b.len()
    }

    /// Checks the shape and values: 1..=[`MAX_STAGES`] stages, `a`/`b`/`c` of matching
    /// lengths, row `i` of `a` with exactly `i` entries, every coefficient finite.
    ///
    /// Consistency (`sum b = 1`, `c_i = sum_j a_ij`) is not required, so experimental
    /// tableaux can be run as given.
    ///
    /// Errors: [`Error::BadSolverConfig`] naming the violated rule.
    pub fn validate(&self) -> Result<(), Error> {
        let s = self.stages();
        if s == 0 || s > MAX_STAGES {
            return Err(Error::BadSolverConfig {
                what: "tableau must have 1 to 7 stages",
            });
        }
        if self.a.len() != s || self.c.len() != s {
            return Err(Error::BadSolverConfig {
                what: "tableau a, b and c differ in stage count",
            });
        }
        for (i, row) in self.a.iter().enumerate() {
            if row.len() != i {
                return Err(Error::BadSolverConfig {
                    what: "tableau row i of a must have i entries",
                });
            }
            if !row.iter().all(|v| v.is_finite()) {
                return Err(Error::BadSolverConfig {
                    what: "tableau coefficient is not finite",
                });
            }
        }
        if !self.b.iter().chain(self.c).all(|v| v.is_finite()) {
            return Err(Error::BadSolverConfig {
                what: "tableau coefficient is not finite",
            });
        }
        Ok(())
    }
}

/// torchdyn 1.0.6's `rk4` (what torchcfm's tutorials sample with through `NeuralODE`):
/// classic RK4 coefficients, but its stepper reads the stage times with an index slip —
/// `k2` at `t`, `k3` and `k4` at `t + dt/2` — so its outputs differ from classic RK4 by
/// O(dt). Reproduced on request (`rk4-torchdyn`) so such samples can be matched.
pub const RK4_TORCHDYN: Tableau<'static> = Tableau {
    a: &[&[], &[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
    b: &[RK4_SIXTH, ONE_THIRD, ONE_THIRD, RK4_SIXTH],
    c: &[0.0, 0.0, 0.5, 0.5],
};

/// How a [`Method`] steps: the loop that runs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scheme {
    /// An explicit Runge–Kutta method, run by [`integrate_tableau`].
    RungeKutta(&'static Tableau<'static>),
    /// Adams–Bashforth of this order (2..=4), run by [`multistep::adams_bashforth`].
    AdamsBashforth(usize),
    /// FlowTurbo's pseudo-corrector, run by [`multistep::heun_reuse`].
    HeunReuse,
    /// Adaptive Dormand–Prince 5(4), run by [`adaptive::dopri5`].
    Dopri5,
}

impl Method {
    /// The loop that runs this method.
    pub fn scheme(self) -> Scheme {
        match self {
            Method::Euler => Scheme::RungeKutta(&EULER),
            Method::Midpoint => Scheme::RungeKutta(&MIDPOINT),
            Method::Heun => Scheme::RungeKutta(&HEUN),
            Method::Ralston => Scheme::RungeKutta(&RALSTON),
            Method::Rk4 => Scheme::RungeKutta(&RK4),
            Method::Rk4_38 => Scheme::RungeKutta(&RK4_38),
            Method::Rk4Torchdyn => Scheme::RungeKutta(&RK4_TORCHDYN),
            Method::Ab2 => Scheme::AdamsBashforth(2),
            Method::Ab3 => Scheme::AdamsBashforth(3),
            Method::Ab4 => Scheme::AdamsBashforth(4),
            Method::HeunReuse => Scheme::HeunReuse,
            Method::Dopri5 => Scheme::Dopri5,
        }
    }

    /// The Butcher tableau of a Runge–Kutta method; `None` for the multistep and adaptive
    /// methods.
    pub fn tableau(self) -> Option<&'static Tableau<'static>> {
        match self.scheme() {
            Scheme::RungeKutta(t) => Some(t),
            _ => None,
        }
    }

    /// Velocity evaluations per step of a Runge–Kutta method (1 for the multistep methods,
    /// 7 per attempted step for dopri5, which reuses the last one when a step is accepted).
    pub fn stages(self) -> usize {
        match self.scheme() {
            Scheme::RungeKutta(t) => t.stages(),
            Scheme::AdamsBashforth(_) | Scheme::HeunReuse => 1,
            Scheme::Dopri5 => 7,
        }
    }

    /// Velocity evaluations a fixed-step method makes over `steps` steps (`steps + 1` for
    /// `heun-reuse`); `None` for dopri5, whose count depends on the tolerances.
    pub fn evaluations(self, steps: usize) -> Option<usize> {
        match self.scheme() {
            Scheme::RungeKutta(t) => steps.checked_mul(t.stages()),
            Scheme::AdamsBashforth(_) => Some(steps),
            Scheme::HeunReuse => steps.checked_add(1),
            Scheme::Dopri5 => None,
        }
    }

    /// How many state-sized buffers [`integrate`] needs in its [`Workspace`]: one temporary
    /// state plus the stage velocities (RK: `stages()`, AB-k: `k`, heun-reuse: 2,
    /// dopri5: 7).
    pub fn work_buffers(self) -> usize {
        match self.scheme() {
            Scheme::RungeKutta(t) => t.stages() + 1,
            Scheme::AdamsBashforth(k) => k + 1,
            Scheme::HeunReuse => 3,
            Scheme::Dopri5 => MAX_WORK_BUFFERS,
        }
    }

    /// f32 elements of workspace for a state of `state_len` elements
    /// (`work_buffers() * state_len`); `None` on overflow.
    pub fn workspace_len(self, state_len: usize) -> Option<usize> {
        self.work_buffers().checked_mul(state_len)
    }

    /// Bytes of arena that [`Workspace::from_arena`] needs for a state of `state_len`
    /// elements, including up to 3 bytes of alignment padding; `None` on overflow.
    pub fn workspace_bytes(self, state_len: usize) -> Option<usize> {
        self.workspace_len(state_len)?
            .checked_mul(4)?
            .checked_add(3)
    }
}

/// The caller-provided state-sized buffers a solver works in (no allocation).
///
/// Buffer 0 is the temporary state, buffers 1.. the stage velocities; a method needs
/// [`Method::work_buffers`] of them, each the same size as the state. Build one with
/// [`Workspace::new`] + [`Workspace::push`] (any backend), or for CPU slices with
/// [`Workspace::from_slice`] (one flat `&mut [f32]`) or [`Workspace::from_arena`] (bytes).
/// It can be reused for any number of integrations.
pub struct Workspace<'a, B: ?Sized> {
    bufs: [Option<&'a mut B>; MAX_WORK_BUFFERS],
    len: usize,
}

impl<B: ?Sized> fmt::Debug for Workspace<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workspace")
            .field("buffers", &self.len)
            .finish()
    }
}

impl<B: ?Sized> Default for Workspace<'_, B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a, B: ?Sized> Workspace<'a, B> {
    /// An empty workspace.
    pub const fn new() -> Self {
        Workspace {
            bufs: [const { None }; MAX_WORK_BUFFERS],
            len: 0,
        }
    }

    /// Adds one state-sized buffer.
    ///
    /// Errors: [`Error::BadSolverConfig`] when it already holds [`MAX_WORK_BUFFERS`].
    pub fn push(&mut self, buf: &'a mut B) -> Result<(), Error> {
        let slot = self.bufs.get_mut(self.len).ok_or(Error::BadSolverConfig {
            what: "workspace holds at most 8 buffers",
        })?;
        *slot = Some(buf);
        self.len += 1;
        Ok(())
    }

    /// Number of buffers held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when no buffer was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first two buffers; `None` when it holds fewer.
    pub fn first_two_mut(&mut self) -> Option<(&mut B, &mut B)> {
        match &mut self.bufs {
            [Some(a), Some(b), ..] => Some((&mut **a, &mut **b)),
            _ => None,
        }
    }

    /// The first buffer, consuming the workspace (e.g. to use an arena-carved buffer as
    /// plain scratch); `None` when it is empty.
    pub fn into_first(self) -> Option<&'a mut B> {
        let [first, ..] = self.bufs;
        first
    }
}

impl<'a> Workspace<'a, [f32]> {
    /// Splits `flat` into `count` consecutive buffers of `state_len` f32 each (any elements
    /// past `count * state_len` are left unused). `count` is usually
    /// [`Method::work_buffers`], and `flat` then [`Method::workspace_len`] long.
    ///
    /// Errors: [`Error::BadSolverConfig`] if `state_len` is 0 or `count` exceeds
    /// [`MAX_WORK_BUFFERS`]; [`Error::ShapeMismatch`] if `flat` is too short.
    pub fn from_slice(flat: &'a mut [f32], state_len: usize, count: usize) -> Result<Self, Error> {
        if state_len == 0 {
            return Err(Error::BadSolverConfig {
                what: "workspace state length is zero",
            });
        }
        if count > MAX_WORK_BUFFERS {
            return Err(Error::BadSolverConfig {
                what: "workspace holds at most 8 buffers",
            });
        }
        let needed = state_len * count; // <= 8 * state_len, and state_len <= flat.len() if it fits
        if flat.len() < needed {
            return Err(Error::ShapeMismatch {
                what: "solver workspace",
                expected: needed,
                found: flat.len(),
            });
        }
        let mut ws = Workspace::new();
        for chunk in flat.chunks_exact_mut(state_len).take(count) {
            ws.push(chunk)?;
        }
        Ok(ws)
    }

    /// Carves `count` buffers of `state_len` f32 from the front of a byte arena (after
    /// skipping 0–3 bytes to reach 4-byte alignment) and returns them with the unused rest of
    /// the arena. [`Method::workspace_bytes`] gives the size needed for
    /// `count = Method::work_buffers()`.
    ///
    /// Errors: [`Error::BadSolverConfig`] as [`Workspace::from_slice`];
    /// [`Error::ArenaTooSmall`] if the arena cannot hold them.
    pub fn from_arena(
        arena: &'a mut [u8],
        state_len: usize,
        count: usize,
    ) -> Result<(Self, &'a mut [u8]), Error> {
        if state_len == 0 {
            return Err(Error::BadSolverConfig {
                what: "workspace state length is zero",
            });
        }
        if count > MAX_WORK_BUFFERS {
            return Err(Error::BadSolverConfig {
                what: "workspace holds at most 8 buffers",
            });
        }
        let given = arena.len();
        let floats = state_len.checked_mul(count).ok_or(Error::ArenaTooSmall {
            needed: usize::MAX,
            given,
        })?;
        let bytes = floats.checked_mul(4).ok_or(Error::ArenaTooSmall {
            needed: usize::MAX,
            given,
        })?;
        let pad = arena.as_ptr().align_offset(core::mem::align_of::<f32>());
        let needed = bytes.checked_add(pad).ok_or(Error::ArenaTooSmall {
            needed: usize::MAX,
            given,
        })?;
        let (_, aligned) = arena
            .split_at_mut_checked(pad)
            .ok_or(Error::ArenaTooSmall { needed, given })?;
        let (head, rest) = aligned
            .split_at_mut_checked(bytes)
            .ok_or(Error::ArenaTooSmall { needed, given })?;
        // SAFETY: every bit pattern is a valid f32 and f32 has no padding, so viewing
        // initialised bytes as f32 is sound; `align_to_mut` only returns a middle slice that is
        // correctly aligned and lies within `head`, and `head` is exclusively borrowed for 'a.
        let (pre, head_f32, post) = unsafe { head.align_to_mut::<f32>() };
        if !pre.is_empty() || !post.is_empty() || head_f32.len() != floats {
            return Err(Error::Misaligned);
        }
        let ws = Self::from_slice(head_f32, state_len, count)?;
        Ok((ws, rest))
    }
}

/// Step hooks: receives control after every velocity evaluation and after every completed
/// step, and may change what the solver sees (steering and editing methods such as FlowChef,
/// progress reporting, trajectory recording, early abort). No allocation is involved;
/// [`NoObserver`] does nothing, [`FnObserver`] adapts a closure `FnMut(step, t)`.
pub trait StepObserver<S: StateOps + ?Sized> {
    /// Called after every velocity evaluation of step `step` (0-based) at time `t` on the
    /// stage state `x`; `v` is the velocity just computed and may be modified in place (the
    /// solver uses the modified value). The default does nothing.
    ///
    /// Errors: returning an error stops the integration and [`integrate`] returns it.
    fn on_velocity(
        &mut self,
        ops: &mut S,
        step: usize,
        t: f32,
        x: &S::Buf,
        v: &mut S::Buf,
    ) -> Result<(), Error> {
        let _ = (ops, step, t, x, v);
        Ok(())
    }

    /// Called after step `step` (0-based) has moved the state to time `t` (the grid point
    /// `t_{step+1}`); `x` is the state there and may be modified in place (the next step
    /// starts from the modified state).
    ///
    /// Errors: returning an error stops the integration and [`integrate`] returns it.
    fn on_step(&mut self, ops: &mut S, step: usize, t: f32, x: &mut S::Buf) -> Result<(), Error>;
}

/// A [`StepObserver`] that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl<S: StateOps + ?Sized> StepObserver<S> for NoObserver {
    fn on_step(&mut self, _: &mut S, _: usize, _: f32, _: &mut S::Buf) -> Result<(), Error> {
        Ok(())
    }
}

/// A [`StepObserver`] calling a closure with `(step, t)` after each step.
#[derive(Debug, Clone, Copy)]
pub struct FnObserver<F>(pub F);

impl<S: StateOps + ?Sized, F: FnMut(usize, f32)> StepObserver<S> for FnObserver<F> {
    fn on_step(&mut self, _: &mut S, step: usize, t: f32, _: &mut S::Buf) -> Result<(), Error> {
        (self.0)(step, t);
        Ok(())
    }
}

/// Evaluates the field into `v` and hands the result to the observer's velocity hook.
pub(crate) fn eval_hooked<S, F>(
    ops: &mut S,
    field: &mut F,
    observer: &mut dyn StepObserver<S>,
    step: usize,
    t: f32,
    x: &S::Buf,
    v: &mut S::Buf,
) -> Result<(), Error>
where
    S: StateOps + ?Sized,
    F: VelocityField<S> + ?Sized,
{
    field.eval(ops, t, x, v)?;
    observer.on_velocity(ops, step, t, x, v)
}

/// Integrates `x` in place along `grid` with a built-in `method`.
///
/// `x` holds the initial state (e.g. noise at `t_0`) and receives the state at the last grid
/// point. `work` must hold at least [`Method::work_buffers`] buffers of the state's size.
/// [`Method::Dopri5`] runs with torchdiffeq's default tolerances (see
/// [`adaptive::Tolerances`]); use [`adaptive::dopri5`] to choose them.
///
/// Errors: [`Error::BadSolverConfig`] (grid without steps, workspace too small),
/// [`Error::NonFiniteInput`] (non-finite `x` or grid point), [`Error::NonFiniteOutput`]
/// (the result is not finite), or whatever the velocity field returns.
pub fn integrate<S, F>(
    ops: &mut S,
    field: &mut F,
    method: Method,
    grid: &dyn TimeGrid,
    x: &mut S::Buf,
    work: &mut Workspace<'_, S::Buf>,
) -> Result<(), Error>
where
    S: StateOps + ?Sized,
    F: VelocityField<S> + ?Sized,
{
    integrate_observed(ops, field, method, grid, x, work, &mut NoObserver)
}

/// [`integrate`] with a [`StepObserver`] called after every velocity evaluation and step.
///
/// Errors: as [`integrate`], plus any error the observer returns.
pub fn integrate_observed<S, F>(
    ops: &mut S,
    field: &mut F,
    method: Method,
    grid: &dyn TimeGrid,
    x: &mut S::Buf,
    work: &mut Workspace<'_, S::Buf>,
    observer: &mut dyn StepObserver<S>,
) -> Result<(), Error>
where
    S: StateOps + ?Sized,
    F: VelocityField<S> + ?Sized,
{
    integrate_selected::<All, S, F>(ops, field, method, grid, x, work, observer)
}

/// [`integrate_observed`] with the methods `L` links ([`crate::select`]): the loops of the
/// others are not compiled in, and asking for one returns [`Error::NotLinked`].
///
/// Errors: as [`integrate_observed`], plus [`Error::NotLinked`].
pub fn integrate_selected<L, S, F>(
    ops: &mut S,
    field: &mut F,
    method: Method,
    grid: &dyn TimeGrid,
    x: &mut S::Buf,
    work: &mut Workspace<'_, S::Buf>,
    observer: &mut dyn StepObserver<S>,
) -> Result<(), Error>
where
    L: Selection,
    S: StateOps + ?Sized,
    F: VelocityField<S> + ?Sized,
{
    if !select::has_method::<L>(method) {
        return Err(select::not_linked(method.name()));
    }
    use select::method_bit as bit;
    // The methods of each loop, as `Selection::METHODS` bits.
    const RK: u32 = bit(Method::Euler)
        | bit(Method::Midpoint)
        | bit(Method::Heun)
        | bit(Method::Ralston)
        | bit(Method::Rk4)
        | bit(Method::Rk4_38)
        | bit(Method::Rk4Torchdyn);
    const AB: u32 = bit(Method::Ab2) | bit(Method::Ab3) | bit(Method::Ab4);
    let linked = |bits: u32| L::METHODS & bits != 0;
    match method.scheme() {
        Scheme::RungeKutta(tableau) if linked(RK) => {
            integrate_tableau(ops, field, tableau, grid, x, work, observer)
        }
        Scheme::AdamsBashforth(order) if linked(AB) => {
            multistep::adams_bashforth(ops, field, order, grid, x, work, observer)
        }
        Scheme::HeunReuse if linked(bit(Method::HeunReuse)) => {
            multistep::heun_reuse(ops, field, grid, x, work, observer)
        }
        Scheme::Dopri5 if linked(bit(Method::Dopri5)) => adaptive::dopri5(
            ops,
            field,
            &adaptive::Tolerances::default(),
            grid,
            x,
            work,
            observer,
        )
        .map(|_| ()),
        _ => Err(select::not_linked(method.name())),
    }
}

/// Checks the grid, the workspace size and the initial state (what every loop checks first).
pub(crate) fn check_start<S: StateOps + ?Sized>(
    ops: &mut S,
    grid: &dyn TimeGrid,
    x: &S::Buf,
    work: &Workspace<'_, S::Buf>,
    buffers: usize,
) -> Result<(), Error> {
    grid::validate(grid)?;
    if work.len() < buffers {
        return Err(NO_BUFFER);
    }
    if !ops.all_finite(x) {
        return Err(Error::NonFiniteInput {
            what: "initial state",
        });
    }
    Ok(())
}

/// Copies the result into `x` if it ended in the temporary, and checks that it is finite.
pub(crate) fn finish<S: StateOps + ?Sized>(
    ops: &mut S,
    x: &mut S::Buf,
    tmp: &S::Buf,
    result_in_tmp: bool,
) -> Result<(), Error> {
    if result_in_tmp {
        ops.copy(x, tmp);
    }
    if !ops.all_finite(x) {
        return Err(Error::NonFiniteOutput {
            what: "solver result",
        });
    }
    Ok(())
}

pub(crate) const NO_BUFFER: Error = Error::BadSolverConfig {
    what: "workspace has fewer buffers than the method needs",
};
pub(crate) const NO_POINT: Error = Error::BadSolverConfig {
    what: "time grid is missing a point",
};

/// Where a step of a fixed-grid method goes: step `n` (0-based) from `t0` to `t1`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub n: usize,
    pub t0: f32,
    pub t1: f32,
}

/// The loop every fixed-grid method shares: checks the start ([`check_start`] with
/// `buffers` workspace buffers), then for every grid interval calls `step(ops, observer,
/// step, cur, nxt, slots)`, which must write the next state into `nxt` (it may use `nxt` as
/// scratch before that) and may use the `buffers - 1` method buffers `slots` freely; the two
/// states swap, the observer's `on_step` runs, and at the end the result is copied into `x`
/// and checked ([`finish`]).
///
/// Errors: as [`integrate_observed`], plus whatever `step` returns.
pub(crate) fn fixed_grid_loop<S: StateOps + ?Sized>(
    ops: &mut S,
    grid: &dyn TimeGrid,
    x: &mut S::Buf,
    work: &mut Workspace<'_, S::Buf>,
    buffers: usize,
    observer: &mut dyn StepObserver<S>,
    mut step: impl FnMut(
        &mut S,
        &mut dyn StepObserver<S>,
        Step,
        &S::Buf,
        &mut S::Buf,
        &mut [Option<&mut S::Buf>],
    ) -> Result<(), Error>,
) -> Result<(), Error> {
    check_start(ops, grid, x, work, buffers)?;
    let (tmp_slot, slots) = work.bufs.split_first_mut().ok_or(NO_BUFFER)?;
    let tmp: &mut S::Buf = tmp_slot.as_deref_mut().ok_or(NO_BUFFER)?;
    let slots = slots.get_mut(..buffers - 1).ok_or(NO_BUFFER)?;

    // `cur` holds the current state, `nxt` is scratch; they swap after every step.
    let mut result_in_tmp = false;
    {
        let mut cur: &mut S::Buf = &mut *x;
        let mut nxt: &mut S::Buf = &mut *tmp;
        for n in 0..grid.steps() {
            let t0 = grid.point(n).ok_or(NO_POINT)?;
            let t1 = grid.point(n + 1).ok_or(NO_POINT)?;
            step(
                ops,
                &mut *observer,
                Step { n, t0, t1 },
                &*cur,
                &mut *nxt,
                &mut *slots,
            )?;
            core::mem::swap(&mut cur, &mut nxt);
            result_in_tmp = !result_in_tmp;

            observer.on_step(ops, n, t1, &mut *cur)?;
            #[cfg(feature = "defmt")]
            defmt::debug!("flowrt: step {=usize} done, t = {=f32}", n, t1);
        }
    }
    finish(ops, x, &*tmp, result_in_tmp)
}

/// The stepping loop shared by every explicit Runge–Kutta method (see the module docs for the
/// exact arithmetic). `work` must hold at least `tableau.stages() + 1` buffers.
///
/// Errors: as [`integrate_observed`], plus [`Error::BadSolverConfig`] for a malformed
/// tableau ([`Tableau::validate`]).
pub fn integrate_tableau<S, F>(
    ops: &mut S,
    field: &mut F,
    tableau: &Tableau<'_>,
    grid: &dyn TimeGrid,
    x: &mut S::Buf,
    work: &mut Workspace<'_, S::Buf>,
    observer: &mut dyn StepObserver<S>,
) -> Result<(), Error>
where
    S: StateOps + ?Sized,
    F: VelocityField<S> + ?Sized,
{
    tableau.validate()?;
    let stages = tableau.stages();
    fixed_grid_loop(
        ops,
        grid,
        x,
        work,
        stages + 1,
        observer,
        |ops, observer, s, cur, nxt, ks| {
            let dt = s.t1 - s.t0;
            for (i, (row, &ci)) in tableau.a.iter().zip(tableau.c).enumerate() {
                let t = if ci == 0.0 {
                    s.t0
                } else if ci == 1.0 {
                    s.t1
                } else {
                    s.t0 + ci * dt
                };
                let (done, rest) = ks.split_at_mut_checked(i).ok_or(NO_BUFFER)?;
                let ki: &mut S::Buf = rest
                    .first_mut()
                    .and_then(|k| k.as_deref_mut())
                    .ok_or(NO_BUFFER)?;
                let mut terms: [(f32, &S::Buf); MAX_STAGES] = [(0.0, cur); MAX_STAGES];
                let count = collect_terms(&mut terms, row, done, dt)?;
                if count == 0 {
                    eval_hooked(ops, field, observer, s.n, t, cur, ki)?;
                } else {
                    ops.lincomb(nxt, cur, terms.get(..count).ok_or(NO_BUFFER)?);
                    eval_hooked(ops, field, observer, s.n, t, &*nxt, ki)?;
                }
            }
            let mut terms: [(f32, &S::Buf); MAX_STAGES] = [(0.0, cur); MAX_STAGES];
            let count = collect_terms(&mut terms, tableau.b, ks, dt)?;
            ops.lincomb(nxt, cur, terms.get(..count).ok_or(NO_BUFFER)?);
            Ok(())
        },
    )
}

/// Fills `terms` with `(dt * coef_j, k_j)` for every nonzero `coef_j`, in order; returns how
/// many were written.
fn collect_terms<'k, B: ?Sized>(
    terms: &mut [(f32, &'k B); MAX_STAGES],
    coefs: &[f32],
    ks: &'k [Option<&mut B>],
    dt: f32,
) -> Result<usize, Error> {
    let mut count = 0;
    for (&coef, k) in coefs.iter().zip(ks) {
        if coef == 0.0 {
            continue;
        }
        let k: &B = k.as_deref().ok_or(NO_BUFFER)?;
        let slot = terms.get_mut(count).ok_or(NO_BUFFER)?;
        *slot = (dt * coef, k);
        count += 1;
    }
    Ok(count)
}

pub mod adaptive;
pub mod multistep;

#[cfg(test)]
mod tests;
