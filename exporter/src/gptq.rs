//! Error-compensated rounding of int8 Dense weights: GPTQ (Frantar et al., "GPTQ: Accurate
//! Post-Training Quantization for Generative Pre-trained Transformers", 2022), the default
//! of `flowrt export --weights int8` (`--rounding nearest` turns it off).
//!
//! Rounding every weight to its nearest int8 step leaves errors that add up along each
//! output's reduction. GPTQ rounds the inputs `k` of a Dense `w[K, N]` one at a time and
//! moves each row's rounding error onto the rows not yet rounded, weighted by how the
//! layer's inputs co-vary on real data: `H = Σ x xᵀ` over the layer's input rows `x`,
//! collected on calibration trajectories ([`crate::calibration`]). The scales stay those of
//! nearest rounding (`max |w| / 127` per output channel, rounded up to bfloat16), and what
//! is stored is still one int8 per weight times its channel's scale: the file format and
//! the runtime do not change, only which int8 values are chosen.

use anyhow::{Context, Result};
use flowrt::format::{Dim, WeightType};
use flowrt::ir::{ModelDesc, Op};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2};

use crate::calibration::Calibration;

/// How `--weights int8` chooses each weight's int8 value (`export --rounding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Each weight to its nearest step (`round(w / scale)`).
    Nearest,
    /// GPTQ on every Dense weight, with Hessians from these calibration trajectories; the
    /// other int8 weights (Conv, ConvTranspose, Gather) round to nearest. A model that
    /// cannot be calibrated (a plain graph, a `cond` or `guidance` input) rounds to nearest
    /// and says so in its `int8_rounding` metadata.
    Gptq(Calibration),
}

impl Default for Rounding {
    fn default() -> Self {
        Rounding::Gptq(Calibration::default())
    }
}

/// Input rows of one layer that enter its Hessian, at most (spread evenly over the steps
/// and the batch): enough for a well-conditioned `H` at the widths flowrt targets, and a
/// bounded cost (`rows × K²` per layer).
const MAX_HESSIAN_ROWS: usize = 8192;

/// Relative damping added to `H`'s diagonal (GPTQ's `percdamp`), times 10 per retry when
/// the damped `H` is still not positive definite.
const DAMPING: f64 = 0.01;

/// One Dense weight GPTQ rounds.
struct Layer {
    /// The weight tensor `w[K, N]`.
    weight: usize,
    /// The tensor feeding the Dense node's input 0.
    input: u32,
    k: usize,
    n: usize,
}

/// Rounds every int8 Dense weight of `desc` with GPTQ: samples `cal`'s trajectories once,
/// then replaces each weight's values by the chosen `q × scale` and records the scales in
/// [`flowrt::ir::TensorDesc::int8_scales`] (so the writer stores exactly those `q`).
/// Returns how many weights it rounded.
///
/// Errors: a model that cannot be calibrated ([`crate::calibration::sample`]).
pub fn apply(desc: &mut ModelDesc, cal: &Calibration) -> Result<usize> {
    let layers = dense_layers(desc);
    if layers.is_empty() {
        return Ok(0);
    }
    let mut watch: Vec<Vec<usize>> = vec![Vec::new(); desc.tensors.len()];
    for (j, l) in layers.iter().enumerate() {
        watch[l.input as usize].push(j);
    }
    let per_call = MAX_HESSIAN_ROWS.div_ceil(cal.steps.max(1)).max(1);
    let mut hessians: Vec<Array2<f64>> = layers.iter().map(|l| Array2::zeros((l.k, l.k))).collect();
    let mut picked = Vec::new();
    let mut observe = |tensor: u32, values: &[f32]| {
        for &j in watch.get(tensor as usize).map_or(&[][..], |v| v.as_slice()) {
            let k = layers[j].k;
            let rows = values.len() / k;
            if rows == 0 {
                continue;
            }
            picked.clear();
            let rows_in = values.chunks_exact(k).step_by(rows.div_ceil(per_call));
            // A non-finite activation would poison H; it says nothing about the weights.
            picked.extend(
                rows_in
                    .flatten()
                    .map(|v| if v.is_finite() { f64::from(*v) } else { 0.0 }),
            );
            if let Ok(x) = ArrayView2::from_shape((picked.len() / k, k), &picked) {
                general_mat_mul(1.0, &x.t(), &x, 1.0, &mut hessians[j]);
            }
        }
    };
    crate::calibration::sample(desc, cal, &mut observe)?;
    let mut rounded = 0;
    for (l, h) in layers.iter().zip(hessians) {
        let t = &mut desc.tensors[l.weight];
        let WeightType::Int8 { scales: stored, .. } = t.stored else {
            continue;
        };
        let Some(data) = &t.data else {
            continue;
        };
        // Channels run along axis 1 of `w[K, N]`: element `e` is in channel `e % N`.
        let scales = flowrt::write::channel_scales(data, l.n, 1, stored);
        let Some(u) = inverse_cholesky_upper(h) else {
            continue;
        };
        let values = round_layer(data, l.n, &scales, &u)
            .with_context(|| format!("GPTQ rounding of {}", t.name))?;
        t.data = Some(values);
        t.int8_scales = Some(scales);
        rounded += 1;
    }
    Ok(rounded)
}

