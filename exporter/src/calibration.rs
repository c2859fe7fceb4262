//! Export-time calibration: sample trajectories of the f32 model on flowrt's own CPU executor
//! and show every tensor of every evaluation to an observer. Both int8 refinements use it:
//! the activation scales of the full-integer mode ([`crate::int8act`]) and the
//! error-compensated rounding of int8 weights ([`crate::gptq`]).

use anyhow::{Context, Result};
use flowrt::format::WeightType;
use flowrt::ir::ModelDesc;

/// How to calibrate (`export --calibrate-rows --calibrate-steps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calibration {
    /// Noise rows sampled.
    pub rows: usize,
    /// Euler steps per trajectory (each step evaluates the network once).
    pub steps: usize,
    /// Seed of the noise and the labels.
    pub seed: u64,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration {
            rows: 256,
            steps: 16,
            seed: 0x5EED,
        }
    }
}

/// Samples `cal.rows` Euler trajectories of `desc` with every constant as f32 (whatever
/// types the exporter chose to store), from deterministic noise (random class labels where
/// the model takes labels), calling `observe(tensor, values)` with every input and node
/// output of every evaluation (`values` holds all rows of the batch).
///
/// Errors: a model that is not a velocity field the CPU can sample (a plain graph, a `cond`
/// or `guidance` input), or any evaluation error.
pub fn sample(
    desc: &ModelDesc,
    cal: &Calibration,
    observe: &mut (dyn FnMut(u32, &[f32]) + Send),
) -> Result<()> {
    let mut f32_desc = desc.clone();
    for t in &mut f32_desc.tensors {
        t.stored = WeightType::F32;
        t.int8_scales = None;
    }
    f32_desc.pipeline.clear();
    let bytes = flowrt::write::write(&f32_desc).context("writing the calibration model")?;
    let file = flowrt::format::AlignedBytes::copy_from(&bytes);
    let model = flowrt::Model::from_bytes(file.as_slice())?;
    flowrt::calibrate::trajectories(&model, cal.rows, cal.steps, cal.seed, observe)
        .context("sampling calibration trajectories with the f32 model")?;
    Ok(())
}
