//! One call from noise to samples on the CPU: the model's velocity field, a solver and a time
//! grid over one caller-supplied arena.
//!
//! ```text
//! arena = [ graph arena + field scratch | solver workspace (stages + temp) ]
//!           Model::required_arena_bytes   Method::workspace_bytes(batch * D)
//! ```

use crate::exec::CpuField;
use crate::field::{Conditioning, CpuOps};
use crate::grid::TimeGrid;
use crate::run::{run, run_selected, Buffers, Facts, Request};
use crate::select::{All, Selection};
use crate::solver::{Method, StepObserver, Workspace};
use crate::{Error, Model};

const OVERFLOW: Error = Error::BadArgument {
    what: "batch size overflows",
};

/// `field` rounded up to 16 (so what follows starts aligned) + `extra` + the solver
/// workspace of `method` for `batch` rows of `state_dim`.
pub(crate) fn arena_with_workspace(
    field: usize,
    extra: usize,
    method: Method,
    batch: usize,
    state_dim: usize,
) -> Result<usize, Error> {
    let state_len = batch.checked_mul(state_dim).ok_or(OVERFLOW)?;
    let work = method.workspace_bytes(state_len).ok_or(OVERFLOW)?;
    field
        .checked_add(15)
        .map(|f| f & !15)
        .and_then(|f| f.checked_add(extra))
        .and_then(|f| f.checked_add(work))
        .ok_or(OVERFLOW)
}

/// The number of rows of `x` (a whole number of rows of `dim` values, at least one), and
/// that `arena` has at least `needed` bytes.
pub(crate) fn check_rows_and_arena(
    x: &[f32],
    dim: usize,
    arena: &[u8],
    needed: impl FnOnce(usize) -> Result<usize, Error>,
) -> Result<usize, Error> {
    if x.is_empty() || x.len().checked_rem(dim) != Some(0) {
        return Err(Error::ShapeMismatch {
            what: "state (a whole number of rows of state_dim values)",
            expected: dim,
            found: x.len(),
        });
    }
    let batch = x.len() / dim;
    let needed = needed(batch)?;
    if arena.len() < needed {
        return Err(Error::ArenaTooSmall {
            needed,
            given: arena.len(),
        });
    }
    Ok(batch)
}

/// Arena bytes [`sample`] needs for `batch` rows with `method`.
///
/// Errors: [`Error::BadArgument`] when the sizes overflow `usize`.
pub fn sample_arena_bytes(model: &Model<'_>, method: Method, batch: usize) -> Result<usize, Error> {
    let field = model.required_arena_bytes(batch)?;
    arena_with_workspace(field, 0, method, batch, model.state_dim())
}

/// Integrates `x` (noise in, samples out; `batch * state_dim` values, row-major) along
/// `grid` with `method`, evaluating the model on the CPU. The grid is in the model's own
/// time ([`Model::time_convention`]: build it with [`crate::grid::GridSpec::build`] on the
/// model's axis); the network sees the time scaled as the convention says.
///
/// Errors: `x` not a whole number of rows ([`Error::ShapeMismatch`]), arena too small or
/// misaligned, NaN/infinite noise ([`Error::NonFiniteInput`]), or a non-finite result.
pub fn sample(
    model: &Model<'_>,
    method: Method,
    grid: &dyn TimeGrid,
    x: &mut [f32],
    arena: &mut [u8],
) -> Result<(), Error> {
    sample_observed(
        model,
        method,
        grid,
        x,
        arena,
        &mut crate::solver::NoObserver,
    )
}

/// [`sample`] for a model with conditioning inputs (`label`, `cond`, `guidance`): `cond` is
/// fixed over the whole integration and sized for the batch `x.len() / state_dim` (see
/// [`CpuField::eval_cond`]). Same arena size as [`sample`] ([`sample_arena_bytes`]).
///
/// Errors: as [`sample`], plus those of [`CpuField::eval_cond`] (missing or extra
/// conditioning, wrong lengths, label out of range, non-finite values).
pub fn sample_cond(
    model: &Model<'_>,
    method: Method,
    grid: &dyn TimeGrid,
    x: &mut [f32],
    cond: &Conditioning<'_>,
    arena: &mut [u8],
) -> Result<(), Error> {
    sample_cond_observed(
        model,
        method,
        grid,
        x,
        cond,
        arena,
        &mut crate::solver::NoObserver,
    )
}

/// [`sample`] with a per-step observer (progress, trajectories).
///
/// Errors: as [`sample`], plus whatever the observer returns.
pub fn sample_observed(
    model: &Model<'_>,
    method: Method,
    grid: &dyn TimeGrid,
    x: &mut [f32],
    arena: &mut [u8],
    observer: &mut dyn StepObserver<CpuOps>,
) -> Result<(), Error> {
    sample_cond_observed(
        model,
        method,
        grid,
        x,
        &Conditioning::default(),
        arena,
        observer,
    )
}

/// [`sample_cond`] with a per-step observer.
///
/// Errors: as [`sample_cond`], plus whatever the observer returns.
pub fn sample_cond_observed(
    model: &Model<'_>,
    method: Method,
    grid: &dyn TimeGrid,
    x: &mut [f32],
    cond: &Conditioning<'_>,
    arena: &mut [u8],
    observer: &mut dyn StepObserver<CpuOps>,
) -> Result<(), Error> {
    sample_selected::<All>(model, method, grid, x, cond, arena, observer)
}

