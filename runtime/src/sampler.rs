//! One call from noise to samples on the CPU: the model's velocity field, a solver and a time
//! grid over one caller-supplied arena.
//!
//! ```text
//! arena = [ graph arena + field scratch | solver workspace (stages + temp) ]
//!           Model::required_arena_bytes   Method::workspace_bytes(batch * D)
//! ```

use crate::exec::CpuField;
use crate::field::CpuOps;
use crate::grid::TimeGrid;
use crate::solver::{integrate_observed, Method, StepObserver, Workspace};
use crate::time::ConventionField;
use crate::{Error, Model};

/// Arena bytes [`sample`] needs for `batch` rows with `method`.
///
/// Errors: [`Error::BadArgument`] when the sizes overflow `usize`.
pub fn sample_arena_bytes(model: &Model<'_>, method: Method, batch: usize) -> Result<usize, Error> {
    let field = model.required_arena_bytes(batch)?;
    let state_len = batch
        .checked_mul(model.state_dim())
        .ok_or(Error::BadArgument {
            what: "batch size overflows",
        })?;
    let work = method
        .workspace_bytes(state_len)
        .ok_or(Error::BadArgument {
            what: "batch size overflows",
        })?;
    // Round the field part up to 16 so the workspace starts aligned.
    field
        .checked_add(15)
        .map(|f| f & !15)
        .and_then(|f| f.checked_add(work))
        .ok_or(Error::BadArgument {
            what: "batch size overflows",
        })
}

/// Integrates `x` (noise in, samples out; `batch * state_dim` values, row-major) along
/// `grid` with `method`, evaluating the model on the CPU. The grid is in the model's own
/// time ([`Model::time_convention`]: build it with [`crate::grid::GridSpec::build`] on the
/// model's axis); the network sees the time scaled as the convention says.
///
/// Errors: `x` not a whole number of rows ([`Error::ShapeMismatch`]), arena too small or
/// misaligned, NaN/infinite noise ([`Error::NonFiniteInput`]), or a non-finite result.
pub fn sample<G: TimeGrid + ?Sized>(
    model: &Model<'_>,
    method: Method,
    grid: &G,
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

/// [`sample`] with a per-step observer (progress, trajectories).
///
/// Errors: as [`sample`], plus whatever the observer returns.
pub fn sample_observed<G: TimeGrid + ?Sized, O: StepObserver<CpuOps> + ?Sized>(
    model: &Model<'_>,
    method: Method,
    grid: &G,
    x: &mut [f32],
    arena: &mut [u8],
    observer: &mut O,
) -> Result<(), Error> {
    let dim = model.state_dim();
    if x.is_empty() || x.len().checked_rem(dim) != Some(0) {
        return Err(Error::ShapeMismatch {
            what: "state (a whole number of rows of state_dim values)",
            expected: dim,
            found: x.len(),
        });
    }
    let batch = x.len() / dim;
    let needed = sample_arena_bytes(model, method, batch)?;
    if arena.len() < needed {
        return Err(Error::ArenaTooSmall {
            needed,
            given: arena.len(),
        });
    }
    let field_bytes = (model.required_arena_bytes(batch)? + 15) & !15;
    let (field_arena, work_arena) = arena.split_at_mut(field_bytes);
    let (mut work, _) = Workspace::from_arena(work_arena, x.len(), method.work_buffers())?;
    let mut net = CpuField::new(model, batch, field_arena)?;
    let mut field = ConventionField::new(&mut net, model.time_convention());
    integrate_observed(
        &mut CpuOps,
        &mut field,
        method,
        grid,
        x,
        &mut work,
        observer,
    )
}
