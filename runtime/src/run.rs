//! One request-driven run for every backend: [`run`] integrates a state with any
//! [`ConditionalField`] — the few-step rule for a model with a second time input, else the
//! request's fixed-step or adaptive method, with classifier-free guidance when asked — under
//! the model's time convention. The CPU sampler ([`crate::sampler`]), ONNX Runtime, the GPU
//! and the host API all call it, so the mode dispatch exists once.

use crate::field::{ConditionalField, Conditioned, Conditioning, ConventionField, StateOps};
use crate::grid::TimeGrid;
use crate::guidance::{CfgField, Guidance};
use crate::select::{self, All, Selection};
use crate::solver::{adaptive, integrate_selected, Method, StepObserver, Workspace};
use crate::time::{SecondTime, TimeConvention};
use crate::{Error, VelocityField};

/// What to integrate.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The solver (any fixed-step method, or dopri5 with [`Request::tol`]).
    pub method: Method,
    /// The time grid, in model time.
    pub grid: &'a dyn TimeGrid,
    /// Tolerances of the adaptive method.
    pub tol: adaptive::Tolerances,
    /// Per-row conditioning (labels, vectors, embedded guidance) of the batch.
    pub cond: Conditioning<'a>,
    /// Classifier-free guidance with the doubled conditioning (conditional rows first, then
    /// the null rows), or `None`.
    pub guidance: Option<(Guidance, Conditioning<'a>)>,
}

/// The model facts a run needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Facts {
    /// The time convention (grids are in model time).
    pub conv: TimeConvention,
    /// Values per row of the state.
    pub state_dim: usize,
    /// Values per row of the `cond` input (0 without one).
    pub cond_dim: usize,
}

impl Facts {
    /// The facts of `model`.
    pub fn of(model: &crate::Model<'_>) -> Facts {
        Facts {
            conv: model.time_convention(),
            state_dim: model.state_dim(),
            cond_dim: model.cond_dim().unwrap_or(0),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Steps taken (accepted steps for dopri5).
    pub steps: usize,
    /// Rejected steps (dopri5).
    pub rejected: usize,
    /// Network evaluations (a guided evaluation of the doubled batch counts once).
    pub evaluations: usize,
}

/// The buffers of a run besides the state: the solver workspace ([`Method::work_buffers`]
/// state-sized buffers; the few-step rule uses two of them) and, with guidance, the two
/// doubled buffers ([`crate::guidance::scratch_len`] elements each).
pub struct Buffers<'w, B: ?Sized> {
    /// The solver workspace.
    pub work: Workspace<'w, B>,
    /// Guidance's doubled state and velocity.
    pub guided: Option<[&'w mut B; 2]>,
}

/// Counts evaluations of an inner field.
struct Counting<'f, F: ?Sized> {
    inner: &'f mut F,
    count: usize,
}

impl<S: StateOps + ?Sized, F: VelocityField<S> + ?Sized> VelocityField<S> for Counting<'_, F> {
    fn eval(&mut self, ops: &mut S, t: f32, x: &S::Buf, v: &mut S::Buf) -> Result<(), Error> {
        self.count += 1;
        self.inner.eval(ops, t, x, v)
    }
}

const NO_BUFFER: Error = Error::BadSolverConfig {
    what: "workspace has fewer buffers than the method needs",
};

/// Integrates `x` (noise in, samples out) with `net` as `req` says (see the module docs).
///
/// Errors: a method other than euler, or guidance, for a few-step model
/// ([`Error::BadSolverConfig`]); guidance without its buffers; whatever the solver, the grid
/// or the network returns.
pub fn run<S, F>(
    ops: &mut S,
    net: &mut F,
    facts: &Facts,
    req: &Request<'_>,
    x: &mut S::Buf,
    bufs: &mut Buffers<'_, S::Buf>,
    observer: &mut dyn StepObserver<S>,
) -> Result<Stats, Error>
where
    S: StateOps + ?Sized,
    F: ConditionalField<S> + ?Sized,
{
    run_selected::<All, S, F>(ops, net, facts, req, x, bufs, observer)
}

