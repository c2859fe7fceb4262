//! CPU execution: [`run`] evaluates the graph once; [`CpuField`] is the velocity field
//! `v(x, t)` the solvers drive.
//!
//! Both work in a caller-supplied arena (`&mut [u8]`, 4-byte aligned; see `docs/arena.md`):
//!
//! ```text
//! | fixed region | per-row region (per_row * B) | CpuField scratch: t | xt | label | guidance |
//! 0              fixed                          graph_arena_bytes(B)                     required_arena_bytes(B)
//! ```
//!
//! Sizes and alignment are checked before any work; nothing is allocated.

use core::marker::PhantomData;
use core::ops::Range;

use crate::error::expect_len;
use crate::field::{ConditionalField, Conditioning, CpuOps, Signature, VelocityField};
use crate::format::{align_up, InputRole, NodeOp, TensorKind};
use crate::model::{Model, NodeRec, TensorRec, MAX_INPUTS};
use crate::ops::{self, Dims, Weights};
use crate::select::{self, node, All, Selection};
use crate::Error;

#[cfg(feature = "alloc")]
mod steps;

fn check_batch(batch: usize) -> Result<(), Error> {
    if batch == 0 {
        Err(Error::BadArgument {
            what: "batch size must be at least 1",
        })
    } else {
        Ok(())
    }
}

/// Casts the first `bytes` bytes of `arena` to f32 after checking size and alignment.
fn arena_f32(arena: &mut [u8], bytes: usize) -> Result<(&mut [f32], &mut [u8]), Error> {
    if arena.as_ptr().align_offset(4) != 0 {
        return Err(Error::Misaligned);
    }
    let given = arena.len();
    let (g, rest) = arena
        .split_at_mut_checked(bytes)
        .ok_or(Error::ArenaTooSmall {
            needed: bytes,
            given,
        })?;
    let g: &mut [f32] = bytemuck::try_cast_slice_mut(g).map_err(|_| Error::Misaligned)?;
    Ok((g, rest))
}

/// Evaluates the graph once (direct graph evaluation, e.g. to compare with onnxruntime).
///
/// * `batch`: the batch size `B` (>= 1).
/// * `inputs`: one slice per graph input, in signature order ([`Model::inputs`]), each with
///   exactly as many elements as the input's shape has for this `B`.
/// * `output`: receives the output tensor (`B * state_dim` elements).
/// * `arena`: at least [`Model::graph_arena_bytes`]`(B)` bytes, 4-byte aligned.
pub fn run(
    model: &Model<'_>,
    batch: usize,
    inputs: &[&[f32]],
    output: &mut [f32],
    arena: &mut [u8],
) -> Result<(), Error> {
    check_batch(batch)?;
    expect_len("number of inputs", model.input_count(), inputs.len())?;
    for (info, buf) in model.inputs().zip(inputs) {
        let want = info.shape.elements(batch).ok_or(Error::BadArgument {
            what: "batch size too large",
        })?;
        expect_len(info.role.name(), want, buf.len())?;
    }
    let out_len = model
        .output_shape()
        .elements(batch)
        .ok_or(Error::BadArgument {
            what: "batch size too large",
        })?;
    expect_len("output", out_len, output.len())?;
    let (graph, _) = arena_f32(arena, model.graph_arena_bytes(batch)?)?;
    run_graph::<All>(model, batch, inputs, graph, &Decoded::default(), None)?;
    copy_output(model, batch, graph, &Decoded::default(), output)
}

fn copy_output(
    model: &Model<'_>,
    batch: usize,
    graph: &[f32],
    decoded: &Decoded<'_>,
    output: &mut [f32],
) -> Result<(), Error> {
    let t = model.output_tensor();
    let range = match decoded.shape(t, batch) {
        Some((_, _, Some(range))) => range,
        _ => model.arena_range(&model.tensor_rec(t)?, batch)?,
    };
    let src = graph.get(range).ok_or(ops_err())?;
    if src.len() != output.len() {
        return Err(ops_err());
    }
    output.copy_from_slice(src);
    Ok(())
}

const fn ops_err() -> Error {
    Error::Invalid {
        what: "tensor sizes are inconsistent with their shapes",
    }
}

/// The node and tensor records of a model decoded once, for a field that evaluates it many
/// times (feature `alloc`): [`run_graph`] then reads them here instead of decoding the file's
/// records at every evaluation (a version-3 file's varints were about a fifth of a batch-1
/// MLP evaluation on the host). Without `alloc` it is empty and the records are decoded as
/// they are read (what firmware does).
#[derive(Debug, Default)]
pub(crate) struct Decoded<'m> {
    #[cfg(feature = "alloc")]
    nodes: alloc::vec::Vec<NodeRec>,
    #[cfg(feature = "alloc")]
    tensors: alloc::vec::Vec<TensorRec>,
    /// Node `i`'s inputs are `inputs[first[i]..][..n_inputs]`.
    #[cfg(feature = "alloc")]
    inputs: alloc::vec::Vec<u32>,
    #[cfg(feature = "alloc")]
    first: alloc::vec::Vec<usize>,
    /// The row count [`Decoded::shapes`] were resolved for.
    #[cfg(feature = "alloc")]
    rows: usize,
    /// Per tensor at `rows` rows: its dims, element count and arena range (`None` for
    /// inputs and constants).
    #[cfg(feature = "alloc")]
    shapes: alloc::vec::Vec<(Dims, usize, Option<Range<usize>>)>,
    /// The graph inputs ([`Model::inputs`]).
    #[cfg(feature = "alloc")]
    inputs_info: alloc::vec::Vec<crate::model::InputInfo>,
    /// Per tensor: a constant's data in its stored type (`None` for other tensors).
    #[cfg(feature = "alloc")]
    consts: alloc::vec::Vec<Option<Weights<'m>>>,
    /// Per node: the node resolved at `rows` rows ([`steps`]; `None` for the kinds and
    /// layouts that take the general path).
    #[cfg(feature = "alloc")]
    steps: alloc::vec::Vec<Option<steps::Step<'m>>>,
    #[cfg(not(feature = "alloc"))]
    _model: PhantomData<&'m ()>,
}

