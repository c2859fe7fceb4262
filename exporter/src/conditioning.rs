//! Conditioning inputs for `flowrt sample`: `--label Y.npy` / `--label-value K`,
//! `--cond C.npy` and `--guidance-value G`, checked against the model's signature.

use std::path::Path;

use anyhow::{bail, Result};
use flowrt::field::Conditioning;
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
    /// `--label-cycle N`: sample `i` gets class `i % N`.
    pub label_cycle: Option<i64>,
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
            step: None,
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
    let cycled = match args.label_cycle {
        Some(n) if n >= 1 => Some((0..batch as i64).map(|i| i % n).collect::<Vec<_>>()),
        Some(n) => bail!("--label-cycle {n}: need at least 1"),
        None => None,
    };
    if cycled.is_some() && (args.label.is_some() || args.label_value.is_some()) {
        bail!("give one of --label, --label-value and --label-cycle");
    }
    if let Some(c) = cycled {
        if !has(InputRole::Label) {
            bail!("--label-cycle given, but the model has no label input");
        }
        out.label = Some(c);
    }
    match (has(InputRole::Label), args.label, args.label_value) {
        (true, None, None) if out.label.is_some() => {}
        (true, None, None) => {
            bail!(
                "the model has a label input{range}: give --label Y.npy, --label-value K or \
                 --label-cycle N"
            )
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

/// Conditioning and classifier-free guidance flags of `sample` and `invert`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CondFlags {
    /// Class labels for a model with a `label` input (.npy int64 / int32, or floats with
    /// integer values, shape [N]).
    #[arg(long, value_name = "Y.npy", conflicts_with = "label_value")]
    pub label: Option<std::path::PathBuf>,
    /// One class label for every sample (e.g. with --seed/--num).
    #[arg(long, value_name = "K", allow_negative_numbers = true)]
    pub label_value: Option<i64>,
    /// Labels 0, 1, ..., N-1, 0, 1, ...: sample i gets class i % N (e.g. a grid of every
    /// class with --png).
    #[arg(long, value_name = "N", conflicts_with_all = ["label", "label_value"])]
    pub label_cycle: Option<i64>,
    /// Conditioning vectors for a model with a `cond` input (.npy float, shape [N, C]).
    #[arg(long, value_name = "C.npy")]
    pub cond: Option<std::path::PathBuf>,
    /// Value of a model's embedded `guidance` input (Flux-style), for every sample. This is
    /// not classifier-free guidance (see --guidance).
    #[arg(long, value_name = "G", allow_negative_numbers = true)]
    pub guidance_value: Option<f32>,
    /// Classifier-free guidance scale w: v = v_u + w (v_c - v_u), evaluated as one doubled
    /// batch (conditional rows, then the null label / null conditioning). Default: the
    /// model's baked-in scale, else none.
    #[arg(long, value_name = "W", allow_negative_numbers = true)]
    pub guidance: Option<f32>,
    /// The null (unconditional) label for --guidance. Default: the model's baked-in one.
    #[arg(long, value_name = "K")]
    pub null_label: Option<i64>,
    /// The null conditioning vector for --guidance on a `cond` model (.npy [C]; default
    /// zeros).
    #[arg(long, value_name = "C.npy")]
    pub null_cond: Option<std::path::PathBuf>,
    /// Apply guidance only for model times in [A, B] (conditional velocity elsewhere).
    /// Default: the model's baked-in interval, else always.
    #[arg(long, value_name = "A,B")]
    pub guidance_interval: Option<String>,
}

impl CondFlags {
    /// The conditioning part, as [`load`] takes it.
    pub fn cond_args(&self) -> CondArgs<'_> {
        CondArgs {
            label: self.label.as_deref(),
            label_value: self.label_value,
            label_cycle: self.label_cycle,
            cond: self.cond.as_deref(),
            guidance_value: self.guidance_value,
        }
    }

    /// The guidance to apply (command line first, then the model's defaults), with the
    /// doubled conditioning it needs; `None` without a guidance scale.
    ///
    /// Errors: guidance on a model without a label or cond input, a missing null label,
    /// a malformed interval or null vector.
    pub fn guidance(
        &self,
        model: &Model<'_>,
        inputs: &CondInputs,
    ) -> Result<Option<(flowrt::guidance::Guidance, CondInputs)>> {
        let defaults = model.solver_defaults().unwrap_or_default().guidance;
        let Some(scale) = self.guidance.or(defaults.scale) else {
            if self.null_label.is_some() || self.null_cond.is_some() {
                bail!("--null-label / --null-cond need --guidance W");
            }
            return Ok(None);
        };
        let interval = match &self.guidance_interval {
            Some(s) => Some(parse_interval(s)?),
            None => defaults.interval,
        };
        let g = flowrt::guidance::Guidance { scale, interval };
        g.validate()
            .map_err(|e| anyhow::anyhow!("--guidance: {e}"))?;
        if inputs.label.is_none() && inputs.cond.is_none() {
            bail!(
                "--guidance is classifier-free guidance: the model needs a label or cond input \
                 (for an embedded guidance input use --guidance-value)"
            );
        }
        let mut doubled = CondInputs::default();
        if let Some(labels) = &inputs.label {
            let null = match self.null_label.or(defaults.null_label.map(i64::from)) {
                Some(k) => k,
                None => bail!(
                    "--guidance on a label model needs --null-label K (the unconditional class)"
                ),
            };
            if let Some(n) = model.label_classes() {
                if !(0..n as i64).contains(&null) {
                    bail!(
                        "--null-label {null} is out of range: the model has {n} classes (0..{n})"
                    );
                }
            }
            let mut d = labels.clone();
            d.extend(std::iter::repeat_n(null, labels.len()));
            doubled.label = Some(d);
        }
        if let Some(c) = &inputs.cond {
            let width = model.cond_dim().unwrap_or(0);
            let null = match &self.null_cond {
                Some(p) => {
                    let (v, shape) = npy::read_f32(p)?;
                    if v.len() != width {
                        bail!(
                            "{}: null cond of shape {shape:?}; need [{width}]",
                            p.display()
                        );
                    }
                    v
                }
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

/// Parses `A,B` with finite `A <= B`.
///
/// Errors: anything else.
pub fn parse_interval(s: &str) -> Result<(f32, f32)> {
    let Some((a, b)) = s.split_once(',') else {
        bail!("--guidance-interval expects A,B, got `{s}`");
    };
    let num = |v: &str| {
        v.trim()
            .parse::<f32>()
            .map_err(|_| anyhow::anyhow!("--guidance-interval: `{v}` is not a number"))
    };
    let (a, b) = (num(a)?, num(b)?);
    if !(a.is_finite() && b.is_finite() && a <= b) {
        bail!("--guidance-interval needs finite A <= B, got {a},{b}");
    }
    Ok((a, b))
}
