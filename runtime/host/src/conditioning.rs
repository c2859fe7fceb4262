//! Conditioning inputs (`label`, `cond`, embedded `guidance`) and classifier-free guidance,
//! checked against the model's signature before anything runs.

use flowrt::field::Conditioning;
use flowrt::format::InputRole;
use flowrt::guidance::Guidance;
use flowrt::Model;

use crate::{HostError, Result};

/// Class labels for a model with a `label` input.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// One label per sample.
    PerRow(Vec<i64>),
    /// The same label for every sample.
    All(i64),
    /// Sample `i` gets class `i % N`.
    Cycle(i64),
}

/// The conditioning part of a request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CondRequest {
    /// Class labels (`label` role).
    pub labels: Option<Labels>,
    /// One conditioning vector per sample, row-major (`cond` role).
    pub cond: Option<Vec<f32>>,
    /// The embedded guidance value for every sample (`guidance` role; not classifier-free
    /// guidance).
    pub guidance_value: Option<f32>,
}

/// Classifier-free guidance: `None` fields fall back to the file's defaults.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GuidanceRequest {
    /// The scale `w` (`v = v_u + w (v_c - v_u)`); no guidance without one here or in the file.
    pub scale: Option<f32>,
    /// The null (unconditional) label.
    pub null_label: Option<i64>,
    /// The null conditioning vector (default zeros).
    pub null_cond: Option<Vec<f32>>,
    /// Apply guidance only for model times in `[a, b]`.
    pub interval: Option<(f32, f32)>,
}

/// Owned conditioning for a batch.
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
    /// Borrowed, as the runtime's fields take it.
    pub fn as_conditioning(&self) -> Conditioning<'_> {
        Conditioning {
            label: self.label.as_deref(),
            cond: self.cond.as_deref(),
            guidance: self.guidance.as_deref(),
            step: None,
        }
    }
}

fn bail<T>(msg: impl Into<String>) -> Result<T> {
    Err(HostError::Request(msg.into()))
}

impl CondRequest {
    /// The conditioning for `batch` samples of `model`: every conditioning input the model
    /// has must be given, and nothing it lacks.
    ///
    /// Errors: one line naming the missing or unused input, or a size or range mismatch.
    pub fn resolve(&self, model: &Model<'_>, batch: usize) -> Result<CondInputs> {
        let has = |r: InputRole| model.input_by_role(r).is_some();
        let mut out = CondInputs::default();
        let classes = model.label_classes();
        let range = classes.map_or(String::new(), |n| format!(" ({n} classes, 0..{n})"));
        match (has(InputRole::Label), &self.labels) {
            (true, None) => {
                return bail(format!(
                    "the model has a label input{range}: give --label Y.npy, --label-value K \
                     or --label-cycle N"
                ))
            }
            (true, Some(Labels::PerRow(v))) => {
                if v.len() != batch {
                    return bail(format!(
                        "labels of shape [{}]; need [{batch}] (one per sample)",
                        v.len()
                    ));
                }
                out.label = Some(v.clone());
            }
            (true, Some(Labels::All(k))) => out.label = Some(vec![*k; batch]),
            (true, Some(Labels::Cycle(n))) => {
                if *n < 1 {
                    return bail(format!("--label-cycle {n}: need at least 1"));
                }
                out.label = Some((0..batch as i64).map(|i| i % n).collect());
            }
            (false, None) => {}
            (false, Some(Labels::Cycle(_))) => {
                return bail("--label-cycle given, but the model has no label input")
            }
            (false, Some(_)) => {
                return bail("--label / --label-value given, but the model has no label input")
            }
        }
        if let (Some(labels), Some(n)) = (&out.label, classes) {
            if let Some(bad) = labels.iter().find(|l| !(0..n as i64).contains(l)) {
                return bail(format!(
                    "label {bad} is out of range: the model has {n} classes (0..{n})"
                ));
            }
        }
        match (model.cond_dim(), &self.cond) {
            (Some(c), None) => {
                return bail(format!(
                    "the model has a cond input of width {c}: give --cond C.npy"
                ))
            }
            (Some(c), Some(v)) => {
                if v.len() != batch * c {
                    return bail(format!(
                        "cond of {} values; need [{batch}, {c}] = {}",
                        v.len(),
                        batch * c
                    ));
                }
                out.cond = Some(v.clone());
            }
            (None, Some(_)) => return bail("--cond given, but the model has no cond input"),
            (None, None) => {}
        }
        match (has(InputRole::Guidance), self.guidance_value) {
            (true, None) => return bail("the model has a guidance input: give --guidance-value G"),
            (true, Some(g)) => out.guidance = Some(vec![g; batch]),
            (false, Some(_)) => {
                return bail("--guidance-value given, but the model has no guidance input")
            }
            (false, None) => {}
        }
        Ok(out)
    }
}

