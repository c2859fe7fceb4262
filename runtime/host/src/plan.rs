//! The solver of a run: the request's method, steps and grid as typed overrides of the
//! defaults baked into the `.frt` ([`SolverRequest::resolve`] → [`Plan`]).

use flowrt::grid::{Explicit, Grid, GridSpec, TimeGrid};
use flowrt::solver::{adaptive, Method};
use flowrt::Model;

use crate::{HostError, Result};

/// A time grid asked for by name or by its points.
#[derive(Debug, Clone, PartialEq)]
pub enum GridChoice {
    /// A named grid (uniform, shift, diffusers, ...), from the model's noise end to its data
    /// end.
    Named(GridSpec<'static>),
    /// An explicit list of model times (sets the step count).
    Points(Vec<f32>),
    /// torchdiffeq's step-size grid: `ceil(span/H + 1)` points, the last one the end time.
    StepSize(f32),
}

impl GridChoice {
    /// Parses a grid as the command line writes it: a name (`uniform`, `shift:S`,
    /// `dynamic-shift:MU`, `diffusers`, `flux:MU`, ...) or an explicit list `t0,t1,...`.
    ///
    /// Errors: an unknown name or malformed numbers.
    pub fn parse(s: &str) -> Result<GridChoice> {
        let first = s.trim_start().chars().next().unwrap_or(' ');
        if first.is_ascii_digit() || first == '-' || first == '.' {
            return Ok(GridChoice::Points(parse_points(s)?));
        }
        GridSpec::parse_named(s)
            .map(GridChoice::Named)
            .map_err(|e| HostError::request(format!("--grid {s}: {e}")))
    }
}

/// Parses an explicit list of times separated by commas or whitespace.
///
/// Errors: a malformed number or fewer than two points.
pub fn parse_points(s: &str) -> Result<Vec<f32>> {
    let pts: Vec<f32> = s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<f32>()
                .map_err(|_| HostError::request(format!("`{p}` is not a number")))
        })
        .collect::<Result<_>>()?;
    if pts.len() < 2 {
        return Err(HostError::request(format!(
            "an explicit grid needs at least two times, got {}",
            pts.len()
        )));
    }
    Ok(pts)
}

/// The solver part of a request; `None` fields fall back to the file's defaults, then to
/// euler, 1 step, uniform.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SolverRequest {
    /// The method.
    pub method: Option<Method>,
    /// The step count (ignored by explicit grids, step-size grids and dopri5).
    pub steps: Option<usize>,
    /// The grid, and how to describe it (`label`, e.g. the command-line text).
    pub grid: Option<(GridChoice, String)>,
    /// dopri5 tolerances (default: rtol 1e-7, atol 1e-9).
    pub tol: Option<adaptive::Tolerances>,
}

/// The resolved solver of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The method.
    pub method: Method,
    /// The grid.
    pub grid: OwnedGrid,
    /// dopri5 tolerances.
    pub tol: adaptive::Tolerances,
}

/// A grid the host owns: a spec, plus the points of an explicit list.
#[derive(Debug, Clone)]
pub struct OwnedGrid {
    spec: GridSpec<'static>,
    points: Option<Vec<f32>>,
    steps: usize,
    /// How it was chosen, for summary lines.
    pub label: String,
}

impl OwnedGrid {
    /// The grid (in model time) for the model's axis.
    ///
    /// Errors: invalid grid parameters.
    pub fn grid(&self, axis: flowrt::time::TimeAxis) -> Result<Grid<'_>> {
        let spec = match &self.points {
            Some(p) => GridSpec::Explicit(p),
            None => self.spec,
        };
        let g = spec
            .build(self.steps, axis)
            .map_err(|e| HostError::request(format!("grid {}: {e}", self.label)))?;
        check_direction(&g, axis)
            .map_err(|e| HostError::request(format!("grid {}: {e}", self.label)))?;
        Ok(g)
    }

    /// All points of the grid.
    ///
    /// Errors: as [`OwnedGrid::grid`].
    pub fn points(&self, axis: flowrt::time::TimeAxis) -> Result<Vec<f32>> {
        let g = self.grid(axis)?;
        (0..=g.steps())
            .map(|i| {
                g.point(i)
                    .ok_or_else(|| HostError::request(format!("grid point {i} missing")))
            })
            .collect()
    }
}