impl<'m> Decoded<'m> {
    /// Every record of `model` (nodes as `S` links them); empty without `alloc`, or if a
    /// record fails to decode (the evaluation then decodes it and reports the error).
    /// Also resolves every tensor's dims and arena range for `rows` rows (what an
    /// evaluation of that many rows reads instead of computing them per node).
    #[cfg_attr(not(feature = "alloc"), allow(clippy::extra_unused_type_parameters))]
    fn of<S: Selection>(model: &Model<'m>, rows: usize) -> Decoded<'m> {
        #[cfg(feature = "alloc")]
        {
            let all = || -> Result<Decoded<'m>, Error> {
                let mut d = Decoded {
                    rows,
                    ..Decoded::default()
                };
                for t in 0..model.tensor_count() as u32 {
                    let rec = model.tensor_rec(t)?;
                    let n = rec.shape.elements(rows).ok_or(ops_err())?;
                    let range = match rec.kind {
                        TensorKind::Intermediate | TensorKind::Output => {
                            Some(model.arena_range(&rec, rows)?)
                        }
                        TensorKind::Input | TensorKind::Const => None,
                    };
                    d.shapes.push((rec.shape.concrete(rows), n, range));
                    d.consts.push(match rec.kind {
                        TensorKind::Const => model.const_weights_with::<S>(&rec).ok(),
                        _ => None,
                    });
                    d.tensors.push(rec);
                }
                d.inputs_info.extend(model.inputs());
                for i in 0..model.node_count() as u32 {
                    let n = model.node_rec_with::<S>(i)?;
                    d.first.push(d.inputs.len());
                    for j in 0..n.n_inputs {
                        d.inputs.push(model.node_input(&n, j)?);
                    }
                    d.nodes.push(n);
                }
                for i in 0..model.node_count() as u32 {
                    let step = steps::resolve(model, &d, i);
                    d.steps.push(step);
                }
                Ok(d)
            };
            all().unwrap_or_default()
        }
        #[cfg(not(feature = "alloc"))]
        {
            let _ = (model, rows);
            Decoded::default()
        }
    }

    /// Node `i` resolved as a [`steps::Step`] for `rows` rows, if it was.
    #[cfg(feature = "alloc")]
    fn step(&self, i: u32, rows: usize) -> Option<&steps::Step<'m>> {
        if rows != self.rows {
            return None;
        }
        self.steps.get(i as usize)?.as_ref()
    }

    /// Constant `t`'s data in its stored type, if decoded.
    fn weights(&self, t: u32) -> Option<Weights<'m>> {
        #[cfg(feature = "alloc")]
        return self.consts.get(t as usize).copied().flatten();
        #[cfg(not(feature = "alloc"))]
        {
            let _ = t;
            None
        }
    }

    /// The graph inputs, as [`Model::inputs`] lists them (empty if not decoded).
    fn inputs(&self) -> &[crate::model::InputInfo] {
        #[cfg(feature = "alloc")]
        return &self.inputs_info;
        #[cfg(not(feature = "alloc"))]
        &[]
    }

    /// Tensor `t`'s dims, element count and arena range (`None` for inputs and constants)
    /// at `rows` rows, if resolved.
    fn shape(&self, t: u32, rows: usize) -> Option<(Dims, usize, Option<Range<usize>>)> {
        #[cfg(feature = "alloc")]
        {
            if rows != self.rows {
                return None;
            }
            self.shapes.get(t as usize).cloned()
        }
        #[cfg(not(feature = "alloc"))]
        {
            let _ = (t, rows);
            None
        }
    }

    /// [`Decoded::shape`] by reference (no copy of the dims).
    fn shape_ref(&self, t: u32, rows: usize) -> Option<&(Dims, usize, Option<Range<usize>>)> {
        #[cfg(feature = "alloc")]
        {
            if rows != self.rows {
                return None;
            }
            self.shapes.get(t as usize)
        }
        #[cfg(not(feature = "alloc"))]
        {
            let _ = (t, rows);
            None
        }
    }

    /// Node `i`'s record, if decoded.
    fn node(&self, i: u32) -> Option<NodeRec> {
        #[cfg(feature = "alloc")]
        return self.nodes.get(i as usize).copied();
        #[cfg(not(feature = "alloc"))]
        {
            let _ = i;
            None
        }
    }

    /// Tensor `t`'s record, if decoded.
    fn tensor(&self, t: u32) -> Option<TensorRec> {
        #[cfg(feature = "alloc")]
        return self.tensors.get(t as usize).copied();
        #[cfg(not(feature = "alloc"))]
        {
            let _ = t;
            None
        }
    }

    /// Input `j` of node `i`, if decoded.
    fn input(&self, i: u32, j: usize) -> Option<u32> {
        #[cfg(feature = "alloc")]
        {
            let n = self.nodes.get(i as usize)?.n_inputs;
            let first = *self.first.get(i as usize)?;
            (j < n)
                .then(|| self.inputs.get(first + j).copied())
                .flatten()
        }
        #[cfg(not(feature = "alloc"))]
        {
            let _ = (i, j);
            None
        }
    }
}