/// [`sample`] linking only the op kernels and solvers of `S` ([`crate::select`]): what a
/// firmware specialised for its model calls, with the [`Selection`] its build script
/// generated. Same results as [`sample`] for every model and method `S` links.
///
/// Errors: as [`sample`], plus [`Error::NotLinked`] when the model or `method` needs
/// something `S` leaves out.
pub fn sample_with<S: Selection>(
    model: &Model<'_>,
    method: Method,
    grid: &dyn TimeGrid,
    x: &mut [f32],
    arena: &mut [u8],
) -> Result<(), Error> {
    sample_cond_with::<S>(model, method, grid, x, &Conditioning::default(), arena)
}

/// [`sample_cond`] linking only what `S` selects (see [`sample_with`]).
///
/// Errors: as [`sample_cond`], plus [`Error::NotLinked`].
pub fn sample_cond_with<S: Selection>(
    model: &Model<'_>,
    method: Method,
    grid: &dyn TimeGrid,
    x: &mut [f32],
    cond: &Conditioning<'_>,
    arena: &mut [u8],
) -> Result<(), Error> {
    sample_selected::<S>(
        model,
        method,
        grid,
        x,
        cond,
        arena,
        &mut crate::solver::NoObserver,
    )
}

/// [`sample_cond_observed`] linking only what `S` selects.
///
/// Errors: as [`sample_cond_observed`], plus [`Error::NotLinked`].
pub fn sample_selected<S: Selection>(
    model: &Model<'_>,
    method: Method,
    grid: &dyn TimeGrid,
    x: &mut [f32],
    cond: &Conditioning<'_>,
    arena: &mut [u8],
    observer: &mut dyn StepObserver<CpuOps>,
) -> Result<(), Error> {
    let dim = model.state_dim();
    let batch = check_rows_and_arena(x, dim, arena, |b| sample_arena_bytes(model, method, b))?;
    let field_bytes = (model.required_arena_bytes(batch)? + 15) & !15;
    let (field_arena, work_arena) = arena.split_at_mut(field_bytes);
    let (work, _) = Workspace::from_arena(work_arena, x.len(), method.work_buffers())?;
    let mut net = CpuField::<S>::new_selected(model, batch, field_arena)?;
    let req = Request {
        method,
        grid,
        tol: Default::default(),
        cond: *cond,
        guidance: None,
    };
    let mut bufs = Buffers { work, guided: None };
    run_selected::<S, _, _>(
        &mut CpuOps,
        &mut net,
        &Facts::of(model),
        &req,
        x,
        &mut bufs,
        observer,
    )
    .map(|_| ())
}

/// Arena bytes [`sample_guided`] needs for `batch` rows with `method`: the graph arena for
/// `2·batch` rows, the two `2·batch`-row guidance buffers, and the solver workspace.
///
/// Errors: [`Error::BadArgument`] when the sizes overflow `usize`.
pub fn guided_arena_bytes(model: &Model<'_>, method: Method, batch: usize) -> Result<usize, Error> {
    let rows2 = batch.checked_mul(2).ok_or(OVERFLOW)?;
    let field = model.required_arena_bytes(rows2)?;
    let scratch = crate::guidance::scratch_len(batch, model.state_dim())
        .and_then(|n| n.checked_mul(8))
        .ok_or(OVERFLOW)?;
    arena_with_workspace(field, scratch, method, batch, model.state_dim())
}

/// Classifier-free guidance sampling on the CPU ([`crate::guidance`]): `x` holds `batch`
/// rows of noise and receives the samples; `doubled` the conditioning of `2·batch` rows
/// (the conditional rows, then the unconditional ones, e.g. labels `[y; null]`).
///
/// Errors: as [`sample`], plus invalid guidance and conditioning of the wrong size.
pub fn sample_guided(
    model: &Model<'_>,
    method: Method,
    grid: &dyn TimeGrid,
    x: &mut [f32],
    doubled: &Conditioning<'_>,
    guidance: &crate::guidance::Guidance,
    arena: &mut [u8],
) -> Result<(), Error> {
    let dim = model.state_dim();
    let batch = check_rows_and_arena(x, dim, arena, |b| guided_arena_bytes(model, method, b))?;
    let field_bytes = (model.required_arena_bytes(batch * 2)? + 15) & !15;
    let (field_arena, rest) = arena.split_at_mut(field_bytes);
    let n2 = crate::guidance::scratch_len(batch, dim).ok_or(Error::BadArgument {
        what: "batch size overflows",
    })?;
    let (x2, rest) = Workspace::from_arena(rest, n2, 1)?;
    let (v2, work_arena) = Workspace::from_arena(rest, n2, 1)?;
    let (work, _) = Workspace::from_arena(work_arena, x.len(), method.work_buffers())?;
    let (Some(x2), Some(v2)) = (x2.into_first(), v2.into_first()) else {
        return Err(Error::ArenaTooSmall {
            needed: guided_arena_bytes(model, method, batch)?,
            given: 0,
        });
    };
    let mut net = CpuField::new(model, batch * 2, field_arena)?;
    let req = Request {
        method,
        grid,
        tol: Default::default(),
        cond: Conditioning::default(),
        guidance: Some((*guidance, *doubled)),
    };
    let mut bufs = Buffers {
        work,
        guided: Some([x2, v2]),
    };
    run(
        &mut CpuOps,
        &mut net,
        &Facts::of(model),
        &req,
        x,
        &mut bufs,
        &mut crate::solver::NoObserver,
    )
    .map(|_| ())
}