/// [`run`] with the solvers, the few-step rule and guidance that `L` links
/// ([`crate::select`]); what it leaves out returns [`Error::NotLinked`].
///
/// Errors: as [`run`], plus [`Error::NotLinked`].
pub fn run_selected<L, S, F>(
    ops: &mut S,
    net: &mut F,
    facts: &Facts,
    req: &Request<'_>,
    x: &mut S::Buf,
    bufs: &mut Buffers<'_, S::Buf>,
    observer: &mut dyn StepObserver<S>,
) -> Result<Stats, Error>
where
    L: Selection,
    S: StateOps + ?Sized,
    F: ConditionalField<S> + ?Sized,
{
    let conv = facts.conv;
    let grid = req.grid;
    if conv.second != SecondTime::None {
        if !L::FEW_STEP {
            return Err(select::not_linked("few-step sampling"));
        }
        if req.method != Method::Euler {
            return Err(Error::BadSolverConfig {
                what: "a model with a second time input (mean flow, shortcut) samples with \
                       its own one-step rule: use --method euler",
            });
        }
        if req.guidance.is_some() {
            return Err(Error::BadSolverConfig {
                what: "guidance is not available for models with a second time input",
            });
        }
        let (v, next) = bufs.work.first_two_mut().ok_or(NO_BUFFER)?;
        crate::fewstep::sample_two_time(ops, net, &conv, &req.cond, grid, x, [v, next], observer)?;
        return Ok(Stats {
            steps: grid.steps(),
            rejected: 0,
            evaluations: grid.steps(),
        });
    }
    let guided = bufs.guided.as_mut().map(|[a, b]| [&mut **a, &mut **b]);
    let work = &mut bufs.work;
    let batch = ops.len(x) / facts.state_dim.max(1);
    with_field_selected::<L, _, _, _, _>(ops, net, facts, req, batch, guided, |ops, field| {
        solve::<L, _, _>(ops, field, req, x, work, observer)
    })
}

/// Runs `f` with the velocity field `req` describes: `net` with the request's conditioning
/// and the time convention of `facts` applied, under classifier-free guidance when the
/// request asks for it (`guided` holds guidance's two doubled buffers for `batch` rows). The
/// SDE sampler of
/// the host API uses it as the ODE solvers do.
///
/// Errors: guidance without its buffers or with a bad configuration
/// ([`Error::BadSolverConfig`]), or whatever `f` returns.
pub fn with_field<S, F, R, E>(
    ops: &mut S,
    net: &mut F,
    facts: &Facts,
    req: &Request<'_>,
    batch: usize,
    guided: Option<[&mut S::Buf; 2]>,
    f: impl FnOnce(&mut S, &mut dyn VelocityField<S>) -> Result<R, E>,
) -> Result<R, E>
where
    S: StateOps + ?Sized,
    F: ConditionalField<S> + ?Sized,
    E: From<Error>,
{
    with_field_selected::<All, S, F, R, E>(ops, net, facts, req, batch, guided, f)
}

/// [`with_field`] where guidance is available only when `L` links it.
fn with_field_selected<L, S, F, R, E>(
    ops: &mut S,
    net: &mut F,
    facts: &Facts,
    req: &Request<'_>,
    batch: usize,
    guided: Option<[&mut S::Buf; 2]>,
    f: impl FnOnce(&mut S, &mut dyn VelocityField<S>) -> Result<R, E>,
) -> Result<R, E>
where
    L: Selection,
    S: StateOps + ?Sized,
    F: ConditionalField<S> + ?Sized,
    E: From<Error>,
{
    let conv = facts.conv;
    match (&req.guidance, guided) {
        (None, _) => {
            let mut conditioned = Conditioned {
                field: net,
                cond: req.cond,
            };
            let mut field = ConventionField::new(&mut conditioned, conv);
            f(ops, &mut field)
        }
        (Some(_), _) if !L::GUIDANCE => Err(select::not_linked("guidance").into()),
        (Some((g, doubled)), Some([x2, v2])) => {
            // CfgField applies the convention itself.
            let mut cfg = CfgField::new(
                ops,
                net,
                conv,
                *g,
                batch,
                facts.state_dim,
                facts.cond_dim,
                *doubled,
                x2,
                v2,
            )?;
            f(ops, &mut cfg)
        }
        (Some(_), None) => Err(Error::BadSolverConfig {
            what: "guidance needs its two doubled buffers",
        }
        .into()),
    }
}

/// The fixed-step or adaptive loop over a field with conditioning, convention and guidance
/// applied, counting its evaluations.
fn solve<L: Selection, S: StateOps + ?Sized, F: VelocityField<S> + ?Sized>(
    ops: &mut S,
    field: &mut F,
    req: &Request<'_>,
    x: &mut S::Buf,
    work: &mut Workspace<'_, S::Buf>,
    observer: &mut dyn StepObserver<S>,
) -> Result<Stats, Error> {
    let mut counting = Counting {
        inner: field,
        count: 0,
    };
    let mut stats = Stats {
        steps: req.grid.steps(),
        ..Stats::default()
    };
    if req.method == Method::Dopri5 && select::has_method::<L>(Method::Dopri5) {
        let a = adaptive::dopri5(ops, &mut counting, &req.tol, req.grid, x, work, observer)?;
        stats.steps = a.accepted;
        stats.rejected = a.rejected;
    } else {
        integrate_selected::<L, _, _>(ops, &mut counting, req.method, req.grid, x, work, observer)?;
    }
    stats.evaluations = counting.count;
    Ok(stats)
}