/// The Dense nodes whose weight `w[K, N]` is stored int8 along axis 1 (the output
/// channels), read by that node alone and not rounded yet.
fn dense_layers(desc: &ModelDesc) -> Vec<Layer> {
    let mut readers = vec![0usize; desc.tensors.len()];
    for n in &desc.nodes {
        for &t in &n.inputs {
            readers[t as usize] += 1;
        }
    }
    desc.nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Dense))
        .filter_map(|n| {
            let (&input, &w) = (n.inputs.first()?, n.inputs.get(1)?);
            let t = desc.tensors.get(w as usize)?;
            let [Dim::Fixed(k), Dim::Fixed(cols)] = t.shape[..] else {
                return None;
            };
            let int8_cols = matches!(t.stored, WeightType::Int8 { axis: 1, .. });
            (int8_cols && t.data.is_some() && t.int8_scales.is_none() && readers[w as usize] == 1)
                .then_some(Layer {
                    weight: w as usize,
                    input,
                    k: k as usize,
                    n: cols as usize,
                })
        })
        .collect()
}

/// GPTQ's loop over the rows of `w[K, N]` (`scales[N]`; `u` the upper Cholesky factor of
/// `H⁻¹`): each row is rounded to `q × scale` and its error, divided by `u[k, k]`, is
/// subtracted from the later rows in proportion to `u[k, ..]`. Returns the rounded values
/// (each exactly an int8 times its channel's scale).
///
/// Errors: a weight whose size does not match `u` and the scales.
fn round_layer(w: &[f32], n: usize, scales: &[f32], u: &Array2<f64>) -> Result<Vec<f32>> {
    let k = u.nrows();
    anyhow::ensure!(
        w.len() == k * n && scales.len() == n,
        "weight {} values, Hessian {k}x{k}, {} scales",
        w.len(),
        scales.len()
    );
    let mut work: Vec<f64> = w.iter().map(|v| f64::from(*v)).collect();
    let mut out = vec![0f32; w.len()];
    let mut err = vec![0f64; n];
    for i in 0..k {
        let d = u[[i, i]];
        let (done, rest) = work.split_at_mut((i + 1) * n);
        let row = &done[i * n..];
        for (((e, o), v), s) in err
            .iter_mut()
            .zip(&mut out[i * n..(i + 1) * n])
            .zip(row)
            .zip(scales)
        {
            let q = if *s == 0.0 {
                0.0
            } else {
                (*v / f64::from(*s)).round().clamp(-127.0, 127.0) as f32
            };
            // Exact for bfloat16 scales (7 + 8 significant bits); with f32 scales the
            // product rounds by half an ulp at most, and the writer's `round(o / s)` gives
            // back the same `q` either way.
            *o = q * *s;
            *e = (*v - f64::from(*o)) / d;
        }
        for (j, later) in rest.chunks_exact_mut(n).enumerate() {
            let f = u[[i, i + 1 + j]];
            if f != 0.0 {
                for (x, e) in later.iter_mut().zip(&err) {
                    *x -= f * *e;
                }
            }
        }
    }
    Ok(out)
}

/// `U` upper triangular with `Uᵀ U = (H + λ I)⁻¹`, `λ` = [`DAMPING`] × the mean of `H`'s
/// diagonal (inputs that were always 0 get a diagonal of 1: their weights only need to
/// round); `None` when `H` stays indefinite after three stronger dampings.
fn inverse_cholesky_upper(mut h: Array2<f64>) -> Option<Array2<f64>> {
    let k = h.nrows();
    for i in 0..k {
        if h[[i, i]] <= 0.0 {
            h[[i, i]] = 1.0;
        }
    }
    let mean = h.diag().sum() / k.max(1) as f64;
    for attempt in 0..4 {
        let mut damped = h.clone();
        let lambda = DAMPING * 10f64.powi(attempt) * mean;
        damped.diag_mut().mapv_inplace(|d| d + lambda);
        let Some(l) = cholesky_lower(&damped) else {
            continue;
        };
        let linv = lower_inverse(&l);
        let hinv = linv.t().dot(&linv);
        return cholesky_lower(&hinv).map(|l| l.reversed_axes());
    }
    None
}

/// `L` lower triangular with `L Lᵀ = a`; `None` unless `a` is positive definite.
fn cholesky_lower(a: &Array2<f64>) -> Option<Array2<f64>> {
    let k = a.nrows();
    let mut l = Array2::<f64>::zeros((k, k));
    for j in 0..k {
        let mut d = a[[j, j]];
        for p in 0..j {
            d -= l[[j, p]] * l[[j, p]];
        }
        if !(d > 0.0 && d.is_finite()) {
            return None;
        }
        let d = d.sqrt();
        l[[j, j]] = d;
        for i in j + 1..k {
            let mut s = a[[i, j]];
            for p in 0..j {
                s -= l[[i, p]] * l[[j, p]];
            }
            l[[i, j]] = s / d;
        }
    }
    Some(l)
}

