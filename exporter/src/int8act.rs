//! Full-integer mode (`flowrt export --weights int8 --activations int8`): Dense and Conv
//! nodes whose weights are int8 also quantize their input to int8 with a scale calibrated
//! here, and accumulate in integers (`flowrt::ops::dense_q8`, `conv_q8`).
//!
//! Calibration samples trajectories with the f32 model ([`crate::calibration`]) and records
//! the largest `|x|` each Dense / Conv input reaches; the node's activation scale is that
//! maximum over 127. A node whose input stayed 0 keeps f32 activations.

use anyhow::{bail, Result};
use flowrt::format::{Dim, ScaleType, WeightType};
use flowrt::ir::{ModelDesc, Op};

pub use crate::calibration::Calibration;

/// Records, for every node of `desc`, the largest `|value|` of its input 0 over the
/// calibration trajectories (`None` for nodes that are not Dense or Conv).
///
/// Errors: a model that is not a velocity field the CPU can sample (a plain graph, a `cond`
/// input), or any evaluation error.
pub fn calibrate(desc: &ModelDesc, cal: &Calibration) -> Result<Vec<Option<f32>>> {
    // Which tensor feeds which node's input 0.
    let mut watch: Vec<Vec<usize>> = vec![Vec::new(); desc.tensors.len()];
    for (i, n) in desc.nodes.iter().enumerate() {
        if is_candidate(&n.op) {
            if let Some(&t) = n.inputs.first() {
                watch[t as usize].push(i);
            }
        }
    }
    let mut max = vec![None::<f32>; desc.nodes.len()];
    let mut observe = |tensor: u32, values: &[f32]| {
        let Some(nodes) = watch.get(tensor as usize) else {
            return;
        };
        if nodes.is_empty() {
            return;
        }
        let m = values
            .iter()
            .filter(|v| v.is_finite())
            .fold(0f32, |m, v| m.max(v.abs()));
        for &i in nodes {
            let slot = &mut max[i];
            *slot = Some(slot.map_or(m, |p: f32| p.max(m)));
        }
    };
    crate::calibration::sample(desc, cal, &mut observe)?;
    Ok(max)
}

fn is_candidate(op: &Op) -> bool {
    matches!(op, Op::Dense | Op::Conv { .. })
}

/// Turns every Dense and Conv node with int8 weights and a calibrated range `> 0` into its
/// full-integer form: weight re-laid out output channel first (Dense `[N, K]`, Conv
/// `[M, C/g, KH, KW]`) and stored int8 along axis 0, a bias (zeros when the node had none,
/// f16), and the activation scale `max / 127` as a 4th input. Returns how many nodes changed.
///
/// Errors: a range list that does not match the nodes.
pub fn apply(desc: &mut ModelDesc, ranges: &[Option<f32>]) -> Result<usize> {
    if ranges.len() != desc.nodes.len() {
        bail!("calibration ranges do not match the model's nodes");
    }
    let mut changed = 0;
    for (i, range) in ranges.iter().enumerate() {
        let node = &desc.nodes[i];
        let Some(range) = range.filter(|r| *r > 0.0 && r.is_finite()) else {
            continue;
        };
        if !is_candidate(&node.op) || node.inputs.len() > 3 {
            continue;
        }
        let w = node.inputs[1] as usize;
        if !matches!(desc.tensors[w].stored, WeightType::Int8 { .. }) {
            continue;
        }
        let (shape, data) = match (&node.op, &desc.tensors[w].data) {
            (Op::Dense, Some(d)) => output_first_dense(&desc.tensors[w].shape, d)?,
            (Op::Conv { .. }, Some(d)) => output_first_conv(&desc.tensors[w].shape, d)?,
            _ => continue,
        };
        let channels = fixed(&shape[0])?;
        let name = desc.tensors[w].name.clone();
        let has_bias = node.inputs.len() == 3;
        // A new weight tensor: the old one may be shared with another reader.
        // Scales per output channel: the same list, whichever axis the channels run along.
        let scales = desc.tensors[w].int8_scales.clone();
        let new_w = push_const(desc, format!("{name}.q8"), shape, data, int8_axis0());
        desc.tensors[new_w as usize].int8_scales = scales;
        let bias = if has_bias {
            desc.nodes[i].inputs[2]
        } else {
            let zeros = vec![0f32; channels];
            push_const(
                desc,
                format!("{name}.q8_bias"),
                vec![Dim::Fixed(channels as u32)],
                zeros,
                WeightType::F16,
            )
        };
        let scale = push_const(
            desc,
            format!("{name}.act_scale"),
            vec![Dim::Fixed(1)],
            vec![range / 127.0],
            WeightType::F32,
        );
        let inputs = &mut desc.nodes[i].inputs;
        inputs.truncate(2);
        inputs[1] = new_w;
        inputs.push(bias);
        inputs.push(scale);
        changed += 1;
    }
    // The re-laid-out originals are unused now (unless another node shares them).
    crate::lower::passes::compact_tensors(desc);
    Ok(changed)
}

fn int8_axis0() -> WeightType {
    WeightType::Int8 {
        axis: 0,
        scales: ScaleType::Bf16,
    }
}

fn fixed(d: &Dim) -> Result<usize> {
    match d {
        Dim::Fixed(n) => Ok(*n as usize),
        _ => bail!("a weight with a batch dim"),
    }
}

fn push_const(
    desc: &mut ModelDesc,
    name: String,
    shape: Vec<Dim>,
    data: Vec<f32>,
    stored: WeightType,
) -> u32 {
    let t = crate::lower::passes::push_tensor(desc, name, shape, Some(data));
    desc.tensors[t as usize].stored = stored;
    t
}

/// Dense `w[K, N]` as `[N, K]`.
fn output_first_dense(shape: &[Dim], w: &[f32]) -> Result<(Vec<Dim>, Vec<f32>)> {
    let [k, n] = shape else {
        bail!("Dense weight is not 2-D");
    };
    let (k, n) = (fixed(k)?, fixed(n)?);
    let mut t = vec![0f32; w.len()];
    for r in 0..k {
        for c in 0..n {
            t[c * k + r] = w[r * n + c];
        }
    }
    Ok((vec![Dim::Fixed(n as u32), Dim::Fixed(k as u32)], t))
}

/// Channel-last Conv kernel `[C/g, (KH,) KW, M]` as `[M, C/g, (KH,) KW]`.
fn output_first_conv(shape: &[Dim], w: &[f32]) -> Result<(Vec<Dim>, Vec<f32>)> {
    let dims: Vec<usize> = shape.iter().map(fixed).collect::<Result<_>>()?;
    let (m, inner) = match dims.split_last() {
        Some((m, rest)) => (*m, rest.iter().product::<usize>()),
        None => bail!("Conv weight has rank 0"),
    };
    let mut t = vec![0f32; w.len()];
    for r in 0..inner {
        for c in 0..m {
            t[c * inner + r] = w[r * m + c];
        }
    }
    let mut out = vec![Dim::Fixed(m as u32)];
    out.extend(dims[..dims.len() - 1].iter().map(|d| Dim::Fixed(*d as u32)));
    Ok((out, t))
}
