//! Shapes and axes: tract dims (the symbolic batch `B`, `k·B`, fixed sizes) as flowrt dims,
//! and tract axes as flowrt axes.

use anyhow::{anyhow, bail, Result};
use flowrt::ir::Dim;
use tract_onnx::prelude::*;

use super::Lowering;

/// The length of a dim, the batch counted as 0 (for size arithmetic on fixed dims).
pub(super) fn fixed_len(d: Dim) -> usize {
    match d {
        Dim::Fixed(n) => n as usize,
        Dim::Batch => 0,
    }
}

impl Lowering<'_> {
    /// `k` when `d` is `k * B` for a constant `k > 1` (attention code folds heads into the
    /// batch axis: `[B, H*C, T] -> [B*H, C, T]`).
    fn batch_multiple(&self, d: &TDim) -> Option<u32> {
        let b = TDim::Sym(self.batch.clone());
        match d {
            TDim::MulInt(k, inner) if **inner == b && *k > 1 => u32::try_from(*k).ok(),
            _ => None,
        }
    }

    /// flowrt dims of a tract shape. A leading `k * B` becomes the two dims `[B, k]` (the
    /// same elements in the same order), so a tensor with heads folded into the batch keeps
    /// a plain batch dim; [`Lowering::axis`] maps the axes of such tensors.
    fn dims_to_shape(&self, dims: &[TDim]) -> Result<Vec<Dim>> {
        let b = TDim::Sym(self.batch.clone());
        let mut shape = Vec::with_capacity(dims.len() + 1);
        for d in dims {
            if *d == b {
                shape.push(Dim::Batch);
            } else if let Some(k) = self.batch_multiple(d) {
                shape.push(Dim::Batch);
                shape.push(Dim::Fixed(k));
            } else if let Ok(n) = d.to_i64() {
                shape.push(Dim::Fixed(
                    u32::try_from(n).map_err(|_| anyhow!("dim {n} too large"))?,
                ));
            } else {
                bail!("dimension `{d}` is not supported (only the batch size B, k·B, or a fixed size)");
            }
        }
        if shape.iter().filter(|d| **d == Dim::Batch).count() > 1 {
            bail!("shape {dims:?} uses the batch size twice");
        }
        Ok(shape)
    }

    /// The flowrt shape of the tract value at `outlet`.
    pub(super) fn shape_of(&self, outlet: OutletId) -> Result<Vec<Dim>> {
        let fact = self.model.outlet_fact(outlet)?;
        self.dims_to_shape(&fact.shape.to_tvec())
    }

    /// The flowrt shape of `node`'s output.
    pub(super) fn out_shape(&self, node: &TypedNode) -> Result<Vec<Dim>> {
        self.shape_of(OutletId::new(node.id, 0))
    }

    /// The tract axis holding `k * B` in the value at `outlet`, if any (stored as the two
    /// flowrt axes `[B, k]`).
    pub(super) fn split_axis(&self, outlet: OutletId) -> Result<Option<usize>> {
        let fact = self.model.outlet_fact(outlet)?;
        Ok(fact
            .shape
            .to_tvec()
            .iter()
            .position(|d| self.batch_multiple(d).is_some()))
    }

    /// `true` when the tract value has a `k * B` dim (stored as `[B, k]`).
    pub(super) fn is_split(&self, outlet: OutletId) -> Result<bool> {
        Ok(self.split_axis(outlet)?.is_some())
    }

    /// The flowrt axis of tract axis `axis` of the value at `outlet` (shifted by one past a
    /// split `k * B` dim; the split axis itself has no single flowrt axis).
    pub(super) fn axis(&self, outlet: OutletId, axis: usize) -> Result<usize> {
        match self.split_axis(outlet)? {
            None => Ok(axis),
            Some(s) if axis < s => Ok(axis),
            Some(s) if axis == s => {
                bail!("an op along a batch axis merged with heads (k·B) is not supported")
            }
            Some(_) => Ok(axis + 1),
        }
    }

    /// The flowrt axes of tract axes `axes` of the value at `outlet` (see [`Lowering::axis`]).
    pub(super) fn axes(&self, outlet: OutletId, axes: &[usize]) -> Result<Vec<usize>> {
        axes.iter().map(|a| self.axis(outlet, *a)).collect()
    }
}
