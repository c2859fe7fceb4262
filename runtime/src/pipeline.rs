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

use crate::exec::CpuField;
use crate::field::CpuOps;
use crate::format::{le_u16, le_u32, le_u64};
use crate::grid::{Explicit, TimeGrid};
use crate::solver::{integrate_tableau, Method, NoObserver, Scheme, Workspace};
use crate::time::ConventionField;
use crate::{Error, Model};

/// Most stages a pipeline holds.
pub const MAX_STAGES: usize = 8;
/// Length of one stage record.
pub const STAGE_RECORD_LEN: usize = 32;

/// What a pipeline stage does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StageKind {
    /// A velocity net for steps starting in `[min(a, b), max(a, b)]` (model time).
    Block {
        /// One end of the interval.
        a: f32,
        /// The other end.
        b: f32,
    },
    /// A velocity net for steps `n` with `from ≤ n/N < to`.
    Refiner {
        /// Lower end (fraction of the steps).
        from: f32,
        /// Upper end, exclusive.
        to: f32,
    },
    /// Applied to the final state.
    Decoder,
}

impl StageKind {
    /// Code in the stage record (0 block, 1 refiner, 2 decoder).
    pub fn code(&self) -> u16 {
        match self {
            StageKind::Block { .. } => 0,
            StageKind::Refiner { .. } => 1,
            StageKind::Decoder => 2,
        }
    }

    /// The two parameters as stored.
    pub fn params(&self) -> (f32, f32) {
        match *self {
            StageKind::Block { a, b } => (a, b),
            StageKind::Refiner { from, to } => (from, to),
            StageKind::Decoder => (0.0, 0.0),
        }
    }
}

