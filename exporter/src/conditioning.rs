//! Conditioning inputs for `flowrt sample`: `--label Y.npy` / `--label-value K`,
//! `--cond C.npy` and `--guidance-value G`, checked against the model's signature.

use std::path::Path;

use anyhow::{bail, Result};
use flowrt::exec::Conditioning;
use flowrt::format::InputRole;
use flowrt::Model;

use crate::npy;

/// What the command line gave.
#[derive(Debug, Clone, Copy, Default)]
pub struct CondArgs<'a> {
    /// `--label Y.npy`: one class index per sample, shape `[N]`.
    pub label: Option<&'a Path>,
    /// `--label-value K`: one class index for every sample.
    pub label_value: Option<i64>,
    /// `--cond C.npy`: one conditioning vector per sample, shape `[N, C]`.
    pub cond: Option<&'a Path>,
    /// `--guidance-value G`: the embedded guidance scale for every sample.
    pub guidance_value: Option<f32>,
}

/// Owned conditioning for `batch` samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CondInputs {
    /// One label per row.
    pub label: Option<Vec<i64>>,
    /// `batch * cond_dim` values.
    pub cond: Option<Vec<f32>>,
    /// One value per row.
    pub guidance: Option<Vec<f32>>,
}

impl CondInputs {
    /// Borrowed for `flowrt::sampler::sample_cond` / `flowrt_ort::sample_cond`.
    pub fn as_conditioning(&self) -> Conditioning<'_> {
        Conditioning {
            label: self.label.as_deref(),
            cond: self.cond.as_deref(),
            guidance: self.guidance.as_deref(),
        }
    }
}

/// Reads and checks the conditioning for `batch` samples of `model`: every conditioning
/// input the model has must be given, and nothing it lacks.
///
/// Errors: one line naming the missing / unused option, or a shape or range mismatch.
pub fn load(model: &Model<'_>, batch: usize, args: &CondArgs<'_>) -> Result<CondInputs> {
    let has = |r: InputRole| model.input_by_role(r).is_some();
    let mut out = CondInputs::default();
    let classes = model.label_classes();
    let range = classes.map_or(String::new(), |n| format!(" ({n} classes, 0..{n})"));
    match (has(InputRole::Label), args.label, args.label_value) {
        (true, None, None) => {
            bail!("the model has a label input{range}: give --label Y.npy or --label-value K")
        }
        (true, Some(p), None) => {
            let (data, shape) = npy::read_labels(p)?;
            if shape.len() != 1 || shape[0] != batch {
                bail!(
                    "{}: labels of shape {shape:?}; need [{batch}] (one per sample)",
                    p.display()
                );
            }
            out.label = Some(data);
        }
        (true, None, Some(k)) => out.label = Some(vec![k; batch]),
        (true, Some(_), Some(_)) => bail!("give --label or --label-value, not both"),
        (false, None, None) => {}
        (false, _, _) => bail!("--label / --label-value given, but the model has no label input"),
    }
    if let (Some(labels), Some(n)) = (&out.label, classes) {
        if let Some(bad) = labels.iter().find(|l| !(0..n as i64).contains(l)) {
            bail!("label {bad} is out of range: the model has {n} classes (0..{n})");
        }
    }
    match (model.cond_dim(), args.cond) {
        (Some(c), None) => bail!("the model has a cond input of width {c}: give --cond C.npy"),
        (Some(c), Some(p)) => {
            let (data, shape) = npy::read_f32(p)?;
            if shape != [batch, c] {
                bail!(
                    "{}: cond of shape {shape:?}; need [{batch}, {c}]",
                    p.display()
                );
            }
            out.cond = Some(data);
        }
        (None, Some(_)) => bail!("--cond given, but the model has no cond input"),
        (None, None) => {}
    }
    match (has(InputRole::Guidance), args.guidance_value) {
        (true, None) => bail!("the model has a guidance input: give --guidance-value G"),
        (true, Some(g)) => out.guidance = Some(vec![g; batch]),
        (false, Some(_)) => bail!("--guidance-value given, but the model has no guidance input"),
        (false, None) => {}
    }
    Ok(out)
}
