//! Stochastic sampling (Euler–Maruyama, [`flowrt::sde`]) of a request, on any backend whose
//! velocity field runs on host memory (cpu, ort); a score model runs on the CPU executor.

use flowrt::field::ConventionField;
use flowrt::grid::TimeGrid;
use flowrt::sde::{Diffusion, NoiseSource, PhiloxNoise, Score, SliceNoise};
use flowrt::{CpuOps, Model, VelocityField};

use crate::{Frt, HostError, Result};

/// What a score model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ScoreKind {
    /// The noise `eps ~ E[x0 | x_t]`: score = `-eps / (1 - t)`.
    #[default]
    Noise,
    /// The score itself.
    Score,
}

/// Sample the SDE instead of the ODE.
#[derive(Debug, Default)]
pub struct SdeRequest {
    /// Diffusion `g(t)`: `const:W` or `linear:W` (= `W (1 - t)`).
    pub diffusion: String,
    /// A second model predicting the noise or the score; without it the score is derived
    /// from the velocity.
    pub score_model: Option<(Frt, ScoreKind)>,
    /// Brownian increments (`steps × batch × dim` standard normals, to reproduce a Python
    /// run); default: flowrt's Philox generator with [`SdeRequest::seed`].
    pub noise: Option<Vec<f32>>,
    /// Seed of the SDE noise (streams 1.. of the Philox generator).
    pub seed: u64,
}

impl SdeRequest {
    /// An SDE with diffusion `diffusion` (`const:W` or `linear:W`), score from the velocity,
    /// Philox noise from seed 0.
    pub fn new(diffusion: impl Into<String>) -> SdeRequest {
        SdeRequest {
            diffusion: diffusion.into(),
            ..SdeRequest::default()
        }
    }

    /// Runs Euler–Maruyama for `x` with `net`, the model's velocity with its conditioning
    /// (and guidance) applied, in raw network time when `conv_applied` is false.
    ///
    /// Errors: a bad diffusion, a model on the sigma axis, sizes, or a failed evaluation.
    pub(crate) fn run(
        &self,
        model: &Model<'_>,
        net: &mut dyn VelocityField<CpuOps>,
        conv_applied: bool,
        grid: &dyn TimeGrid,
        x: &mut [f32],
    ) -> Result<usize> {
        let d = &self.diffusion;
        let diffusion =
            Diffusion::parse(d).map_err(|e| HostError::request(format!("--sde {d}: {e}")))?;
        let conv = model.time_convention();
        if conv.axis != flowrt::time::TimeAxis::T {
            return Err(HostError::request(format!(
                "--sde needs a model on the t axis (0 = noise); this one uses {}",
                conv.axis.name()
            )));
        }
        let batch = x.len() / model.state_dim().max(1);
        let field_conv = if conv_applied {
            flowrt::time::TimeConvention::default()
        } else {
            conv
        };
        let mut field = ConventionField::new(net, field_conv);
        let score_model = match &self.score_model {
            Some((f, kind)) => {
                let m = f.model();
                if m.state_dim() != model.state_dim() {
                    return Err(HostError::request(format!(
                        "--score-model has state dim {} but the model has {}",
                        m.state_dim(),
                        model.state_dim()
                    )));
                }
                Some((m, *kind))
            }
            None => None,
        };
        let mut score_arena = match &score_model {
            Some((m, _)) => Some(crate::run::arena(m.required_arena_bytes(batch)?)?),
            None => None,
        };
        let mut score_net = match (&score_model, score_arena.as_mut()) {
            (Some((m, _)), Some(a)) => {
                Some(flowrt::exec::CpuField::new(m, batch, a.as_mut_slice())?)
            }
            _ => None,
        };
        let score_conv = score_model
            .as_ref()
            .map(|(m, _)| m.time_convention())
            .unwrap_or_default();
        let mut score_field = score_net
            .as_mut()
            .map(|n| ConventionField::new(n, score_conv));
        let kind = score_model.as_ref().map(|(_, k)| *k);
        let score = match (score_field.as_mut(), kind) {
            (Some(f), Some(ScoreKind::Noise)) => Score::Noise(f),
            (Some(f), Some(ScoreKind::Score)) => Score::Direct(f),
            _ => Score::FromVelocity,
        };
        if let Some(z) = &self.noise {
            let want = grid.steps() * x.len();
            if z.len() != want {
                return Err(HostError::request(format!(
                    "the SDE noise holds {} values, the SDE needs steps x N x dim = {want}",
                    z.len()
                )));
            }
        }
        let mut philox = PhiloxNoise(self.seed);
        let mut slice;
        let noise: &mut dyn NoiseSource = match &self.noise {
            Some(z) => {
                slice = SliceNoise(z);
                &mut slice
            }
            None => &mut philox,
        };
        let mut work = vec![0f32; flowrt::sde::work_len(x.len()).unwrap_or(0)];
        flowrt::sde::euler_maruyama(&mut field, score, diffusion, grid, x, &mut work, noise)?;
        let per_step = if score_model.is_some() { 2 } else { 1 };
        Ok(grid.steps() * per_step)
    }
}