impl GuidanceRequest {
    /// The guidance to apply (the request first, then the model's defaults), with the
    /// doubled conditioning it needs (conditional rows, then the null rows); `None` without
    /// a guidance scale.
    ///
    /// Errors: guidance on a model without a label or cond input, a missing null label, a
    /// bad interval or null vector.
    pub fn resolve(
        &self,
        model: &Model<'_>,
        inputs: &CondInputs,
    ) -> Result<Option<(Guidance, CondInputs)>> {
        let defaults = model.solver_defaults().unwrap_or_default().guidance;
        let Some(scale) = self.scale.or(defaults.scale) else {
            if self.null_label.is_some() || self.null_cond.is_some() {
                return bail("--null-label / --null-cond need --guidance W");
            }
            return Ok(None);
        };
        let interval = self.interval.or(defaults.interval);
        let g = Guidance { scale, interval };
        g.validate()
            .map_err(|e| HostError::request(format!("--guidance: {e}")))?;
        if inputs.label.is_none() && inputs.cond.is_none() {
            return bail(
                "--guidance is classifier-free guidance: the model needs a label or cond input \
                 (for an embedded guidance input use --guidance-value)",
            );
        }
        let mut doubled = CondInputs::default();
        if let Some(labels) = &inputs.label {
            let Some(null) = self.null_label.or(defaults.null_label.map(i64::from)) else {
                return bail(
                    "--guidance on a label model needs --null-label K (the unconditional class)",
                );
            };
            if let Some(n) = model.label_classes() {
                if !(0..n as i64).contains(&null) {
                    return bail(format!(
                        "--null-label {null} is out of range: the model has {n} classes (0..{n})"
                    ));
                }
            }
            let mut d = labels.clone();
            d.extend(std::iter::repeat_n(null, labels.len()));
            doubled.label = Some(d);
        }
        if let Some(c) = &inputs.cond {
            let width = model.cond_dim().unwrap_or(0);
            let null = match &self.null_cond {
                Some(v) if v.len() != width => {
                    return bail(format!("null cond of {} values; need [{width}]", v.len()))
                }
                Some(v) => v.clone(),
                None => vec![0.0; width],
            };
            let mut d = c.clone();
            for _ in 0..c.len() / width.max(1) {
                d.extend_from_slice(&null);
            }
            doubled.cond = Some(d);
        }
        if let Some(gv) = &inputs.guidance {
            let mut d = gv.clone();
            d.extend_from_slice(gv);
            doubled.guidance = Some(d);
        }
        Ok(Some((g, doubled)))
    }
}

/// Parses `A,B` with finite `A <= B` (a guidance interval).
///
/// Errors: anything else.
pub fn parse_interval(s: &str) -> Result<(f32, f32)> {
    let Some((a, b)) = s.split_once(',') else {
        return bail(format!("--guidance-interval expects A,B, got `{s}`"));
    };
    let num = |v: &str| {
        v.trim()
            .parse::<f32>()
            .map_err(|_| HostError::request(format!("--guidance-interval: `{v}` is not a number")))
    };
    let (a, b) = (num(a)?, num(b)?);
    if !(a.is_finite() && b.is_finite() && a <= b) {
        return bail(format!(
            "--guidance-interval needs finite A <= B, got {a},{b}"
        ));
    }
    Ok((a, b))
}
