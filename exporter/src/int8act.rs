//! Full-integer mode (`flowrt export --weights int8 --activations int8`): Dense and Conv
//! nodes whose weights are int8 also quantize their input to int8 with a scale calibrated
//! here, and accumulate in integers (`flowrt::ops::dense_q8`, `conv_q8`).
//!
//! Calibration samples trajectories of the model ([`crate::calibration`], with the int8
//! weights' values when they are rounded first) and picks, per Dense / Conv input, the range
//! int8 covers: the clipping point with the least expected squared quantization error over
//! the values seen ([`calibrate`]); the node's activation scale is that range over 127. A
//! node whose input stayed 0 keeps f32 activations.
//!
//! The transcendental activations (SiLU, GELU, sigmoid, tanh, softplus, ELU, SELU) become
//! table lookups ([`apply_tables`], `flowrt::ops::lut`): their input is quantized to int8 the
//! same way, with a range calibrated the same way, and the 255 possible results are computed
//! here with the runtime's own function and stored (f16 when every value fits). On a
//! microcontroller a lookup costs a handful of instructions where SiLU costs about fifty.

use anyhow::{bail, Result};
use flowrt::format::{Dim, ScaleType, WeightType};
use flowrt::ir::{ModelDesc, Op, UnaryOp};

pub use crate::calibration::Calibration;

/// Histogram bins of `|x|` per node for the clipping search of [`calibrate`].
const BINS: usize = 2048;

/// Picks, for every Dense and Conv node of `desc` and every activation [`apply_tables`]
/// may tabulate, the range of its input 0 that int8
/// covers (`None` for other nodes, `Some(0.0)` for an input that stayed 0): two passes over
/// the calibration trajectories, the first for the largest `|x|`, the second for a
/// `BINS`-bin histogram of `|x|` below it; the range is the clipping point `c` that
/// minimizes the expected squared quantization error over those values — rounding,
/// `(c / 127)² / 12` per value within `c`, plus clipping, `(|x| - c)²` per value beyond.
/// A rare outlier thus no longer coarsens the steps for every other value.
///
/// Errors: a model that is not a velocity field the CPU can sample (a plain graph, a `cond`
/// input), or any evaluation error.
pub fn calibrate(desc: &ModelDesc, cal: &Calibration) -> Result<Vec<Option<f32>>> {
    // Which tensor feeds which node's input 0.
    let mut watch: Vec<Vec<usize>> = vec![Vec::new(); desc.tensors.len()];
    for (i, n) in desc.nodes.iter().enumerate() {
        if is_candidate(&n.op) || tabulated(&n.op).is_some() {
            if let Some(&t) = n.inputs.first() {
                watch[t as usize].push(i);
            }
        }
    }
    let watched = |tensor: u32| watch.get(tensor as usize).filter(|n| !n.is_empty());
    let mut max = vec![None::<f32>; desc.nodes.len()];
    crate::calibration::sample(desc, cal, &mut |tensor, values| {
        let Some(nodes) = watched(tensor) else {
            return;
        };
        let m = values
            .iter()
            .filter(|v| v.is_finite())
            .fold(0f32, |m, v| m.max(v.abs()));
        for &i in nodes {
            let slot = &mut max[i];
            *slot = Some(slot.map_or(m, |p: f32| p.max(m)));
        }
    })?;
    let mut hist: Vec<Vec<u64>> = max
        .iter()
        .map(|m| {
            if m.is_some_and(|m| m > 0.0) {
                vec![0; BINS]
            } else {
                Vec::new()
            }
        })
        .collect();
    crate::calibration::sample(desc, cal, &mut |tensor, values| {
        let Some(nodes) = watched(tensor) else {
            return;
        };
        for &i in nodes {
            let (Some(m), h) = (max[i], &mut hist[i]) else {
                continue;
            };
            if h.is_empty() {
                continue;
            }
            let per_bin = BINS as f32 / m;
            for v in values.iter().filter(|v| v.is_finite()) {
                h[((v.abs() * per_bin) as usize).min(BINS - 1)] += 1;
            }
        }
    })?;
    Ok(max
        .iter()
        .zip(&hist)
        .map(|(m, h)| m.map(|m| if h.is_empty() { m } else { mse_clip(h, m) }))
        .collect())
}