/// Where a node's inputs are read from while its output is being written.
struct Views<'x, 'm> {
    model: &'x Model<'m>,
    /// Records decoded once ([`Decoded`]; empty: decode them here).
    decoded: &'x Decoded<'x>,
    /// The index of the node being run.
    at: u32,
    batch: usize,
    inputs: &'x [&'x [f32]],
    /// Arena before the output slot.
    lo: &'x [f32],
    /// Arena after the output slot, starting at element `hi_start`.
    hi: &'x [f32],
    hi_start: usize,
    /// The previous node's output and its record (usually this node's first input): one
    /// record decoded per node instead of two.
    known: Option<(u32, TensorRec)>,
    /// Whether `Lut` → full-integer Dense pairs pass int8 codes ([`Model::reads_lut_codes`],
    /// from [`ops::LUT_CODES_MIN_VALUES`] values on): not while an observer looks at every
    /// tensor's f32 values.
    #[cfg(feature = "weights-int8")]
    lut_codes: bool,
}

impl<'x, 'm: 'x> Views<'x, 'm> {
    fn get(&self, tensor: u32) -> Result<(&'x [f32], TensorRec, Dims), Error> {
        let rec = match self.known {
            Some((t, rec)) if t == tensor => rec,
            _ => self.rec(tensor)?,
        };
        let (dims, n, range) = match self.decoded.shape(tensor, self.batch) {
            Some(cached) => cached,
            None => {
                let n = rec.shape.elements(self.batch).ok_or(ops_err())?;
                (rec.shape.concrete(self.batch), n, None)
            }
        };
        let data: &'x [f32] = match rec.kind {
            TensorKind::Input => {
                let pos = self.model.input_position(tensor)?;
                self.inputs.get(pos).copied().ok_or(ops_err())?
            }
            TensorKind::Const => self.model.const_data(&rec)?,
            // The check of `Views::arena` written out (through the function, or with the
            // error as a shared constant, the firmware's code grew by 40 bytes).
            TensorKind::Intermediate | TensorKind::Output => {
                let Range { start, end } = match range {
                    Some(r) => r,
                    None => self.model.arena_range(&rec, self.batch)?,
                };
                if end <= self.lo.len() {
                    self.lo.get(start..end).ok_or(ops_err())?
                } else if start >= self.hi_start {
                    self.hi
                        .get(start - self.hi_start..end - self.hi_start)
                        .ok_or(ops_err())?
                } else {
                    return Err(Error::Invalid {
                        what: "node output overlaps one of its inputs",
                    });
                }
            }
        };
        if data.len() != n {
            return Err(ops_err());
        }
        Ok((data, rec, dims))
    }

    /// The arena's `range` (elements), which must not overlap the output being written.
    #[cfg(feature = "alloc")]
    fn arena(&self, Range { start, end }: Range<usize>) -> Result<&'x [f32], Error> {
        if end <= self.lo.len() {
            self.lo.get(start..end).ok_or(ops_err())
        } else if start >= self.hi_start {
            self.hi
                .get(start - self.hi_start..end - self.hi_start)
                .ok_or(ops_err())
        } else {
            Err(Error::Invalid {
                what: "node output overlaps one of its inputs",
            })
        }
    }

    /// Just the values of `tensor` ([`Views::get`] without its record and dims): an
    /// intermediate whose arena range is resolved ([`Decoded`]) straight from the arena.
    #[cfg(feature = "alloc")]
    #[inline(always)]
    fn data(&self, tensor: u32) -> Result<&'x [f32], Error> {
        if let Some((_, n, Some(range))) = self.decoded.shape_ref(tensor, self.batch) {
            let data = self.arena(range.clone())?;
            return if data.len() == *n {
                Ok(data)
            } else {
                Err(ops_err())
            };
        }
        Ok(self.get(tensor)?.0)
    }

    /// [`Views::data`] of input `j` of `node`. Only with `alloc` (nothing is resolved
    /// without it; the firmware's nodes call [`Views::input`], whose code through this
    /// function was 68 bytes larger).
    #[cfg(feature = "alloc")]
    fn input_data(&self, node: &NodeRec, j: usize) -> Result<&'x [f32], Error> {
        self.data(self.input_tensor(node, j)?)
    }

    fn input(&self, node: &NodeRec, j: usize) -> Result<(&'x [f32], TensorRec, Dims), Error> {
        self.get(self.input_tensor(node, j)?)
    }

    /// Tensor `t`'s record.
    fn rec(&self, t: u32) -> Result<TensorRec, Error> {
        match self.decoded.tensor(t) {
            Some(r) => Ok(r),
            None => self.model.tensor_rec(t),
        }
    }

    /// The tensor of input `j` of `node` (the node being run).
    fn input_tensor(&self, node: &NodeRec, j: usize) -> Result<u32, Error> {
        match self.decoded.input(self.at, j) {
            Some(t) => Ok(t),
            None => self.model.node_input(node, j),
        }
    }

    /// Weight input `j` of `node`: a constant in its stored type (one `S` links), or any f32
    /// tensor.
    fn weights<S: Selection>(
        &self,
        node: &NodeRec,
        j: usize,
    ) -> Result<(Weights<'x>, Dims), Error> {
        let tensor = self.input_tensor(node, j)?;
        let rec = self.rec(tensor)?;
        if rec.kind == TensorKind::Const {
            let w = match self.decoded.weights(tensor) {
                Some(w) => w,
                None => self.model.const_weights_with::<S>(&rec)?,
            };
            let dims = match self.decoded.shape_ref(tensor, self.batch) {
                Some((dims, _, _)) => *dims,
                None => rec.shape.concrete(self.batch),
            };
            return Ok((w, dims));
        }
        let (data, _, dims) = self.get(tensor)?;
        Ok((Weights::F32(data), dims))
    }
}