/// The inverse of a lower triangular `l` with a positive diagonal (forward substitution).
fn lower_inverse(l: &Array2<f64>) -> Array2<f64> {
    let k = l.nrows();
    let mut inv = Array2::<f64>::zeros((k, k));
    for c in 0..k {
        inv[[c, c]] = 1.0 / l[[c, c]];
        for r in c + 1..k {
            let mut s = 0.0;
            for p in c..r {
                s += l[[r, p]] * inv[[p, c]];
            }
            inv[[r, c]] = -s / l[[r, r]];
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Uᵀ U` recovers `(H + λI)⁻¹` for a small SPD `H`.
    #[test]
    fn inverse_cholesky_matches_the_definition() {
        let h = ndarray::arr2(&[[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]]);
        let u = inverse_cholesky_upper(h.clone()).expect("positive definite");
        let lambda = DAMPING * (4.0 + 3.0 + 2.0) / 3.0;
        let damped = &h + &(Array2::<f64>::eye(3) * lambda);
        let prod = damped.dot(&u.t().dot(&u));
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((prod[[i, j]] - want).abs() < 1e-12, "{prod:?}");
            }
            for j in 0..i {
                assert_eq!(u[[i, j]], 0.0, "upper triangular");
            }
        }
    }

    /// With inputs that never vary together (`H` diagonal), GPTQ has nothing to compensate
    /// along and must give nearest rounding.
    #[test]
    fn diagonal_hessian_gives_nearest_rounding() {
        let w = [0.31f32, -0.7, 0.05, 0.9, -0.33, 0.12];
        let scales = [flowrt::write::int8_scale(0.9, flowrt::format::ScaleType::Bf16); 2];
        let h = Array2::from_diag(&ndarray::arr1(&[1.0, 2.0, 3.0]));
        let u = inverse_cholesky_upper(h).expect("positive definite");
        let got = round_layer(&w, 2, &scales, &u).expect("sizes");
        let near = flowrt::write::quantize_with(&w, 1, &scales);
        for (g, (q, s)) in got.iter().zip(near.iter().zip(scales.iter().cycle())) {
            assert_eq!(*g, f32::from(*q) * *s);
        }
    }

    /// On correlated inputs the output error `‖X (W - Q)‖` is smaller than nearest
    /// rounding's, for the same scales, and every value is an int8 step.
    #[test]
    fn compensation_reduces_the_output_error() {
        let (k, n, rows) = (16usize, 8usize, 400usize);
        let mut s = 0x1234_5678u64;
        let mut next = || {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f64 / (1u64 << 24) as f64) - 0.5
        };
        // Inputs with a shared component (correlated), weights in [-0.5, 0.5).
        let x: Vec<f64> = (0..rows)
            .flat_map(|_| {
                let common = next();
                (0..k).map(|_| common + 0.3 * next()).collect::<Vec<_>>()
            })
            .collect();
        let w: Vec<f32> = (0..k * n).map(|_| next() as f32).collect();
        let xv = ArrayView2::from_shape((rows, k), &x).expect("shape");
        let h = xv.t().dot(&xv);
        let scales: Vec<f32> = (0..n)
            .map(|c| {
                let amax = w
                    .iter()
                    .skip(c)
                    .step_by(n)
                    .fold(0f32, |m, v| m.max(v.abs()));
                flowrt::write::int8_scale(amax, flowrt::format::ScaleType::Bf16)
            })
            .collect();
        let u = inverse_cholesky_upper(h).expect("positive definite");
        let gptq = round_layer(&w, n, &scales, &u).expect("sizes");
        let near: Vec<f32> = flowrt::write::quantize_with(&w, 1, &scales)
            .iter()
            .zip(scales.iter().cycle())
            .map(|(q, s)| f32::from(*q) * *s)
            .collect();
        let out_err = |q: &[f32]| {
            let d: Vec<f64> = w.iter().zip(q).map(|(a, b)| f64::from(*a - *b)).collect();
            let dv = ArrayView2::from_shape((k, n), &d).expect("shape");
            xv.dot(&dv).mapv(|v| v * v).sum()
        };
        let (e_gptq, e_near) = (out_err(&gptq), out_err(&near));
        assert!(e_gptq < 0.7 * e_near, "gptq {e_gptq} vs nearest {e_near}");
        for (v, s) in gptq.iter().zip(scales.iter().cycle()) {
            let q = v / s;
            assert!(
                q == q.round() && q.abs() <= 127.0,
                "{v} is not an int8 step of {s}"
            );
        }
    }
}
