//! Planning: fusion and alias decisions, buffer assignment, and the geometry upload.

use std::collections::HashMap;

use cubecl::prelude::*;
use cubecl::server::Handle;
use flowrt::format::{InputRole, NodeOp, TensorKind};
use flowrt::ops::Dims;
use flowrt::Model;

use super::{bad_graph, to_u32, unary_act, unsupported, Kernel, Launch, Plan, Src, NO_ACT};
use crate::{Gpu, GpuError};

/// What the planner knows about each tensor.
struct Tensors<'m> {
    model: &'m Model<'m>,
    rows: usize,
}

impl Tensors<'_> {
    fn dims(&self, t: u32) -> Result<Dims, GpuError> {
        let info = self
            .model
            .tensor(t)
            .ok_or(GpuError::Flowrt(flowrt::Error::Invalid {
                what: "tensor id out of range",
            }))?;
        Ok(info.shape.concrete(self.rows))
    }

    fn len(&self, t: u32) -> Result<usize, GpuError> {
        self.dims(t)?
            .elements()
            .ok_or(unsupported("a tensor too large for this batch".into()))
    }
}

/// Builds a [`Plan`]: fusion and alias decisions, buffer assignment, geometry upload.
pub(super) struct Planner<'g, 'm, R: Runtime> {
    gpu: &'g Gpu<R>,
    model: &'m Model<'m>,
    t: Tensors<'m>,
    /// Where each tensor lives (`None`: not yet produced).
    src: Vec<Option<Src>>,
    /// Last node reading each tensor's storage root.
    last_use: Vec<usize>,
    /// Root tensor of each tensor's storage (itself, or what a Reshape aliases).
    root: Vec<u32>,
    /// Unary node fused into each node's epilogue.
    fused: Vec<Option<u32>>,
    /// Nodes folded into their producer.
    skip: Vec<bool>,
    /// Buffers and their sizes; free ones by size.
    slots: Vec<(Handle, usize)>,
    free: HashMap<usize, Vec<usize>>,
    launches: Vec<Launch>,
}

impl<'g, 'm, R: Runtime> Planner<'g, 'm, R> {
    pub(super) fn new(
        gpu: &'g Gpu<R>,
        model: &'m Model<'m>,
        rows: usize,
    ) -> Result<Self, GpuError> {
        let n_t = model.tensor_count();
        let n_n = model.node_count();
        let mut src = vec![None; n_t];
        for info in model.inputs() {
            if info.role == InputRole::Data {
                return Err(unsupported(
                    "a plain graph (inputs `data`) is not a velocity field".into(),
                ));
            }
            *src.get_mut(info.tensor as usize).ok_or(bad_graph())? = Some(Src::Input(info.index));
        }
        for t in model.tensors() {
            if t.kind == TensorKind::Const {
                src[t.index as usize] = Some(Src::Const(t.index as usize));
            }
        }
        // Readers per tensor, for fusion.
        let mut readers = vec![0usize; n_t];
        for node in model.nodes() {
            for i in node.inputs() {
                *readers.get_mut(i as usize).ok_or(bad_graph())? += 1;
            }
        }
        let mut fused = vec![None; n_n];
        let mut skip = vec![false; n_n];
        let producer: Vec<Option<u32>> = {
            let mut p = vec![None; n_t];
            for node in model.nodes() {
                p[node.output as usize] = Some(node.index);
            }
            p
        };
        for node in model.nodes() {
            if let NodeOp::Unary(_) = node.op {
                let Some(input) = node.inputs().next() else {
                    continue;
                };
                let Some(Some(p)) = producer.get(input as usize) else {
                    continue;
                };
                let pn = model.node(*p).ok_or(bad_graph())?;
                let fusable = matches!(
                    pn.op,
                    NodeOp::Dense
                        | NodeOp::MatMul
                        | NodeOp::Conv { .. }
                        | NodeOp::ConvTranspose { .. }
                        | NodeOp::Binary(_)
                );
                let intermediate = model
                    .tensor(input)
                    .is_some_and(|t| t.kind == TensorKind::Intermediate);
                if fusable
                    && intermediate
                    && readers[input as usize] == 1
                    && std::env::var_os("FLOWRT_GPU_NO_FUSE").is_none()
                    && fused[*p as usize].is_none()
                {
                    fused[*p as usize] = Some(node.index);
                    skip[node.index as usize] = true;
                }
            }
        }
        // Storage roots (Reshape aliases its input unless it writes the graph output) and
        // last uses.
        let mut root: Vec<u32> = (0..n_t as u32).collect();
        for node in model.nodes() {
            if node.op == NodeOp::Reshape {
                let out_kind = model.tensor(node.output).map(|t| t.kind);
                if out_kind == Some(TensorKind::Intermediate) {
                    if let Some(i) = node.inputs().next() {
                        root[node.output as usize] = root[i as usize];
                    }
                }
            }
        }
        let mut last_use = vec![0usize; n_t];
        for node in model.nodes() {
            for i in node.inputs() {
                let r = root[i as usize] as usize;
                last_use[r] = last_use[r].max(node.index as usize);
            }
        }
        Ok(Planner {
            gpu,
            model,
            t: Tensors { model, rows },
            src,
            last_use,
            root,
            fused,
            skip,
            slots: Vec::new(),
            free: HashMap::new(),
            launches: Vec::new(),
        })
    }

