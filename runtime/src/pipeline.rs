//! Multi-network `.frt` files: one file holding several graphs and the rule that picks them
//! (`PIPELINE` section, kind 11, required when present).
//!
//! The file's own graph is the **main** velocity network. Each stage adds a nested,
//! complete `.frt` image:
//!
//! | kind | used | e.g. |
//! |---|---|---|
//! | `block` `[a, b]` | instead of the main net on every step whose start time `t_n` lies in `[min(a,b), max(a,b)]` | blockwise flow matching: a net per time interval |
//! | `refiner` `[a, b)` | instead of the velocity net on steps `n` with `a ≤ n/N < b` (N = steps) | FlowTurbo: a light refiner on the late steps |
//! | `decoder` | once, on the final state | latent flow matching: latent → data |
//!
//! A refiner match wins over a block; among blocks the first match wins; no match uses the
//! main net. All stages of a step (RK stages) use the step's net. Velocity stages must have
//! the main net's state dimension and time convention; a decoder takes the state as its `x`
//! and may output rows of any size. The arena of [`sample_pipeline`] is the largest of the
//! graphs' ([`Pipeline::required_arena_bytes`]) plus the solver workspace: the graphs run
//! one at a time in the same memory.

use crate::error::expect_len;
use crate::exec::CpuField;
use crate::field::{Conditioned, Conditioning, ConventionField, CpuOps};
use crate::grid::{Explicit, TimeGrid};
use crate::solver::{integrate_tableau, Method, NoObserver, Scheme, Workspace};
use crate::Error;

pub use crate::format::pipeline::{StageKind, MAX_STAGES, STAGE_RECORD_LEN};
pub use crate::model::pipeline::Pipeline;

/// Arena bytes [`sample_pipeline`] needs: [`Pipeline::required_arena_bytes`] rounded to 16
/// plus the solver workspace.
///
/// Errors: [`Error::BadArgument`] on overflow.
pub fn pipeline_arena_bytes(
    p: &Pipeline<'_>,
    method: Method,
    batch: usize,
) -> Result<usize, Error> {
    let field = p.required_arena_bytes(batch)?;
    crate::sampler::arena_with_workspace(field, 0, method, batch, p.main().state_dim())
}

/// Samples a pipeline on the CPU: integrates `x` (noise in; the final state out) along
/// `grid` with a Runge–Kutta `method`, each step with the network the rule picks; with a
/// decoder, also decodes the final state into `out` (`batch × output_dim`; ignored without
/// a decoder). For a model without conditioning inputs; see [`sample_pipeline_cond`].
///
/// Errors: a non-Runge–Kutta method ([`Error::BadSolverConfig`]: multistep history and
/// adaptive steps do not survive a change of network), sizes, a too-small arena, or
/// anything the solver or the networks return.
pub fn sample_pipeline<G: TimeGrid + ?Sized>(
    p: &Pipeline<'_>,
    method: Method,
    grid: &G,
    x: &mut [f32],
    out: Option<&mut [f32]>,
    arena: &mut [u8],
) -> Result<(), Error> {
    sample_pipeline_cond(p, method, grid, x, &Conditioning::default(), out, arena)
}

/// [`sample_pipeline`] with per-row conditioning (`label`, `cond`, `guidance` inputs) handed
/// to every velocity network (the main net, blocks and refiners, which must all take it);
/// the decoder sees the final state only. Latent class-conditional models sample this way.
///
/// Errors: as [`sample_pipeline`], plus those of [`CpuField::eval_cond`] (missing or extra
/// conditioning, wrong lengths, labels out of range).
pub fn sample_pipeline_cond<G: TimeGrid + ?Sized>(
    p: &Pipeline<'_>,
    method: Method,
    grid: &G,
    x: &mut [f32],
    cond: &Conditioning<'_>,
    out: Option<&mut [f32]>,
    arena: &mut [u8],
) -> Result<(), Error> {
    let Scheme::RungeKutta(tableau) = method.scheme() else {
        return Err(Error::BadSolverConfig {
            what: "pipelines sample with Runge-Kutta methods (euler, midpoint, heun, ralston, \
                   rk4, rk4-38)",
        });
    };
    if p.main().time_convention().second != crate::time::SecondTime::None {
        return Err(Error::BadSolverConfig {
            what: "pipelines of models with a second time input are not supported",
        });
    }
    let batch = crate::sampler::check_rows_and_arena(x, p.main().state_dim(), arena, |b| {
        pipeline_arena_bytes(p, method, b)
    })?;
    crate::grid::validate(grid)?;
    let field_bytes = (p.required_arena_bytes(batch)? + 15) & !15;
    let (field_arena, work_arena) = arena.split_at_mut(field_bytes);
    let (mut work, _) = Workspace::from_arena(work_arena, x.len(), method.work_buffers())?;
    let steps = grid.steps();
    const NO_POINT: Error = Error::BadSolverConfig {
        what: "time grid is missing a point",
    };
    for n in 0..steps {
        let t0 = grid.point(n).ok_or(NO_POINT)?;
        let t1 = grid.point(n + 1).ok_or(NO_POINT)?;
        let m = p.velocity_for_step(n, steps, t0);
        let mut net = CpuField::new(m, batch, &mut *field_arena)?;
        let mut conditioned = Conditioned {
            field: &mut net,
            cond: *cond,
        };
        let mut field = ConventionField::new(&mut conditioned, m.time_convention());
        // One step of the same loop on the sub-grid [t_n, t_{n+1}]: the same arithmetic as a
        // step of the whole-grid loop.
        let pts = [t0, t1];
        let sub = Explicit::new(&pts)?;
        integrate_tableau(
            &mut CpuOps,
            &mut field,
            tableau,
            &sub,
            x,
            &mut work,
            &mut NoObserver,
        )?;
    }
    if let (Some(dec), Some(out)) = (p.decoder(), out) {
        let want = batch
            .checked_mul(dec.output_dim())
            .ok_or(Error::BadArgument {
                what: "batch size overflows",
            })?;
        expect_len(
            "decoded output (batch x decoder output dim)",
            want,
            out.len(),
        )?;
        crate::exec::run(dec, batch, &[&*x], out, field_arena)?;
        if !out.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFiniteOutput {
                what: "decoder output",
            });
        }
    }
    Ok(())
}