/// The clipping point in `(0, max]` (a bin edge of `h`, a histogram of `|x|` over
/// `[0, max)`) with the least expected squared int8 quantization error.
fn mse_clip(h: &[u64], max: f32) -> f32 {
    let width = f64::from(max) / h.len() as f64;
    // Suffix sums over the bins above an edge: count, Σ x, Σ x² (bin centres).
    let (mut n, mut sx, mut sxx) = (0f64, 0f64, 0f64);
    let total: f64 = h.iter().map(|c| *c as f64).sum();
    let mut best = (f64::INFINITY, max);
    for j in (1..=h.len()).rev() {
        let c = j as f64 * width;
        let clipped = sxx - 2.0 * c * sx + c * c * n;
        let step = c / 127.0;
        let err = clipped + (total - n) * step * step / 12.0;
        if err < best.0 {
            best = (err, c as f32);
        }
        let (count, x) = (h[j - 1] as f64, (j as f64 - 0.5) * width);
        n += count;
        sx += count * x;
        sxx += count * x * x;
    }
    best.1
}

fn is_candidate(op: &Op) -> bool {
    matches!(op, Op::Dense | Op::Conv { .. })
}

/// The function of a unary node [`apply_tables`] turns into a table: the transcendental
/// activations, which cost tens of instructions per value. Cheap or exact ones (ReLU, leaky
/// ReLU, arithmetic) and the math functions of time embeddings and normalizations (sin,
/// exp, log, rsqrt, ...) stay as they are.
fn tabulated(op: &Op) -> Option<UnaryOp> {
    match op {
        Op::Unary(
            u @ (UnaryOp::Sigmoid
            | UnaryOp::Tanh
            | UnaryOp::Softplus
            | UnaryOp::Silu
            | UnaryOp::GeluErf
            | UnaryOp::GeluTanh
            | UnaryOp::Elu { .. }
            | UnaryOp::Selu { .. }),
        ) => Some(*u),
        _ => None,
    }
}

/// Turns every transcendental activation (SiLU, GELU, sigmoid, tanh, softplus, ELU, SELU)
/// whose input has a calibrated range `> 0` into a `Lut` node: inputs `[x, table, scale]`
/// with `scale = range / 127` (f32) and `table[j] = f((j − 127) · scale)` for `j` in
/// `0..255`, computed with the runtime's own `f` and stored f16 when every value is finite
/// and within f16's range (else f32). Returns how many nodes changed.
///
/// Errors: a range list that does not match the nodes.
pub fn apply_tables(desc: &mut ModelDesc, ranges: &[Option<f32>]) -> Result<usize> {
    if ranges.len() != desc.nodes.len() {
        bail!("calibration ranges do not match the model's nodes");
    }
    let mut changed = 0;
    for (i, range) in ranges.iter().enumerate() {
        let Some(f) = tabulated(&desc.nodes[i].op) else {
            continue;
        };
        let Some(range) = range.filter(|r| *r > 0.0 && r.is_finite()) else {
            continue;
        };
        let x = desc.nodes[i].inputs[0] as usize;
        if desc.tensors[x].data.is_some() {
            continue;
        }
        let scale = range / 127.0;
        let table: Vec<f32> = (-127i32..=127).map(|q| f.apply(q as f32 * scale)).collect();
        let stored = if table.iter().all(|v| v.is_finite() && v.abs() <= 65504.0) {
            WeightType::F16
        } else {
            WeightType::F32
        };
        let name = desc.nodes[i].name.clone();
        let entries = Dim::Fixed(table.len() as u32);
        let t = push_const(desc, format!("{name}.table"), vec![entries], table, stored);
        let s = push_const(
            desc,
            format!("{name}.table_scale"),
            vec![Dim::Fixed(1)],
            vec![scale],
            WeightType::F32,
        );
        let node = &mut desc.nodes[i];
        node.op = Op::Lut { of: f };
        node.inputs = vec![node.inputs[0], t, s];
        changed += 1;
    }
    Ok(changed)
}

/// Turns every Dense and Conv node with int8 weights and a calibrated range `> 0` into its
/// full-integer form: weight re-laid out output channel first (Dense `[N, K]`, Conv
/// `[M, C/g, KH, KW]`) and stored int8 along axis 0, a bias (zeros when the node had none,
/// f16), and the activation scale `range / 127` as a 4th input. Returns how many nodes changed.
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
        let WeightType::Int8 {
            scales: scale_type, ..
        } = desc.tensors[w].stored
        else {
            continue;
        };
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
        let new_w = push_const(
            desc,
            format!("{name}.q8"),
            shape,
            data,
            int8_axis0(scale_type),
        );
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