    fn src_of(&self, t: u32) -> Result<(Src, usize), GpuError> {
        let s = self
            .src
            .get(t as usize)
            .copied()
            .flatten()
            .ok_or(bad_graph())?;
        Ok((s, self.t.len(t)?))
    }

    /// A buffer for `len` elements (a free one of that size, or a new one).
    fn alloc(&mut self, len: usize) -> Src {
        if let Some(i) = self.free.get_mut(&len).and_then(Vec::pop) {
            return Src::Slot(i);
        }
        self.slots.push((self.gpu.empty(len), len));
        Src::Slot(self.slots.len() - 1)
    }

    pub(super) fn meta(&self, words: &[u32]) -> Option<Handle> {
        Some(
            self.gpu
                .upload_u32(if words.is_empty() { &[0] } else { words }),
        )
    }

    pub(super) fn plan(mut self) -> Result<Plan, GpuError> {
        let model = self.model;
        for node in model.nodes() {
            let i = node.index as usize;
            if self.skip[i] {
                continue;
            }
            // The tensor this node writes (its fused activation's output, if any).
            let (written, act) = match self.fused[i] {
                Some(u) => {
                    let un = model.node(u).ok_or(bad_graph())?;
                    let NodeOp::Unary(op) = un.op else {
                        return Err(bad_graph());
                    };
                    (un.output, unary_act(op))
                }
                None => (node.output, NO_ACT),
            };
            let out_kind = model.tensor(written).ok_or(bad_graph())?.kind;
            let inputs: Vec<u32> = node.inputs().collect();
            // Reshape into an intermediate: alias, no launch.
            if node.op == NodeOp::Reshape && out_kind == TensorKind::Intermediate {
                let s = self.src_of(inputs[0])?.0;
                self.src[written as usize] = Some(s);
                self.release(i);
                continue;
            }
            let out_len = self.t.len(written)?;
            let out_src = if out_kind == TensorKind::Output {
                Src::Output
            } else {
                self.alloc(out_len)
            };
            self.src[written as usize] = Some(out_src);
            let ins: Vec<(Src, usize)> = inputs
                .iter()
                .map(|t| self.src_of(*t))
                .collect::<Result<_, _>>()?;
            let od = self.t.dims(written)?;
            let ind: Vec<Dims> = inputs
                .iter()
                .map(|t| self.t.dims(*t))
                .collect::<Result<_, _>>()?;
            self.lower(&node.op, &ins, &ind, (out_src, out_len), &od, act)?;
            self.release(i);
        }
        Ok(Plan {
            launches: self.launches,
            slots: self.slots.into_iter().map(|(h, _)| h).collect(),
            trace: std::env::var_os("FLOWRT_GPU_TRACE").is_some(),
        })
    }

    /// Frees the buffers whose last reader is node `i`.
    fn release(&mut self, i: usize) {
        let model = self.model;
        let node = match model.node(i as u32) {
            Some(n) => n,
            None => return,
        };
        for t in node.inputs() {
            let r = self.root[t as usize] as usize;
            if self.last_use[r] == i {
                if let Some(Some(Src::Slot(s))) = self.src.get(r).copied() {
                    let len = self.slots[s].1;
                    let list = self.free.entry(len).or_default();
                    if !list.contains(&s) {
                        list.push(s);
                    }
                }
                // Mark dead so a second input naming the same tensor does not free twice.
                self.last_use[r] = usize::MAX;
            }
        }
    }

    pub(super) fn push(
        &mut self,
        kernel: Kernel,
        inputs: Vec<(Src, usize)>,
        out: (Src, usize),
        meta: Option<Handle>,
    ) {
        self.launches.push(Launch {
            kernel,
            inputs,
            out,
            meta,
        });
    }

    /// A strided copy of `count` elements over `view` dims.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn copy(
        &mut self,
        input: (Src, usize),
        out: (Src, usize),
        view: &[usize],
        src_strides: &[usize],
        dst_strides: &[usize],
        src_base: usize,
        dst_base: usize,
    ) -> Result<(), GpuError> {
        let count: usize = view.iter().product();
        let mut w = vec![to_u32(view.len())?];
        for v in view.iter().chain(src_strides).chain(dst_strides) {
            w.push(to_u32(*v)?);
        }
        w.push(to_u32(src_base)?);
        w.push(to_u32(dst_base)?);
        let meta = self.meta(&w);
        self.push(Kernel::Copy { count }, vec![input], out, meta);
        Ok(())
    }
}