/// Runs every node in order with the kernels `S` links. `inputs` in signature order,
/// `arena` = graph arena.
pub(crate) fn run_graph<S: Selection>(
    model: &Model<'_>,
    batch: usize,
    inputs: &[&[f32]],
    arena: &mut [f32],
    decoded: &Decoded<'_>,
    mut observe: Option<&mut Observer<'_>>,
) -> Result<(), Error> {
    if let Some(f) = observe.as_deref_mut() {
        for (info, data) in model.inputs().zip(inputs) {
            f(info.tensor, data);
        }
    }
    let mut known = None;
    for i in 0..model.node_count() as u32 {
        #[cfg(feature = "alloc")]
        if let Some(step) = decoded.step(i, batch) {
            let (lo, rest) = arena
                .split_at_mut_checked(step.out.start)
                .ok_or(ops_err())?;
            let (out, hi) = rest.split_at_mut_checked(step.out.len()).ok_or(ops_err())?;
            steps::run::<S>(step, inputs, lo, hi, out)?;
            known = None;
            if let Some(f) = observe.as_deref_mut() {
                f(step.tensor, out);
            }
            continue;
        }
        let node = match decoded.node(i) {
            Some(n) => n,
            None => model.node_rec_with::<S>(i)?,
        };
        let out_rec = match decoded.tensor(node.output) {
            Some(r) => r,
            None => model.tensor_rec(node.output)?,
        };
        let (od, range) = match decoded.shape_ref(node.output, batch) {
            Some((od, _, Some(range))) => (*od, range.clone()),
            _ => (
                out_rec.shape.concrete(batch),
                model.arena_range(&out_rec, batch)?,
            ),
        };
        let (lo, rest) = arena.split_at_mut_checked(range.start).ok_or(ops_err())?;
        let (out, hi) = rest.split_at_mut_checked(range.len()).ok_or(ops_err())?;
        let v = Views {
            model,
            decoded,
            at: i,
            batch,
            inputs,
            lo,
            hi,
            hi_start: range.end,
            known,
            #[cfg(feature = "weights-int8")]
            lut_codes: observe.is_none(),
        };
        exec_node::<S>(&v, &node, out, &od)?;
        known = Some((node.output, out_rec));
        if let Some(f) = observe.as_deref_mut() {
            f(node.output, out);
        }
    }
    Ok(())
}

/// Sees every value a graph evaluation computes: called with each input tensor's index and
/// data before the nodes run, then with each node's output tensor index and values
/// ([`CpuField::observe`]; export-time calibration of int8 activations).
pub type Observer<'o> = dyn FnMut(u32, &[f32]) + Send + 'o;

