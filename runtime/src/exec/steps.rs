//! Nodes resolved once into steps (feature `alloc`): for the kinds that make up a small
//! model's evaluation (Dense, MatMul, element-wise ops, Where, and the layout ops Concat,
//! Reshape, Expand, Transpose, Slice), where each input lies (a graph input, an f32
//! constant, or a range of the arena below or above the node's output) with its dims, its
//! constant weights in their stored type and its sizes. [`super::run_graph`] runs such a
//! node straight from its [`Step`] instead of looking up records, shapes and weights per
//! node and evaluation (about half of a batch-1 MLP evaluation on the host was that
//! lookup). Other nodes, and every node on firmware (no `alloc`), take the general path;
//! both call the same kernels, so the results are the same bits.

use core::ops::Range;

use super::Decoded;
use crate::format::{NodeOp, TensorKind};
use crate::model::Model;
use crate::ops::{self, Binary, Dims, Unary, Weights};
use crate::select::{self, node, Selection};
use crate::Error;

/// Where a step reads one of its inputs.
#[derive(Debug, Clone)]
pub(super) enum Src<'m> {
    /// Graph input `pos` (signature order), which must hold `len` values.
    Input { pos: usize, len: usize },
    /// An f32 constant.
    Const(&'m [f32]),
    /// A range of the arena below the step's output (elements from the arena's start).
    Below(Range<usize>),
    /// A range of the arena above the step's output (elements from the output's end).
    Above(Range<usize>),
}