/// A spec that owns its points (explicit lists are copied out).
fn to_static(spec: GridSpec<'_>) -> (GridSpec<'static>, Option<Vec<f32>>) {
    match spec {
        GridSpec::Explicit(p) => (GridSpec::Uniform, Some(p.to_vec())),
        GridSpec::Uniform => (GridSpec::Uniform, None),
        GridSpec::StepSize(h) => (GridSpec::StepSize(h), None),
        GridSpec::Shift(s) => (GridSpec::Shift(s), None),
        GridSpec::DynamicShift { mu, kind } => (GridSpec::DynamicShift { mu, kind }, None),
        GridSpec::Diffusers { shift, flux_sigmas } => {
            (GridSpec::Diffusers { shift, flux_sigmas }, None)
        }
    }
}

impl SolverRequest {
    /// Resolves the request against the model's solver defaults (the request first).
    ///
    /// Errors: zero steps.
    pub fn resolve(&self, model: &Model<'_>) -> Result<Plan> {
        let defaults = model.solver_defaults().unwrap_or_default();
        let method = self
            .method
            .or(defaults.method)
            .unwrap_or(flowrt::solver::Method::Euler);
        let steps = self.steps.or(defaults.steps).unwrap_or(1);
        if steps == 0 {
            return Err(HostError::request("--steps must be at least 1"));
        }
        let (spec, points, label) = match &self.grid {
            Some((GridChoice::StepSize(h), label)) => (GridSpec::StepSize(*h), None, label.clone()),
            Some((GridChoice::Points(p), label)) => {
                (GridSpec::Uniform, Some(p.clone()), label.clone())
            }
            Some((GridChoice::Named(spec), label)) => (*spec, None, label.clone()),
            None => match defaults.grid {
                Some(spec) => {
                    let (owned, points) = to_static(spec);
                    (owned, points, format!("baked-in {spec:?}"))
                }
                None => (GridSpec::Uniform, None, "uniform".into()),
            },
        };
        let grid = OwnedGrid {
            spec,
            points,
            steps,
            label,
        };
        let tol = self.tol.unwrap_or(adaptive::Tolerances {
            rtol: 1e-7,
            atol: 1e-9,
            ..Default::default()
        });
        Ok(Plan { method, grid, tol })
    }
}

/// Checks that a sampling grid stays in the model's time range [0, 1] and runs from its
/// noise end towards its data end (a grid the other way round would integrate data to
/// noise: a silently wrong sample). Used for grids given to `sample` / `invert` and for
/// grids baked in at export.
///
/// Errors: the cause, as one line.
pub fn check_direction(
    g: &Grid<'_>,
    axis: flowrt::time::TimeAxis,
) -> core::result::Result<(), String> {
    let n = g.steps();
    let (Some(first), Some(last)) = (g.point(0), g.point(n)) else {
        return Err("the grid has no points".into());
    };
    for i in 0..=n {
        match g.point(i) {
            Some(t) if (0.0..=1.0).contains(&t) => {}
            Some(t) => {
                return Err(format!(
                    "grid point {i} ({t}) is outside the model's time range [0, 1]"
                ))
            }
            None => return Err(format!("grid point {i} is missing")),
        }
    }
    let (noise, data) = (axis.noise_end(), axis.data_end());
    if (last - first) * (data - noise) <= 0.0 {
        return Err(format!(
            "the grid runs from {first} to {last}, but sampling integrates from the noise end \
             ({noise}) towards the data end ({data})"
        ));
    }
    Ok(())
}

/// The grid reversed (data → noise), for inversion.
///
/// Errors: a grid whose points are not strictly monotone (e.g. torchdiffeq's degenerate
/// last step).
pub fn reversed(points: &[f32]) -> Result<Vec<f32>> {
    let r: Vec<f32> = points.iter().rev().copied().collect();
    Explicit::new(&r).map_err(|e| HostError::request(format!("cannot reverse the grid: {e}")))?;
    Ok(r)
}