/// One node. Every arm is guarded by the (constant) bit of its kind in `S`, so the kernels of
/// unlinked kinds are not compiled in; a node of such a kind returns [`Error::NotLinked`].
fn exec_node<S: Selection>(
    v: &Views<'_, '_>,
    node: &NodeRec,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    let has = select::has_node::<S>;
    // The full-integer forms need int8 weights (without them, the plain arms below refuse
    // the node's int8 weights with `NotLinked`).
    #[cfg(feature = "weights-int8")]
    let int8 = S::WEIGHTS & select::weight::INT8 != 0;
    match node.op {
        // Full-integer forms (4 inputs; only files with int8 weights have them).
        #[cfg(feature = "weights-int8")]
        NodeOp::Dense if node.n_inputs == 4 && has(node::DENSE_Q8) && int8 => {
            let (a, _, _) = v.input(node, 0)?;
            let (w, wd) = v.weights::<S>(node, 1)?;
            let (n, k) = (wd.get(0).ok_or(ops_err())?, wd.get(1).ok_or(ops_err())?);
            let codes = passes_lut_codes::<S>(v, v.at, a.len());
            full_integer::<S>(v, node, w, |w, bias, s| {
                if codes {
                    ops::dense_q8_codes(a, w, bias, s, k, n, out)
                } else {
                    ops::dense_q8(a, w, bias, s, k, n, out)
                }
            })
        }
        NodeOp::Dense if has(node::DENSE) => {
            #[cfg(feature = "alloc")]
            let a = v.input_data(node, 0)?;
            #[cfg(not(feature = "alloc"))]
            let (a, _, _) = v.input(node, 0)?;
            let (w, wd) = v.weights::<S>(node, 1)?;
            let bias = bias_input::<S>(v, node)?;
            let (k, n) = (wd.get(0).ok_or(ops_err())?, wd.get(1).ok_or(ops_err())?);
            dense_linked::<S>(a, w, bias, k, n, out)
        }
        NodeOp::MatMul if has(node::MATMUL) => {
            let (a, _, ad) = v.input(node, 0)?;
            let (b, _, bd) = v.input(node, 1)?;
            ops::matmul(a, &ad, b, &bd, out, od)
        }
        NodeOp::Binary(op) if has(node::BINARY) => {
            let (a, _, ad) = v.input(node, 0)?;
            let (b, _, bd) = v.input(node, 1)?;
            ops::binary_linked(op, a, &ad, b, &bd, out, od, select::has_binary::<S>)
        }
        NodeOp::Unary(op) if has(node::UNARY) => {
            #[cfg(feature = "alloc")]
            let x = v.input_data(node, 0)?;
            #[cfg(not(feature = "alloc"))]
            let x = v.input(node, 0)?.0;
            ops::unary_linked(op, x, out, select::has_unary::<S>)
        }
        NodeOp::Lut { .. } if has(node::LUT) => {
            // The loader checked the table and the scale (constants; the scale > 0).
            #[cfg_attr(not(feature = "weights-int8"), allow(unused_variables))] // `xd`
            let (x, _, xd) = v.input(node, 0)?;
            let (table, _) = v.weights::<S>(node, 1)?;
            let scale = v.input(node, 2)?.0.first().copied().ok_or(ops_err())?;
            #[cfg(feature = "weights-int8")]
            if passes_lut_codes::<S>(v, v.at + 1, x.len()) {
                let k = xd.get(xd.rank().wrapping_sub(1)).ok_or(ops_err())?;
                return lut_codes::<S>(v, x, k, table, scale, out);
            }
            ops::lut(x, table, scale, out)
        }
        NodeOp::Where if has(node::WHERE) => {
            let (c, _, cd) = v.input(node, 0)?;
            let (a, _, ad) = v.input(node, 1)?;
            let (b, _, bd) = v.input(node, 2)?;
            ops::select(c, &cd, a, &ad, b, &bd, out, od)
        }
        NodeOp::Concat { axis } if has(node::CONCAT) => {
            let axis = axis as usize;
            let mut offset = 0usize;
            for j in 0..node.n_inputs {
                let (x, _, xd) = v.input(node, j)?;
                ops::concat_part(x, &xd, out, od, axis, offset)?;
                offset += xd.get(axis).ok_or(ops_err())?;
            }
            Ok(())
        }
        NodeOp::Widen if has(node::WIDEN) => {
            // The loader checked that the input is a constant of this shape.
            let (w, _) = v.weights::<S>(node, 0)?;
            if w.len() != out.len() {
                return Err(ops_err());
            }
            w.load(0, out).ok_or(ops_err())
        }
        NodeOp::Reshape if has(node::RESHAPE) => {
            #[cfg(feature = "alloc")]
            let x = v.input_data(node, 0)?;
            #[cfg(not(feature = "alloc"))]
            let (x, _, _) = v.input(node, 0)?;
            copy_values(x, out)
        }
        NodeOp::Expand if has(node::EXPAND) => {
            let (x, _, xd) = v.input(node, 0)?;
            ops::expand(x, &xd, out, od)
        }
        NodeOp::Transpose { .. } if has(node::TRANSPOSE) => {
            let (x, _, xd) = v.input(node, 0)?;
            ops::transpose(x, &xd, node.op.perm(), out, od)
        }
        NodeOp::Gather if has(node::GATHER) => {
            let (table, td) = v.weights::<S>(node, 0)?;
            let (idx, _, _) = v.input(node, 1)?;
            ops::gather(table, &td, idx, out)
        }
        #[cfg(feature = "weights-int8")]
        NodeOp::Conv { groups, window } if node.n_inputs == 4 && has(node::CONV_Q8) && int8 => {
            let (x, _, xd) = v.input(node, 0)?;
            let (w, wd) = v.weights::<S>(node, 1)?;
            full_integer::<S>(v, node, w, |w, bias, s| {
                ops::conv_q8(x, &xd, w, &wd, bias, s, groups as usize, &window, out, od)
            })
        }
        NodeOp::Conv { groups, window } if has(node::CONV) => {
            let (x, _, xd) = v.input(node, 0)?;
            let (w, wd) = v.weights::<S>(node, 1)?;
            let bias = bias_input::<S>(v, node)?;
            ops::conv(x, &xd, w, &wd, bias, groups as usize, &window, out, od)
        }
        NodeOp::ConvTranspose {
            groups,
            window,
            out_pad,
        } if has(node::CONV_TRANSPOSE) => {
            let (x, _, xd) = v.input(node, 0)?;
            let (w, wd) = v.weights::<S>(node, 1)?;
            let bias = bias_input::<S>(v, node)?;
            ops::conv_transpose(
                x,
                &xd,
                w,
                &wd,
                bias,
                groups as usize,
                &window,
                out_pad,
                out,
                od,
            )
        }
        NodeOp::Pool {
            kind,
            kernel,
            window,
        } if has(node::POOL) => {
            let (x, _, xd) = v.input(node, 0)?;
            let kernel = [usize::from(kernel[0]), usize::from(kernel[1])];
            ops::pool(kind, x, &xd, kernel, &window, out, od)
        }
        NodeOp::Reduce { kind, start, end } if has(node::REDUCE) => {
            let (x, _, xd) = v.input(node, 0)?;
            ops::reduce(kind, x, &xd, start.into(), end.into(), out, od)
        }
        NodeOp::Softmax { start, end, log } if has(node::SOFTMAX) => {
            let (x, _, xd) = v.input(node, 0)?;
            ops::softmax(x, &xd, start.into(), end.into(), log, out, od)
        }
        NodeOp::Norm { start, end, eps } if has(node::NORM) => {
            let (x, _, xd) = v.input(node, 0)?;
            ops::norm(x, &xd, start.into(), end.into(), eps, out, od)
        }
        NodeOp::Resize {
            mode,
            coord,
            scales,
        } if has(node::RESIZE) => {
            let (x, _, xd) = v.input(node, 0)?;
            ops::resize(mode, coord, scales, x, &xd, out, od)
        }
        NodeOp::Pad { mode, begin, end } if has(node::PAD) => {
            let (x, _, xd) = v.input(node, 0)?;
            let r = xd.rank();
            let b = begin.map(usize::from);
            let e = end.map(usize::from);
            let (Some(b), Some(e)) = (b.get(..r), e.get(..r)) else {
                return Err(ops_err());
            };
            ops::pad(mode, b, e, x, &xd, out, od)
        }
        NodeOp::Slice {
            axis, start, step, ..
        } if has(node::SLICE) => {
            let (x, _, xd) = v.input(node, 0)?;
            ops::slice(
                x,
                &xd,
                out,
                od,
                axis as usize,
                start as usize,
                step as usize,
            )
        }
        // Unreachable: `run_graph` decodes nodes with `node_rec_with::<S>`, which refuses
        // the kinds `S` leaves out (naming them; `NodeOp::name` is not linked here).
        _ => Err(select::not_linked("an op")),
    }
}