/// A validated multi-network model.
#[derive(Debug, Clone, Copy)]
pub struct Pipeline<'a> {
    main: Model<'a>,
    stages: [Option<(StageKind, Model<'a>)>; MAX_STAGES],
    count: usize,
}

const fn invalid(what: &'static str) -> Error {
    Error::Invalid { what }
}

/// Parses and validates a `PIPELINE` section against the main model.
///
/// Errors: [`Error::Invalid`] (table, kinds, parameters, nesting, mismatched dimensions or
/// conventions) or any error of the nested files.
pub(crate) fn parse<'a>(main: &Model<'a>, section: &'a [u8]) -> Result<Pipeline<'a>, Error> {
    const T: Error = Error::Truncated {
        what: "pipeline section",
    };
    let count = le_u32(section, 0).ok_or(T)? as usize;
    if count == 0 || count > MAX_STAGES {
        return Err(invalid("a pipeline has 1 to 8 stages"));
    }
    if le_u32(section, 4) != Some(0) {
        return Err(invalid("pipeline reserved field is not zero"));
    }
    let table_end = 8 + STAGE_RECORD_LEN * count;
    let mut p = Pipeline {
        main: *main,
        stages: [None; MAX_STAGES],
        count,
    };
    let mut decoders = 0;
    for i in 0..count {
        let o = 8 + STAGE_RECORD_LEN * i;
        let code = le_u16(section, o).ok_or(T)?;
        if le_u16(section, o + 2) != Some(0) || le_u32(section, o + 4) != Some(0) {
            return Err(invalid("pipeline stage reserved field is not zero"));
        }
        let a = le_u32(section, o + 8).map(f32::from_bits).ok_or(T)?;
        let b = le_u32(section, o + 12).map(f32::from_bits).ok_or(T)?;
        let off = usize::try_from(le_u64(section, o + 16).ok_or(T)?).map_err(|_| T)?;
        let len = usize::try_from(le_u64(section, o + 24).ok_or(T)?).map_err(|_| T)?;
        if off % 16 != 0 || off < table_end {
            return Err(invalid("pipeline stage file is misplaced"));
        }
        let body = off
            .checked_add(len)
            .and_then(|end| section.get(off..end))
            .ok_or(T)?;
        let kind = match code {
            0 => StageKind::Block { a, b },
            1 => StageKind::Refiner { from: a, to: b },
            2 => StageKind::Decoder,
            _ => return Err(invalid("unknown pipeline stage kind")),
        };
        if !(a.is_finite() && b.is_finite()) {
            return Err(invalid("pipeline stage interval is not finite"));
        }
        if let StageKind::Refiner { from, to } = kind {
            if !((0.0..=1.0).contains(&from) && from < to && to <= 1.0) {
                return Err(invalid(
                    "refiner step fractions must satisfy 0 <= from < to <= 1",
                ));
            }
        }
        let m = Model::from_bytes(body)?;
        if m.pipeline().is_some() {
            return Err(invalid("pipeline stages cannot be pipelines themselves"));
        }
        if m.state_dim() != main.state_dim() {
            return Err(invalid("a pipeline stage has another state dimension"));
        }
        if kind == StageKind::Decoder {
            decoders += 1;
            if m.input_count() != 1 {
                return Err(invalid("a decoder takes only the state `x`"));
            }
        } else if m.time_convention() != main.time_convention() {
            return Err(invalid(
                "a pipeline velocity stage has another time convention",
            ));
        } else if m.output_dim() != m.state_dim() {
            return Err(invalid(
                "a pipeline velocity stage does not output a velocity",
            ));
        }
        if let Some(slot) = p.stages.get_mut(i) {
            *slot = Some((kind, m));
        }
    }
    if decoders > 1 {
        return Err(invalid("a pipeline has at most one decoder"));
    }
    Ok(p)
}

impl<'a> Pipeline<'a> {
    /// The main velocity network (the file's own graph).
    pub fn main(&self) -> &Model<'a> {
        &self.main
    }

    /// The stages, in file order.
    pub fn stages(&self) -> impl Iterator<Item = (StageKind, &Model<'a>)> + '_ {
        self.stages
            .iter()
            .take(self.count)
            .filter_map(|s| s.as_ref().map(|(k, m)| (*k, m)))
    }

    /// The decoder, if any.
    pub fn decoder(&self) -> Option<&Model<'a>> {
        self.stages()
            .find(|(k, _)| *k == StageKind::Decoder)
            .map(|(_, m)| m)
    }

    /// The velocity network for step `n` of `steps`, starting at model time `t` (see the
    /// module docs for the rule).
    pub fn velocity_for_step(&self, n: usize, steps: usize, t: f32) -> &Model<'a> {
        let frac = n as f64 / steps.max(1) as f64;
        let refiner = self.stages().find(|(k, _)| match *k {
            StageKind::Refiner { from, to } => f64::from(from) <= frac && frac < f64::from(to),
            _ => false,
        });
        let block = || {
            self.stages().find(|(k, _)| match *k {
                StageKind::Block { a, b } => a.min(b) <= t && t <= a.max(b),
                _ => false,
            })
        };
        refiner.or_else(block).map_or(&self.main, |(_, m)| m)
    }

    /// Output elements per row of a sample: the decoder's output size, else the state's.
    pub fn output_dim(&self) -> usize {
        self.decoder()
            .map_or(self.main.state_dim(), Model::output_dim)
    }

    /// Graph + field arena for `batch` rows: the largest of all graphs.
    ///
    /// Errors: [`Error::BadArgument`] on overflow.
    pub fn required_arena_bytes(&self, batch: usize) -> Result<usize, Error> {
        let mut most = self.main.required_arena_bytes(batch)?;
        for (_, m) in self.stages() {
            most = most.max(m.required_arena_bytes(batch)?);
        }
        Ok(most)
    }
}

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
    crate::sampler::arena_with_workspace(field, 0, method, batch, p.main.state_dim())
}

/// Samples a pipeline on the CPU: integrates `x` (noise in; the final state out) along
/// `grid` with a Runge–Kutta `method`, each step with the network the rule picks; with a
/// decoder, also decodes the final state into `out` (`batch × output_dim`; ignored without
/// a decoder).
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
    let Scheme::RungeKutta(tableau) = method.scheme() else {
        return Err(Error::BadSolverConfig {
            what: "pipelines sample with Runge-Kutta methods (euler, midpoint, heun, ralston, \
                   rk4, rk4-38)",
        });
    };
    if p.main.time_convention().second != crate::time::SecondTime::None {
        return Err(Error::BadSolverConfig {
            what: "pipelines of models with a second time input are not supported",
        });
    }
    let batch = crate::sampler::check_rows_and_arena(x, p.main.state_dim(), arena, |b| {
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
        let mut field = ConventionField::new(&mut net, m.time_convention());
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
        if out.len() != want {
            return Err(Error::ShapeMismatch {
                what: "decoded output (batch x decoder output dim)",
                expected: want,
                found: out.len(),
            });
        }
        crate::exec::run(dec, batch, &[&*x], out, field_arena)?;
        if !out.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFiniteOutput {
                what: "decoder output",
            });
        }
    }
    Ok(())
}