/// int8 along axis 0 (output channel first), with the original weight's scale type (the
/// scales are the same list).
fn int8_axis0(scales: ScaleType) -> WeightType {
    WeightType::Int8 { axis: 0, scales }
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

#[cfg(test)]
mod tests {
    use super::*;
    use flowrt::ir::{ModelBuilder, Role};

    /// Dense → SiLU → Dense → ReLU → SELU → Sin: the calibrated SiLU becomes a table of
    /// `silu(q · range / 127)` stored f16, the SELU whose values pass f16's range a table
    /// stored f32; ReLU and sin, and an activation without a range, stay as they are.
    #[test]
    fn tables_replace_the_calibrated_transcendental_activations() {
        let f = Dim::Fixed;
        let mut b = ModelBuilder::default();
        let x = b.input(&[f(2), f(3)], Role::Data);
        let w = b.constant(&[f(3), f(3)], vec![0.5; 9]);
        let d0 = b.node(Op::Dense, &[x, w], &[f(2), f(3)]);
        let a1 = b.node(Op::Unary(UnaryOp::Silu), &[d0], &[f(2), f(3)]);
        let d2 = b.node(Op::Dense, &[a1, w], &[f(2), f(3)]);
        let a3 = b.node(Op::Unary(UnaryOp::Relu), &[d2], &[f(2), f(3)]);
        let selu = UnaryOp::Selu {
            alpha: 1.67,
            gamma: 1.05,
        };
        let a4 = b.node(Op::Unary(selu), &[a3], &[f(2), f(3)]);
        let a5 = b.node(Op::Unary(UnaryOp::Sin), &[a4], &[f(2), f(3)]);
        let a6 = b.node(Op::Unary(UnaryOp::Tanh), &[a5], &[f(2), f(3)]);
        let mut desc = b.finish(a6);
        let ranges = [None, Some(2.0), None, Some(1.0), Some(1e5), Some(3.0), None];
        assert_eq!(apply_tables(&mut desc, &ranges).unwrap(), 2);
        let ops: Vec<_> = desc.nodes.iter().map(|n| n.op).collect();
        assert_eq!(ops[1], Op::Lut { of: UnaryOp::Silu });
        assert_eq!(ops[3], Op::Unary(UnaryOp::Relu));
        assert_eq!(ops[4], Op::Lut { of: selu });
        assert_eq!(ops[5], Op::Unary(UnaryOp::Sin));
        assert_eq!(ops[6], Op::Unary(UnaryOp::Tanh));
        for (node, range, stored) in [(1, 2.0f32, WeightType::F16), (4, 1e5, WeightType::F32)] {
            let n = &desc.nodes[node];
            let f = match n.op {
                Op::Lut { of } => of,
                _ => unreachable!(),
            };
            let (t, s) = (
                &desc.tensors[n.inputs[1] as usize],
                &desc.tensors[n.inputs[2] as usize],
            );
            assert_eq!(t.stored, stored, "node {node}");
            assert_eq!(t.shape, vec![Dim::Fixed(255)]);
            let scale = range / 127.0;
            assert_eq!(s.data.as_deref(), Some(&[scale][..]));
            let table = t.data.as_ref().unwrap();
            for (j, v) in table.iter().enumerate() {
                let want = f.apply((j as i32 - 127) as f32 * scale);
                assert_eq!(v.to_bits(), want.to_bits(), "node {node} entry {j}");
            }
        }
        // The written file loads and runs its tables.
        let bytes = flowrt::write::write(&desc).unwrap();
        let file = flowrt::format::AlignedBytes::copy_from(&bytes);
        assert!(flowrt::Model::from_bytes(file.as_slice()).is_ok());
        assert!(apply_tables(&mut desc, &ranges[1..]).is_err());
    }

    /// Values spread evenly up to the maximum: clipping only loses, the range stays near it.
    #[test]
    fn uniform_values_keep_their_whole_range() {
        let c = mse_clip(&[1000; BINS], 8.0);
        assert!((7.9..=8.0).contains(&c), "{c}");
    }

    /// About a million values below 1 % of the maximum and one outlier at it: the error
    /// `n (c / 127)² / 12 + (max - c)²` is least at `c = max / (1 + n / (12 · 127²))`
    /// (its derivative's root), far below the outlier.
    #[test]
    fn a_rare_outlier_is_clipped_where_the_error_is_least() {
        let mut h = vec![0u64; BINS];
        h[..BINS / 100].iter_mut().for_each(|c| *c = 50_000);
        h[BINS - 1] = 1;
        let n = (BINS / 100 * 50_000) as f64;
        let best = 100.0 / (1.0 + n / (12.0 * 127.0 * 127.0));
        let c = f64::from(mse_clip(&h, 100.0));
        assert!((c - best).abs() < 0.1, "{c} vs {best}");
    }
}