/// A Dense with the kernel `S` calls for: [`ops::dense`] inlined where `S` links no stored
/// weight types, else [`dense`].
#[inline(always)]
fn dense_linked<S: Selection>(
    a: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    if S::WEIGHTS == 0 {
        ops::dense(a, w, bias, k, n, out)
    } else {
        dense(a, w, bias, k, n, out)
    }
}

/// Reshape: `x`'s values into `out` as they are (the lengths must match).
#[inline(always)]
fn copy_values(x: &[f32], out: &mut [f32]) -> Result<(), Error> {
    if x.len() != out.len() {
        return Err(ops_err());
    }
    out.copy_from_slice(x);
    Ok(())
}

/// [`ops::dense`], a function of its own, for selections with stored weight types: inlined
/// into the graph loop (which the compiler does once a selection leaves little else there),
/// its dequantizing loops ran about 8 % more instructions per MAC on the Cortex-M4F (the f32
/// loops, alone, run a little faster inlined: measured with targets/run-qemu.sh).
#[inline(never)]
fn dense(
    a: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    ops::dense(a, w, bias, k, n, out)
}

/// A full-integer Dense or Conv (4 inputs): `kernel(int8 weights, bias, activation scale)`.
/// Not inlined (see [`dense`]): its 1 KB quantization buffer stays off the stack of the
/// other nodes.
#[cfg(feature = "weights-int8")]
#[inline(never)]
fn full_integer<'x, S: Selection>(
    v: &Views<'x, '_>,
    node: &NodeRec,
    w: Weights<'x>,
    kernel: impl FnOnce(ops::Int8Weights<'x>, Option<Weights<'x>>, f32) -> Result<(), Error>,
) -> Result<(), Error> {
    let Weights::Int8(w) = w else {
        return Err(ops_err());
    };
    let bias = bias_input::<S>(v, node)?;
    let scale = v.input(node, 3)?.0.first().copied().ok_or(ops_err())?;
    kernel(w, bias, scale)
}

/// Whether the `Lut` before node `dense` (a full-integer Dense) and that Dense pass int8
/// codes for `values` values: both sides ask this one question, so they always agree.
#[cfg(feature = "weights-int8")]
fn passes_lut_codes<S: Selection>(v: &Views<'_, '_>, dense: u32, values: usize) -> bool {
    select::has_node::<S>(node::LUT)
        && select::has_node::<S>(node::DENSE_Q8)
        && v.lut_codes
        && v.model.reads_lut_codes(dense)
        && values >= ops::LUT_CODES_MIN_VALUES
}

/// A `Lut` (`x`, rows of `k`, `table`, `scale`) that writes the int8 codes of the
/// full-integer Dense after it ([`Model::reads_lut_codes`]) into `out`. Not inlined (see [`dense`]): its code table
/// stays off the other nodes' stack.
#[cfg(feature = "weights-int8")]
#[inline(never)]
fn lut_codes<S: Selection>(
    v: &Views<'_, '_>,
    x: &[f32],
    k: usize,
    table: Weights<'_>,
    scale: f32,
    out: &mut [f32],
) -> Result<(), Error> {
    // The next node's input 3 (`Views::input` reads this node's inputs: with `alloc`,
    // through the records decoded for it).
    let dense = v.model.node_rec_with::<S>(v.at + 1)?;
    let act_scale = v.get(v.model.node_input(&dense, 3)?)?.0;
    let act_scale = act_scale.first().copied().ok_or(ops_err())?;
    // The loader checked the table for NaN: a code table always exists.
    let codes = ops::lut_codes_for(table, scale, act_scale)?.ok_or(ops_err())?;
    ops::lut_codes(x, &codes, k, out)
}

/// The optional third input (bias) of Dense, Conv and ConvTranspose, in its stored type.
fn bias_input<'x, S: Selection>(
    v: &Views<'x, '_>,
    node: &NodeRec,
) -> Result<Option<Weights<'x>>, Error> {
    if node.n_inputs >= 3 {
        Ok(Some(v.weights::<S>(node, 2)?.0))
    } else {
        Ok(None)
    }
}