/// What a step computes, with its operands resolved (and their dims, where the kernel
/// broadcasts or lays out by them).
#[derive(Debug, Clone)]
pub(super) enum Kernel<'m> {
    /// `out = a [rows, k] x w [k, n] (+ bias)` with constant weights.
    Dense {
        a: Src<'m>,
        w: Weights<'m>,
        bias: Option<Weights<'m>>,
        k: usize,
        n: usize,
    },
    /// An element-wise unary op.
    Unary { op: Unary, x: Src<'m> },
    /// A broadcasting binary op.
    Binary {
        op: Binary,
        a: (Src<'m>, Dims),
        b: (Src<'m>, Dims),
    },
    /// `cond ? a : b`, broadcasting.
    Where {
        cond: (Src<'m>, Dims),
        a: (Src<'m>, Dims),
        b: (Src<'m>, Dims),
    },
    /// The inputs laid side by side along `axis`.
    Concat {
        axis: usize,
        parts: alloc::vec::Vec<(Src<'m>, Dims)>,
    },
    /// A copy of the input (Reshape: the values do not move).
    Copy { x: Src<'m> },
    /// numpy `matmul` of two tensors.
    MatMul {
        a: (Src<'m>, Dims),
        b: (Src<'m>, Dims),
    },
    /// The input broadcast to the output's dims.
    Expand { x: (Src<'m>, Dims) },
    /// The input's axes permuted as the node (a `NodeOp::Transpose`) says.
    Transpose { x: (Src<'m>, Dims), op: NodeOp },
    /// Every `step`-th element of axis `axis` from `start`.
    Slice {
        x: (Src<'m>, Dims),
        axis: usize,
        start: usize,
        step: usize,
    },
}

/// One node, resolved for the row count its [`Decoded`] was built for.
#[derive(Debug, Clone)]
pub(super) struct Step<'m> {
    /// The node's output tensor (what an observer is told).
    pub(super) tensor: u32,
    /// The output's range of the arena (elements).
    pub(super) out: Range<usize>,
    /// The output's dims.
    od: Dims,
    kernel: Kernel<'m>,
}

/// Node `i` of `model` as a [`Step`], from the records `d` holds; `None` for a kind this
/// module does not resolve, or for any layout it does not expect (the node then takes the
/// general path, which reports what is wrong).
pub(super) fn resolve<'m>(model: &Model<'m>, d: &Decoded<'m>, i: u32) -> Option<Step<'m>> {
    let node = d.node(i)?;
    let (od, _, out) = d.shape_ref(node.output, d.rows)?;
    let out = out.clone()?;
    let src = |j: usize| -> Option<(Src<'m>, Dims)> {
        let t = d.input(i, j)?;
        let (dims, len, range) = d.shape_ref(t, d.rows)?;
        let rec = d.tensor(t)?;
        let at = match rec.kind {
            TensorKind::Input => Src::Input {
                pos: model.input_position(t).ok()?,
                len: *len,
            },
            TensorKind::Const => {
                Src::Const(model.const_data(&rec).ok().filter(|c| c.len() == *len)?)
            }
            TensorKind::Intermediate | TensorKind::Output => {
                let r = range.clone()?;
                if r.end <= out.start {
                    Src::Below(r)
                } else if r.start >= out.end {
                    Src::Above(r.start - out.end..r.end - out.end)
                } else {
                    return None;
                }
            }
        };
        Some((at, *dims))
    };
    let constant = |j: usize| -> Option<Weights<'m>> {
        let t = d.input(i, j)?;
        (d.tensor(t)?.kind == TensorKind::Const).then(|| d.weights(t))?
    };
    let kernel = match node.op {
        // Two or three inputs: the full-integer form (four) takes the general path.
        NodeOp::Dense if (2..=3).contains(&node.n_inputs) => {
            let wt = d.input(i, 1)?;
            let (wd, _, _) = d.shape_ref(wt, d.rows)?;
            Kernel::Dense {
                a: src(0)?.0,
                w: constant(1)?,
                bias: if node.n_inputs == 3 {
                    Some(constant(2)?)
                } else {
                    None
                },
                k: wd.get(0)?,
                n: wd.get(1)?,
            }
        }
        NodeOp::Unary(op) => Kernel::Unary { op, x: src(0)?.0 },
        NodeOp::Binary(op) => Kernel::Binary {
            op,
            a: src(0)?,
            b: src(1)?,
        },
        NodeOp::Where => Kernel::Where {
            cond: src(0)?,
            a: src(1)?,
            b: src(2)?,
        },
        NodeOp::Concat { axis } => Kernel::Concat {
            axis: axis as usize,
            parts: (0..node.n_inputs).map(src).collect::<Option<_>>()?,
        },
        NodeOp::Reshape => Kernel::Copy { x: src(0)?.0 },
        NodeOp::MatMul => Kernel::MatMul {
            a: src(0)?,
            b: src(1)?,
        },
        NodeOp::Expand => Kernel::Expand { x: src(0)? },
        op @ NodeOp::Transpose { .. } => Kernel::Transpose { x: src(0)?, op },
        NodeOp::Slice {
            axis, start, step, ..
        } => Kernel::Slice {
            x: src(0)?,
            axis: axis as usize,
            start: start as usize,
            step: step as usize,
        },
        _ => return None,
    };
    Some(Step {
        tensor: node.output,
        out,
        od: *od,
        kernel,
    })
}

/// Runs `step`: `inputs` are the graph inputs, `lo` and `hi` the arena below and above its
/// output `out`. The kernels and their arguments are those of the general path
/// ([`super::exec_node`]).
///
/// Errors: [`Error::Invalid`] when an input's length is not what the step was resolved
/// for; the kernels' errors.
pub(super) fn run<'x, S: Selection>(
    step: &'x Step<'x>,
    inputs: &[&'x [f32]],
    lo: &'x [f32],
    hi: &'x [f32],
    out: &mut [f32],
) -> Result<(), Error> {
    let read = |s: &Src<'x>| -> Result<&'x [f32], Error> {
        let data = match s {
            Src::Input { pos, len } => inputs.get(*pos).copied().filter(|x| x.len() == *len),
            Src::Const(c) => Some(*c),
            Src::Below(r) => lo.get(r.clone()),
            Src::Above(r) => hi.get(r.clone()),
        };
        data.ok_or(super::ops_err())
    };
    let has = select::has_node::<S>;
    let od = &step.od;
    match &step.kernel {
        Kernel::Dense { a, w, bias, k, n } if has(node::DENSE) => {
            super::dense_linked::<S>(read(a)?, *w, *bias, *k, *n, out)
        }
        Kernel::Unary { op, x } if has(node::UNARY) => {
            ops::unary_linked(*op, read(x)?, out, select::has_unary::<S>)
        }
        Kernel::Binary { op, a, b } if has(node::BINARY) => {
            let (x, y) = (read(&a.0)?, read(&b.0)?);
            ops::binary_linked(*op, x, &a.1, y, &b.1, out, od, select::has_binary::<S>)
        }
        Kernel::Where { cond, a, b } if has(node::WHERE) => {
            let (c, x, y) = (read(&cond.0)?, read(&a.0)?, read(&b.0)?);
            ops::select(c, &cond.1, x, &a.1, y, &b.1, out, od)
        }
        Kernel::Concat { axis, parts } if has(node::CONCAT) => {
            let mut offset = 0usize;
            for (x, xd) in parts {
                ops::concat_part(read(x)?, xd, out, od, *axis, offset)?;
                offset += xd.get(*axis).ok_or(super::ops_err())?;
            }
            Ok(())
        }
        Kernel::Copy { x } if has(node::RESHAPE) => super::copy_values(read(x)?, out),
        Kernel::MatMul { a, b } if has(node::MATMUL) => {
            ops::matmul(read(&a.0)?, &a.1, read(&b.0)?, &b.1, out, od)
        }
        Kernel::Expand { x } if has(node::EXPAND) => ops::expand(read(&x.0)?, &x.1, out, od),
        Kernel::Transpose { x, op } if has(node::TRANSPOSE) => {
            ops::transpose(read(&x.0)?, &x.1, op.perm(), out, od)
        }
        Kernel::Slice {
            x,
            axis,
            start,
            step,
        } if has(node::SLICE) => ops::slice(read(&x.0)?, &x.1, out, od, *axis, *start, *step),
        // Unreachable: steps are resolved from records decoded with `S`.
        _ => Err(select::not_linked("an op")),
    }
}
