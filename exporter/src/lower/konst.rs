//! Constants: their f32 values, shapes, indices, and weight re-layouts at export.

use anyhow::{anyhow, bail, Result};
use flowrt::ir::Dim;
use tract_onnx::prelude::*;

/// The values of a constant of row-major `dims` with its axes permuted: output axis `i` is
/// input axis `perm[i]` (weight re-layouts at export).
pub(super) fn permute_const(data: &[f32], dims: &[usize], perm: &[usize]) -> Vec<f32> {
    if perm.iter().enumerate().all(|(i, p)| i == *p) {
        return data.to_vec();
    }
    let mut strides = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1];
    }
    let lens: Vec<usize> = perm.iter().map(|p| dims[*p]).collect();
    let steps: Vec<usize> = perm.iter().map(|p| strides[*p]).collect();
    let mut out = Vec::with_capacity(data.len());
    let mut idx = vec![0usize; perm.len()];
    for _ in 0..data.len() {
        out.push(data[idx.iter().zip(&steps).map(|(i, s)| i * s).sum::<usize>()]);
        for a in (0..idx.len()).rev() {
            idx[a] += 1;
            if idx[a] < lens[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    out
}

/// The f32 values of a constant; errors for other dtypes.
pub(super) fn konst_f32(k: &Tensor) -> Result<Vec<f32>> {
    if k.datum_type() == bool::datum_type() {
        // A constant mask (e.g. a Where condition): flowrt's masks are f32 1.0 / 0.0.
        let view = k.try_as_plain_ram()?;
        return Ok(view
            .as_slice::<bool>()?
            .iter()
            .map(|b| f32::from(u8::from(*b)))
            .collect());
    }
    if k.datum_type() != f32::datum_type() {
        bail!(
            "constant of dtype {:?} used in arithmetic; flowrt computes in f32",
            k.datum_type()
        );
    }
    let view = k.try_as_plain_ram()?;
    Ok(view.as_slice::<f32>()?.to_vec())
}

/// The shape of a constant as fixed flowrt dims.
pub(super) fn fixed_shape(k: &Tensor) -> Vec<Dim> {
    k.shape().iter().map(|&d| Dim::Fixed(d as u32)).collect()
}

/// Constant Gather indices into an axis of `len` entries (`what` names it in errors),
/// negative ones counted from the end as in ONNX.
pub(super) fn gather_indices(k: &Tensor, len: u32, what: &str) -> Result<Vec<u32>> {
    let k = k
        .cast_to::<i64>()
        .map_err(|e| anyhow!("Gather indices: {e}"))?;
    let view = k.try_as_plain_ram()?;
    view.as_slice::<i64>()?
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + i64::from(len) } else { i };
            u32::try_from(j)
                .ok()
                .filter(|j| *j < len)
                .ok_or_else(|| anyhow!("Gather index {i} is out of range for {what}"))
        })
        .collect()
}