/// Takes the next `len` f32 values (16-byte rounded) off the front of `scratch`.
fn take_f32<'s>(scratch: &mut &'s mut [u8], len: usize) -> Result<&'s mut [f32], Error> {
    let bytes = align_up(len.checked_mul(4).ok_or(ops_err())?).ok_or(ops_err())?;
    let taken = core::mem::take(scratch);
    let (mine, rest) = taken.split_at_mut_checked(bytes).ok_or(ops_err())?;
    *scratch = rest;
    let mine: &mut [f32] = bytemuck::try_cast_slice_mut(mine).map_err(|_| Error::Misaligned)?;
    mine.get_mut(..len).ok_or(ops_err())
}

/// The CPU velocity field: evaluates the model on a batch of states at one time.
///
/// Inputs are fed by role: `x` is the solver's state as is; `t` is filled with the time
/// (one value, or one per row, per the input's shape); `xt` rows `[x_row, t]` are assembled;
/// `label`, `cond` and `guidance` come from a [`Conditioning`] ([`CpuField::eval_cond`]).
/// The time, `xt`, label and guidance buffers live in the arena's scratch part, after the
/// graph arena.
///
/// `S` selects the kernels linked ([`crate::select`]): [`All`] by default; a firmware
/// specialised for its model builds the field with [`CpuField::new_selected`].
pub struct CpuField<'m, 'a, S: Selection = All> {
    model: Model<'m>,
    batch: usize,
    arena: &'a mut [u8],
    /// What the conditioning is checked against (computed once).
    sig: Signature,
    linked: PhantomData<S>,
    /// Sees every evaluation's tensors ([`CpuField::observe`]).
    observer: Option<&'a mut Observer<'a>>,
    /// The records, decoded once (host builds).
    decoded: Decoded<'m>,
}

impl<'m, 'a> CpuField<'m, 'a> {
    /// A field for up to `batch` rows per evaluation, working in `arena`, which must be
    /// 4-byte aligned and at least [`Model::required_arena_bytes`]`(batch)` long (checked
    /// here).
    pub fn new(
        model: &Model<'m>,
        batch: usize,
        arena: &'a mut [u8],
    ) -> Result<CpuField<'m, 'a>, Error> {
        CpuField::new_selected(model, batch, arena)
    }
}

impl<'m, 'a, S: Selection> CpuField<'m, 'a, S> {
    /// [`CpuField::new`] with the kernels `S` links.
    ///
    /// Errors: as [`CpuField::new`], plus [`Error::NotLinked`] naming the first node whose
    /// op `S` does not link.
    pub fn new_selected(
        model: &Model<'m>,
        batch: usize,
        arena: &'a mut [u8],
    ) -> Result<CpuField<'m, 'a, S>, Error> {
        check_batch(batch)?;
        select::check_roles::<S>(model)?;
        for i in 0..model.node_count() as u32 {
            // `NotLinked` naming the op when `S` leaves its kind out.
            model.node_rec_with::<S>(i)?;
        }
        if model.state_dim() == 0 {
            return Err(Error::BadArgument {
                what: "a plain graph (inputs `data`) is not a velocity field; run it with \
                       exec::run",
            });
        }
        if arena.as_ptr().align_offset(4) != 0 {
            return Err(Error::Misaligned);
        }
        let needed = model.required_arena_bytes(batch)?;
        if arena.len() < needed {
            return Err(Error::ArenaTooSmall {
                needed,
                given: arena.len(),
            });
        }
        model
            .state_dim()
            .checked_mul(batch)
            .ok_or(Error::BadArgument {
                what: "batch size too large",
            })?;
        Ok(CpuField {
            model: *model,
            batch,
            arena,
            sig: Signature::of_linked::<S>(model),
            linked: PhantomData,
            observer: None,
            decoded: Decoded::of::<S>(model, batch),
        })
    }

    /// Calls `observer` with every tensor of every later evaluation ([`Observer`]).
    pub fn observe(&mut self, observer: &'a mut Observer<'a>) {
        self.observer = Some(observer);
    }

