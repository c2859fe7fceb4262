//! Lowering of layout ops, which move or pick elements without computing: axis changes
//! (reshapes, permutations), Concat, broadcasts, Slice / strided slices and Gather.

use anyhow::{anyhow, bail, Result};
use flowrt::ir::{Dim, Op};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::array::{Gather, MultiBroadcastTo, Slice, TypedConcat};
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::downsample::Downsample;

use super::konst::{fixed_shape, gather_indices, permute_const};
use super::shape::fixed_len;
use super::{transpose_op, Lowering, Value};

impl Lowering<'_> {
    /// Lowers layout ops; `None` when `node` is none of them.
    pub(super) fn lower_layout(&mut self, node: &TypedNode) -> Result<Option<u32>> {
        let out = if let Some(axis_op) = node.op_as::<AxisOp>() {
            let x = self.tensor(node.inputs[0])?;
            match axis_op {
                AxisOp::Move(from, to) => {
                    // Permute tract axes; a split `k * B` axis moves as its two flowrt axes.
                    let rank = self.model.outlet_fact(node.inputs[0])?.rank();
                    let mut tract_perm: Vec<usize> = (0..rank).collect();
                    let moved = tract_perm.remove(*from);
                    tract_perm.insert(*to, moved);
                    let split = self.split_axis(node.inputs[0])?;
                    let flowrt_axes = |a: usize| -> Vec<u32> {
                        match split {
                            Some(s) if a == s => vec![s as u32, s as u32 + 1],
                            Some(s) if a > s => vec![a as u32 + 1],
                            _ => vec![a as u32],
                        }
                    };
                    let perm: Vec<u32> = tract_perm.iter().flat_map(|a| flowrt_axes(*a)).collect();
                    self.emit(node, transpose_op(&perm)?, vec![x])?
                }
                _ => self.emit(node, Op::Reshape, vec![x])?,
            }
        } else if let Some(concat) = node.op_as::<TypedConcat>() {
            let inputs = self.input_tensors(node)?;
            let axis = self.axis(node.inputs[0], concat.axis)? as u32;
            self.emit(node, Op::Concat { axis }, inputs)?
        } else if let Some(gather) = node.op_as::<Gather>() {
            self.lower_gather(node, gather)?
        } else if node.op_is::<MultiBroadcastTo>() {
            let x = self.tensor(node.inputs[0])?;
            self.emit(node, Op::Expand, vec![x])?
        } else if let Some(slice) = node.op_as::<Slice>() {
            let x = self.tensor(node.inputs[0])?;
            let start = slice
                .start
                .to_i64()
                .map_err(|_| anyhow!("Slice start is not fixed"))?;
            let end = slice
                .end
                .to_i64()
                .map_err(|_| anyhow!("Slice end is not fixed"))?;
            let op = Op::Slice {
                axis: self.axis(node.inputs[0], slice.axis)? as u32,
                start: start as u32,
                end: end as u32,
                step: 1,
            };
            self.emit(node, op, vec![x])?
        } else if let Some(ds) = node.op_as::<Downsample>() {
            // tract's form of a strided Slice: every `stride`-th element from `modulo`.
            let x = self.tensor(node.inputs[0])?;
            let axis = self.axis(node.inputs[0], ds.axis)?;
            let dim = self.dims(x).get(axis).copied();
            let (Some(Dim::Fixed(len)), Ok(step)) = (dim, u32::try_from(ds.stride)) else {
                bail!(
                    "strided slice along the batch axis or with a negative step is not supported"
                );
            };
            if step == 0 || ds.modulo as u32 >= len {
                bail!(
                    "strided slice with stride {} from {} of {len} is empty",
                    ds.stride,
                    ds.modulo
                );
            }
            let op = Op::Slice {
                axis: axis as u32,
                start: ds.modulo as u32,
                end: len,
                step,
            };
            self.emit(node, op, vec![x])?
        } else {
            return Ok(None);
        };
        Ok(Some(out))
    }

    /// ONNX `Gather(table, idx, axis=0)`: an embedding lookup. `idx` is the label (integer
    /// values carried as f32) or an integer constant; the table has no batch dim.
    fn lower_gather(&mut self, node: &TypedNode, gather: &Gather) -> Result<u32> {
        let runtime_table = match self.value(node.inputs[0])? {
            Value::Tensor(t) => self.desc.tensors[t as usize].data.is_none(),
            Value::Konst(_) => false,
        };
        if runtime_table {
            if let Value::Konst(k) = self.value(node.inputs[1])? {
                return self.lower_gather_slices(node, gather.axis, &k);
            }
        }
        let mut table = self.tensor(node.inputs[0])?;
        let axis = gather.axis;
        // A constant table gathered along another axis (tract moves embedding tables): the
        // same lookup on the table with that axis moved first, then the result permuted.
        let moved = if axis != 0 {
            let t = &self.desc.tensors[table as usize];
            let (Some(data), rank) = (t.data.clone(), t.shape.len()) else {
                bail!("Gather along axis {axis} of a run-time tensor with run-time indices is not supported");
            };
            if axis >= rank {
                bail!("Gather axis {axis} is out of range for rank {rank}");
            }
            let dims: Vec<usize> = t.shape.iter().map(|d| fixed_len(*d)).collect();
            let mut perm = vec![axis];
            perm.extend((0..rank).filter(|a| *a != axis));
            let t_data = permute_const(&data, &dims, &perm);
            let mut shape = vec![t.shape[axis]];
            shape.extend(t.shape[..axis].iter().copied());
            shape.extend(t.shape[axis + 1..].iter().copied());
            table = self.push_const(node, "table_axis_first", shape, t_data);
            Some(rank)
        } else {
            None
        };
        let n = match self.dims(table).first() {
            Some(Dim::Fixed(n)) => *n,
            _ => bail!("Gather table must have a fixed first dim (no batch dim)"),
        };
        let idx = match self.value(node.inputs[1])? {
            Value::Tensor(t) if self.int_values.contains(&t) => t,
            Value::Tensor(_) => bail!(
                "Gather indices computed at run time from float values are not supported \
                 (only the label input, or a constant)"
            ),
            Value::Konst(k) => {
                let rows = format!("a table of {n} rows");
                let data = gather_indices(&k, n, &rows)?;
                let data = data.into_iter().map(|j| j as f32).collect();
                self.push_const(node, "indices", fixed_shape(&k), data)
            }
        };
        let Some(rank) = moved else {
            return self.emit(node, Op::Gather, vec![table, idx]);
        };
        // Gathered: idx dims, then the table's axes before `axis`, then those after it;
        // ONNX's order is before-axes, idx dims, after-axes.
        let ni = self.dims(idx).len();
        let mut shape = self.dims(idx).to_vec();
        shape.extend_from_slice(&self.dims(table)[1..]);
        let g = self.emit_step(node, "gathered", Op::Gather, vec![table, idx], shape);
        let before = axis as u32;
        let mut perm: Vec<u32> = (ni as u32..ni as u32 + before).collect();
        perm.extend(0..ni as u32);
        perm.extend(ni as u32 + before..(ni + rank - 1) as u32);
        self.emit(node, transpose_op(&perm)?, vec![g])
    }

    /// `Gather` of a run-time tensor with constant indices (picking q / k / v out of a
    /// stacked projection, a head, a token): one `Slice` per index along the axis, joined by
    /// `Concat`, then reshaped to the output shape (a scalar index drops the axis).
    fn lower_gather_slices(&mut self, node: &TypedNode, axis: usize, idx: &Tensor) -> Result<u32> {
        let x = self.tensor(node.inputs[0])?;
        let axis = self.axis(node.inputs[0], axis)?;
        let shape = self.dims(x).to_vec();
        let Some(Dim::Fixed(len)) = shape.get(axis).copied() else {
            bail!("Gather along the batch axis is not supported");
        };
        let indices = gather_indices(idx, len, &len.to_string())?;
        if indices.is_empty() {
            bail!("Gather with no indices");
        }
        // `shape` with `n` entries along `axis`.
        let along = |n: u32| {
            let mut s = shape.clone();
            s[axis] = Dim::Fixed(n);
            s
        };
        let mut parts = Vec::new();
        for (n, &i) in indices.iter().enumerate() {
            let op = Op::Slice {
                axis: axis as u32,
                start: i,
                end: i + 1,
                step: 1,
            };
            parts.push(self.emit_step(node, &format!("pick{n}"), op, vec![x], along(1)));
        }
        let joined = if parts.len() == 1 {
            parts[0]
        } else {
            let op = Op::Concat { axis: axis as u32 };
            let s = along(parts.len() as u32);
            self.emit_step(node, "picked", op, parts, s)
        };
        self.emit(node, Op::Reshape, vec![joined])
    }
}