    /// The batch size the field was created for (the most rows one evaluation may have).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The model.
    pub fn model(&self) -> &Model<'m> {
        &self.model
    }

    /// Elements of a full-batch state (and velocity) buffer: `batch * state_dim`.
    pub fn state_len(&self) -> usize {
        self.batch * self.model.state_dim()
    }

    /// Writes `v(x, t)` into `v` for a model without conditioning inputs: [`eval_cond`]
    /// with [`Conditioning::default`]. `x` and `v` hold the same whole number of rows, at
    /// most [`CpuField::batch`].
    ///
    /// [`eval_cond`]: CpuField::eval_cond
    pub fn eval_into(&mut self, t: f32, x: &[f32], v: &mut [f32]) -> Result<(), Error> {
        self.eval_cond(t, x, &Conditioning::default(), v)
    }

    /// v(x, t) with conditioning. The batch of this call is `x.len() / state_dim` and may be
    /// ANY number of rows up to the batch the field was created for
    /// ([`CpuField::new`]`(model, batch, arena)`) -- rows' results do not depend on the batch
    /// size (the kernels are row-deterministic).
    ///
    /// Conditioning per role the model has: `label` — `rows` class indices, each in
    /// `0..`[`Model::label_classes`] (or `|label| <= 2^24` when the label does not feed a
    /// `Gather` table directly), handed to the graph as exact f32 values; `cond` — `rows *`
    /// [`Model::cond_dim`] finite values; `guidance` — `rows` finite values (a model whose
    /// guidance input is one value for all rows, `[]` / `[1]`, needs them all equal).
    ///
    /// Errors: a role the model has but `cond` lacks ([`Error::BadArgument`], e.g. "model
    /// needs a label input"), or a field given for a role the model lacks; wrong lengths
    /// ([`Error::ShapeMismatch`]); a label out of range ([`Error::BadArgument`], "label out
    /// of range"); non-finite cond/guidance values ([`Error::NonFiniteInput`]).
    pub fn eval_cond(
        &mut self,
        t: f32,
        x: &[f32],
        cond: &Conditioning<'_>,
        v: &mut [f32],
    ) -> Result<(), Error> {
        let model = &self.model;
        let d = model.state_dim();
        let rows = self
            .sig
            .check_eval_linked::<S>(x.len(), v.len(), self.batch, cond)?;
        if model.output_dim() != d {
            return Err(Error::BadArgument {
                what: "the model's output is not a velocity (its rows differ from the state's)",
            });
        }
        let (graph, mut scratch) = arena_f32(self.arena, model.graph_arena_bytes(rows)?)?;
        let mut bufs: [&[f32]; MAX_INPUTS] = [&[]; MAX_INPUTS];
        let cached = self.decoded.inputs();
        let mut listed = model.inputs();
        let mut cached_iter = cached.iter().copied();
        let infos: &mut dyn Iterator<Item = crate::model::InputInfo> = if cached.is_empty() {
            &mut listed
        } else {
            &mut cached_iter
        };
        for (slot, info) in bufs.iter_mut().zip(infos) {
            let len = info.shape.elements(rows).ok_or(ops_err())?;
            match info.role {
                // Refused by `new_selected` (and the signature check).
                r if !select::has_role::<S>(r) => {
                    return Err(select::not_linked(select::role_input_name(r)))
                }
                InputRole::X => *slot = x,
                InputRole::Data => {
                    return Err(Error::BadArgument {
                        what: "a plain graph (inputs `data`) is not a velocity field; run it \
                               with exec::run",
                    })
                }
                InputRole::Cond => {
                    // Checked by `Signature::check`.
                    *slot = cond.cond.ok_or(ops_err())?;
                }
                InputRole::T => {
                    let buf = take_f32(&mut scratch, len)?;
                    buf.fill(t);
                    *slot = buf;
                }
                InputRole::Step => {
                    let value = cond.step.ok_or(Error::BadArgument {
                        what: "model needs a step input (a few-step model: sample it with \
                               the few-step sampler)",
                    })?;
                    let buf = take_f32(&mut scratch, len)?;
                    buf.fill(value);
                    *slot = buf;
                }
                InputRole::Xt => {
                    let buf = take_f32(&mut scratch, len)?;
                    fill_xt(buf, x, d, t)?;
                    *slot = buf;
                }
                InputRole::Label => {
                    // Checked by `Signature::check`: `rows` labels, all in range.
                    let labels = cond.label.ok_or(ops_err())?;
                    let buf = take_f32(&mut scratch, len)?;
                    if buf.len() != labels.len() {
                        return Err(ops_err());
                    }
                    for (b, l) in buf.iter_mut().zip(labels) {
                        *b = *l as f32; // exact: |l| <= 2^24
                    }
                    *slot = buf;
                }
                InputRole::Guidance => {
                    // Checked by `Signature::check`: `rows` finite values (equal without a batch dim).
                    let g = cond.guidance.ok_or(ops_err())?;
                    let buf = take_f32(&mut scratch, len)?;
                    if info.shape.has_batch() {
                        if buf.len() != g.len() {
                            return Err(ops_err());
                        }
                        buf.copy_from_slice(g);
                    } else {
                        buf.fill(g.first().copied().ok_or(ops_err())?);
                    }
                    *slot = buf;
                }
            }
        }
        let used = bufs.get(..model.input_count()).ok_or(ops_err())?;
        run_graph::<S>(
            model,
            rows,
            used,
            graph,
            &self.decoded,
            self.observer.as_deref_mut(),
        )?;
        copy_output(model, rows, graph, &self.decoded, v)
    }
}

/// A [`CpuField`] with conditioning fixed for every evaluation: the [`VelocityField`] that
/// [`crate::sampler::sample_cond`] integrates.
pub type ConditionedField<'f, 'm, 'a, 'c> = crate::field::Conditioned<'f, 'c, CpuField<'m, 'a>>;

impl<S: Selection> ConditionalField<CpuOps> for CpuField<'_, '_, S> {
    fn eval_cond(
        &mut self,
        _: &mut CpuOps,
        t: f32,
        x: &[f32],
        cond: &Conditioning<'_>,
        v: &mut [f32],
    ) -> Result<(), Error> {
        CpuField::eval_cond(self, t, x, cond, v)
    }
}

/// `xt[r] = [x[r, 0..d], t]` for every row.
fn fill_xt(xt: &mut [f32], x: &[f32], d: usize, t: f32) -> Result<(), Error> {
    let w = d.checked_add(1).ok_or(ops_err())?;
    let rows = x.len().checked_div(d).ok_or(ops_err())?;
    if rows.checked_mul(d) != Some(x.len()) || rows.checked_mul(w) != Some(xt.len()) {
        return Err(ops_err());
    }
    for (row, xr) in xt.chunks_exact_mut(w).zip(x.chunks_exact(d)) {
        if let Some((last, head)) = row.split_last_mut() {
            head.copy_from_slice(xr);
            *last = t;
        }
    }
    Ok(())
}

impl<S: Selection> VelocityField<CpuOps> for CpuField<'_, '_, S> {
    fn eval(&mut self, _ops: &mut CpuOps, t: f32, x: &[f32], v: &mut [f32]) -> Result<(), Error> {
        self.eval_into(t, x, v)
    }
}
