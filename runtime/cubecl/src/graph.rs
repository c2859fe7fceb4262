//! The graph on the device: weights uploaded once ([`GpuGraph::new`]), and per batch size a
//! [`Plan`] — every node turned into one kernel launch with its geometry uploaded once, and
//! every intermediate tensor given a device buffer (buffers of equal size are reused once
//! their tensor is dead). A plan is built and checked once; running it only launches.
//!
//! Fusions: an element-wise activation whose input is used only by it is folded into the
//! producing Dense / MatMul / Conv / binary op's epilogue, and a `Reshape` is an alias (no
//! launch) unless it produces the graph output.
//!
//! Debugging switches, read when a plan is built: `FLOWRT_GPU_NO_FUSE` turns the activation
//! fusion off; `FLOWRT_GPU_TRACE` reads back and prints every launch's first outputs.

use std::collections::HashMap;

use cubecl::prelude::*;
use cubecl::server::Handle;
use flowrt::format::{InputRole, NodeOp, TensorKind};
use flowrt::model::MAX_INPUTS;
use flowrt::ops::Dims;
use flowrt::ops::PadMode;
use flowrt::Model;

use crate::kernels::{elementwise, gemm, image, layout, reduce};
use crate::{Gpu, GpuError};

/// Threads per cube of the one-thread-per-element kernels.
pub(crate) const BLOCK: u32 = 256;
/// Most cubes along one grid dimension (WebGPU's guaranteed limit).
const MAX_CUBES: u32 = 65_535;

/// A 1-D launch grid for `n` threads (split over two grid dimensions past 65,535 cubes);
/// `None` for `n = 0` or a grid too large for the device.
pub(crate) fn grid_1d(n: usize) -> Option<CubeCount> {
    if n == 0 {
        return None;
    }
    let cubes = u32::try_from(n.div_ceil(BLOCK as usize)).ok()?;
    let x = cubes.min(MAX_CUBES);
    let y = cubes.div_ceil(x);
    (y <= MAX_CUBES).then_some(CubeCount::Static(x, y, 1))
}

/// Where a tensor's data lives while a plan runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    /// Signature input `i` (bound per evaluation).
    Input(usize),
    /// Uploaded constant `i`.
    Const(usize),
    /// Intermediate buffer `i` of the plan.
    Slot(usize),
    /// The caller's velocity buffer (the graph output).
    Output,
}

/// One kernel launch and what it reads and writes.
struct Launch {
    kernel: Kernel,
    inputs: Vec<(Src, usize)>,
    out: (Src, usize),
    meta: Option<Handle>,
}

/// Which kernel, with its scalar and compile-time arguments.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    Unary {
        op: u32,
        alpha: f32,
        gamma: f32,
    },
    Binary {
        op: u32,
        direct_a: bool,
        direct_b: bool,
        act: Act,
    },
    Select,
    Copy {
        count: usize,
    },
    Gather {
        inner: u32,
        rows: u32,
    },
    Gemm {
        grid: (u32, u32, u32),
        per: u32,
        has_bias: bool,
        act: Act,
    },
    Conv {
        has_bias: bool,
        transposed: bool,
        act: Act,
    },
    Pool {
        kind: u32,
    },
    Reduce {
        kind: u32,
        len: u32,
        inner: u32,
    },
    Softmax {
        len: u32,
        inner: u32,
        rows: u32,
        log: bool,
    },
    Resize {
        mode: u32,
        coord: u32,
        scales: [f32; 2],
    },
    Pad {
        mode: u32,
        value: f32,
    },
}

/// A fused activation: unary file code (or [`elementwise::ACT_NONE`]) and its attributes.
#[derive(Debug, Clone, Copy)]
struct Act {
    op: u32,
    alpha: f32,
    gamma: f32,
}

const NO_ACT: Act = Act {
    op: elementwise::ACT_NONE,
    alpha: 0.0,
    gamma: 0.0,
};

fn unary_act(op: flowrt::ops::Unary) -> Act {
    let (alpha, gamma) = op.params();
    Act {
        op: u32::from(op.code()),
        alpha,
        gamma,
    }
}

/// The model's weights on the device.
pub struct GpuGraph {
    consts: Vec<Option<Handle>>,
}

impl GpuGraph {
    /// Uploads every constant tensor of `model` once.
    ///
    /// Errors: a constant that cannot be read ([`GpuError::Flowrt`]).
    pub fn new<R: Runtime>(gpu: &Gpu<R>, model: &Model<'_>) -> Result<GpuGraph, GpuError> {
        let mut consts = Vec::with_capacity(model.tensor_count());
        for t in model.tensors() {
            consts.push(if t.kind == TensorKind::Const {
                let data = model.const_values(t.index)?;
                Some(gpu.upload(data))
            } else {
                None
            });
        }
        Ok(GpuGraph { consts })
    }
}

/// Every node of the graph as launches for one batch size, with its buffers.
pub struct Plan {
    launches: Vec<Launch>,
    slots: Vec<Handle>,
    /// `FLOWRT_GPU_TRACE` was set: read back and print every launch's output (debugging).
    trace: bool,
}

fn unsupported(what: String) -> GpuError {
    GpuError::Unsupported(what)
}

fn dims_u32(d: &Dims) -> Result<Vec<u32>, GpuError> {
    d.as_slice()
        .iter()
        .map(|v| u32::try_from(*v).map_err(|_| unsupported("a dimension over 2^32".into())))
        .collect()
}

fn to_u32(v: usize) -> Result<u32, GpuError> {
    u32::try_from(v).map_err(|_| unsupported("a tensor over 2^32 elements".into()))
}

/// Contiguous strides of `d`.
fn contiguous(d: &[usize]) -> Vec<usize> {
    let mut s = vec![0; d.len()];
    let mut acc = 1usize;
    for (st, v) in s.iter_mut().zip(d).rev() {
        *st = acc;
        acc *= *v;
    }
    s
}

/// numpy broadcast strides of `src` read at the positions of `out` (0 on broadcast axes).
fn bcast_strides(src: &Dims, out: &Dims) -> Result<Vec<u32>, GpuError> {
    let (r, sr) = (out.rank(), src.rank());
    let err = || {
        GpuError::Flowrt(flowrt::Error::Invalid {
            what: "operand shapes do not broadcast",
        })
    };
    if sr > r {
        return Err(err());
    }
    let lead = r - sr;
    let cs = contiguous(src.as_slice());
    let mut st = vec![0u32; r];
    for i in 0..sr {
        let (sd, od) = (src.as_slice()[i], out.as_slice()[lead + i]);
        st[lead + i] = if sd == od {
            to_u32(cs[i])?
        } else if sd == 1 {
            0
        } else {
            return Err(err());
        };
    }
    Ok(st)
}

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

impl Plan {
    /// Plans `model` for `rows` batch rows.
    ///
    /// Errors: [`GpuError::Unsupported`] for a launch the device cannot take (a grid past
    /// its limits), [`GpuError::Flowrt`] for an inconsistent graph.
    pub fn new<R: Runtime>(gpu: &Gpu<R>, model: &Model<'_>, rows: usize) -> Result<Plan, GpuError> {
        Planner::new(gpu, model, rows)?.plan()
    }

    /// Kernel launches one evaluation makes.
    pub fn launches(&self) -> usize {
        self.launches.len()
    }

    /// Runs every launch: `inputs` are the signature inputs' buffers (with their lengths),
    /// `out` receives the graph output.
    pub(crate) fn run<R: Runtime>(
        &self,
        gpu: &mut Gpu<R>,
        graph: &GpuGraph,
        inputs: &[Option<Handle>; MAX_INPUTS],
        out: &Handle,
    ) -> Result<(), GpuError> {
        let resolve = |s: Src| -> Result<Handle, GpuError> {
            let h = match s {
                Src::Input(i) => inputs.get(i).and_then(|h| h.clone()),
                Src::Const(i) => graph.consts.get(i).and_then(|h| h.clone()),
                Src::Slot(i) => self.slots.get(i).cloned(),
                Src::Output => Some(out.clone()),
            };
            h.ok_or(GpuError::Device("a tensor has no device buffer".into()))
        };
        for l in &self.launches {
            let mut ins = Vec::with_capacity(l.inputs.len());
            for (s, n) in &l.inputs {
                ins.push((resolve(*s)?, *n));
            }
            let out = (resolve(l.out.0)?, l.out.1);
            let trace = (out.0.clone(), out.1);
            launch(gpu, l, &ins, out)?;
            if self.trace {
                let v = gpu.read(&trace.0, trace.1)?;
                eprintln!("{:?} -> {:?}", l.kernel, &v[..v.len().min(8)]);
            }
        }
        Ok(())
    }
}

/// Launches one planned kernel.
fn launch<R: Runtime>(
    gpu: &mut Gpu<R>,
    l: &Launch,
    ins: &[(Handle, usize)],
    (out, out_len): (Handle, usize),
) -> Result<(), GpuError> {
    let client = gpu.client.clone();
    let arr = |h: &Handle, n: usize| unsafe { ArrayArg::from_raw_parts(h.clone(), n.max(1)) };
    let input = |j: usize| -> Result<ArrayArg<R>, GpuError> {
        let (h, n) = ins
            .get(j)
            .ok_or(GpuError::Device("a launch lacks an input".into()))?;
        Ok(arr(h, *n))
    };
    let meta = || -> Result<ArrayArg<R>, GpuError> {
        let h = l
            .meta
            .as_ref()
            .ok_or(GpuError::Device("a launch lacks its geometry".into()))?;
        Ok(unsafe { ArrayArg::from_raw_parts(h.clone(), h.size_in_used() as usize / 4) })
    };
    let dim = CubeDim::new_1d(BLOCK);
    let elems = |n: usize| grid_1d(n).ok_or(unsupported(format!("a launch of {n} threads")));
    let o = arr(&out, out_len);
    gpu.launches += 1;
    match l.kernel {
        Kernel::Unary { op, alpha, gamma } => elementwise::unary::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            o,
            alpha,
            gamma,
            op,
        ),
        Kernel::Binary {
            op,
            direct_a,
            direct_b,
            act,
        } => elementwise::binary::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            input(1)?,
            o,
            meta()?,
            act.alpha,
            act.gamma,
            op,
            direct_a,
            direct_b,
            act.op,
        ),
        Kernel::Select => elementwise::select3::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            input(1)?,
            input(2)?,
            o,
            meta()?,
        ),
        Kernel::Copy { count } => layout::strided_copy::launch::<R>(
            &client,
            elems(count)?,
            dim,
            input(0)?,
            o,
            meta()?,
            to_u32(count)?,
        ),
        Kernel::Gather { inner, rows } => layout::gather::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            input(1)?,
            o,
            inner,
            rows,
            f32::NAN,
        ),
        Kernel::Gemm {
            grid,
            per,
            has_bias,
            act,
        } => {
            let bias = if has_bias { input(2)? } else { input(1)? };
            gemm::gemm::launch::<R>(
                &client,
                CubeCount::Static(grid.0, grid.1, grid.2),
                CubeDim::new_2d(gemm::THREADS, gemm::THREADS),
                input(0)?,
                input(1)?,
                bias,
                o,
                meta()?,
                act.alpha,
                act.gamma,
                has_bias,
                act.op,
                per as usize,
            )
        }
        Kernel::Conv {
            has_bias,
            transposed,
            act,
        } => {
            let bias = if has_bias { input(2)? } else { input(1)? };
            image::conv::launch::<R>(
                &client,
                elems(out_len)?,
                dim,
                input(0)?,
                input(1)?,
                bias,
                o,
                meta()?,
                act.alpha,
                act.gamma,
                has_bias,
                transposed,
                act.op,
            )
        }
        Kernel::Pool { kind } => image::pool::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            o,
            meta()?,
            f32::NEG_INFINITY,
            kind,
        ),
        Kernel::Reduce { kind, len, inner } => reduce::reduce::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            o,
            len,
            inner,
            f32::INFINITY,
            kind,
        ),
        Kernel::Softmax {
            len,
            inner,
            rows,
            log,
        } => reduce::softmax::launch::<R>(
            &client,
            elems(rows as usize)?,
            dim,
            input(0)?,
            o,
            len,
            inner,
            rows,
            f32::INFINITY,
            log,
        ),
        Kernel::Resize {
            mode,
            coord,
            scales,
        } => image::resize::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            o,
            meta()?,
            scales[0],
            scales[1],
            mode,
            coord,
        ),
        Kernel::Pad { mode, value } => layout::pad::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            o,
            meta()?,
            value,
            mode,
        ),
    }
    Ok(())
}

/// Builds a [`Plan`]: fusion and alias decisions, buffer assignment, geometry upload.
struct Planner<'g, 'm, R: Runtime> {
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
    fn new(gpu: &'g Gpu<R>, model: &'m Model<'m>, rows: usize) -> Result<Self, GpuError> {
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

    fn meta(&self, words: &[u32]) -> Option<Handle> {
        Some(
            self.gpu
                .upload_u32(if words.is_empty() { &[0] } else { words }),
        )
    }

    fn plan(mut self) -> Result<Plan, GpuError> {
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

    fn push(
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
    fn copy(
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

    fn lower(
        &mut self,
        op: &NodeOp,
        ins: &[(Src, usize)],
        ind: &[Dims],
        out: (Src, usize),
        od: &Dims,
        act: Act,
    ) -> Result<(), GpuError> {
        let in0 = || ins.first().copied().ok_or(bad_graph());
        let d0 = ind.first().ok_or(bad_graph())?;
        match *op {
            NodeOp::Dense => {
                let wd = ind.get(1).ok_or(bad_graph())?;
                let (k, n) = (wd.get(0).ok_or(bad_graph())?, wd.get(1).ok_or(bad_graph())?);
                let m = in0()?.1.checked_div(k).unwrap_or(0);
                let meta = self.meta(&[to_u32(m)?, to_u32(n)?, to_u32(k)?, 0]);
                let (grid, per) = gemm_grid(m, n, 1)?;
                self.push(
                    Kernel::Gemm {
                        grid,
                        per,
                        has_bias: ins.len() == 3,
                        act,
                    },
                    ins.to_vec(),
                    out,
                    meta,
                );
            }
            NodeOp::MatMul => {
                let bd = ind.get(1).ok_or(bad_graph())?;
                let (ra, rb, ro) = (d0.rank(), bd.rank(), od.rank());
                let dims = |d: &Dims, i: usize| d.get(i).ok_or(bad_graph());
                let m = dims(d0, ra - 2)?;
                let k = dims(d0, ra - 1)?;
                let n = dims(bd, rb - 1)?;
                let lead = ro - 2;
                let mut w = vec![to_u32(m)?, to_u32(n)?, to_u32(k)?, to_u32(lead)?];
                let mut batches = 1usize;
                for i in 0..lead {
                    let d = dims(od, i)?;
                    batches *= d;
                    w.push(to_u32(d)?);
                }
                for (src, mat) in [(d0, m * k), (bd, k * n)] {
                    let off = ro - src.rank();
                    let mut st = vec![0u32; lead];
                    let mut acc = mat;
                    for i in (0..lead).rev() {
                        let sd = if i >= off { dims(src, i - off)? } else { 1 };
                        st[i] = if sd == dims(od, i)? { to_u32(acc)? } else { 0 };
                        acc *= sd;
                    }
                    w.extend(st);
                }
                let meta = self.meta(&w);
                let (grid, per) = gemm_grid(m, n, batches)?;
                self.push(
                    Kernel::Gemm {
                        grid,
                        per,
                        has_bias: false,
                        act,
                    },
                    ins.to_vec(),
                    out,
                    meta,
                );
            }
            NodeOp::Binary(b) => {
                let bd = ind.get(1).ok_or(bad_graph())?;
                let mut w = vec![to_u32(od.rank())?];
                w.extend(dims_u32(od)?);
                w.extend(bcast_strides(d0, od)?);
                w.extend(bcast_strides(bd, od)?);
                let meta = self.meta(&w);
                let direct_a = d0.as_slice() == od.as_slice();
                let direct_b = bd.as_slice() == od.as_slice();
                self.push(
                    Kernel::Binary {
                        op: u32::from(b.code()),
                        direct_a,
                        direct_b,
                        act,
                    },
                    ins.to_vec(),
                    out,
                    meta,
                );
            }
            NodeOp::Unary(u) => {
                let a = unary_act(u);
                self.push(
                    Kernel::Unary {
                        op: a.op,
                        alpha: a.alpha,
                        gamma: a.gamma,
                    },
                    vec![in0()?],
                    out,
                    None,
                );
            }
            NodeOp::Where => {
                let mut w = vec![to_u32(od.rank())?];
                w.extend(dims_u32(od)?);
                for d in ind.iter().take(3) {
                    w.extend(bcast_strides(d, od)?);
                }
                let meta = self.meta(&w);
                self.push(Kernel::Select, ins.to_vec(), out, meta);
            }
            NodeOp::Reshape => {
                let cs = [1usize];
                self.copy(in0()?, out, &[out.1], &cs, &cs, 0, 0)?;
            }
            NodeOp::Expand => {
                let st: Vec<usize> = bcast_strides(d0, od)?
                    .into_iter()
                    .map(|v| v as usize)
                    .collect();
                let dst = contiguous(od.as_slice());
                self.copy(in0()?, out, od.as_slice(), &st, &dst, 0, 0)?;
            }
            NodeOp::Transpose { .. } => {
                let perm = op.perm();
                let xs = contiguous(d0.as_slice());
                let st: Vec<usize> = perm
                    .iter()
                    .map(|p| xs.get(usize::from(*p)).copied().ok_or(bad_graph()))
                    .collect::<Result<_, _>>()?;
                let dst = contiguous(od.as_slice());
                self.copy(in0()?, out, od.as_slice(), &st, &dst, 0, 0)?;
            }
            NodeOp::Slice {
                axis, start, step, ..
            } => {
                let axis = axis as usize;
                let xs = contiguous(d0.as_slice());
                let mut st = xs.clone();
                let s_axis = st.get_mut(axis).ok_or(bad_graph())?;
                *s_axis *= step as usize;
                let base = xs[axis] * start as usize;
                let dst = contiguous(od.as_slice());
                self.copy(in0()?, out, od.as_slice(), &st, &dst, base, 0)?;
            }
            NodeOp::Concat { axis } => {
                let axis = axis as usize;
                let dst = contiguous(od.as_slice());
                let mut offset = 0usize;
                for (j, xd) in ind.iter().enumerate() {
                    let input = *ins.get(j).ok_or(bad_graph())?;
                    let xs = contiguous(xd.as_slice());
                    let base = offset * dst.get(axis).copied().ok_or(bad_graph())?;
                    self.copy(input, out, xd.as_slice(), &xs, &dst, 0, base)?;
                    offset += xd.get(axis).ok_or(bad_graph())?;
                }
            }
            NodeOp::Gather => {
                let rows = d0.get(0).ok_or(bad_graph())?;
                let inner = d0.as_slice().iter().skip(1).product::<usize>();
                self.push(
                    Kernel::Gather {
                        inner: to_u32(inner.max(1))?,
                        rows: to_u32(rows)?,
                    },
                    ins.to_vec(),
                    out,
                    None,
                );
            }
            NodeOp::Conv { groups, window } | NodeOp::ConvTranspose { groups, window, .. } => {
                // Kernel rows and columns: Conv's kernel is `[C/g, (KH,) KW, M]`,
                // ConvTranspose's `[M, C/g, (KH,) KW]`.
                let transposed = matches!(op, NodeOp::ConvTranspose { .. });
                let wd = ind.get(1).ok_or(bad_graph())?;
                let (kh, kw) = match (transposed, wd.as_slice()) {
                    (false, [_, kw, _]) | (true, [_, _, kw]) => (1, *kw),
                    (false, [_, kh, kw, _]) | (true, [_, _, kh, kw]) => (*kh, *kw),
                    _ => return Err(bad_graph()),
                };
                let meta = self.geometry(d0, od, (kh, kw), groups, &window)?;
                self.push(
                    Kernel::Conv {
                        has_bias: ins.len() == 3,
                        transposed,
                        act,
                    },
                    ins.to_vec(),
                    out,
                    meta,
                );
            }
            NodeOp::Pool {
                kind,
                kernel,
                window,
            } => {
                let k = (usize::from(kernel[0]), usize::from(kernel[1]));
                let meta = self.geometry(d0, od, k, 1, &window)?;
                self.push(Kernel::Pool { kind: kind.code() }, vec![in0()?], out, meta);
            }
            NodeOp::Reduce { kind, start, end } => {
                let (_, len, inner) = split3(d0, start.into(), end.into())?;
                self.push(
                    Kernel::Reduce {
                        kind: kind.code(),
                        len: to_u32(len)?,
                        inner: to_u32(inner)?,
                    },
                    vec![in0()?],
                    out,
                    None,
                );
            }
            NodeOp::Softmax { start, end, log } => {
                let (outer, len, inner) = split3(d0, start.into(), end.into())?;
                self.push(
                    Kernel::Softmax {
                        len: to_u32(len)?,
                        inner: to_u32(inner)?,
                        rows: to_u32(outer * inner)?,
                        log,
                    },
                    vec![in0()?],
                    out,
                    None,
                );
            }
            NodeOp::Resize {
                mode,
                coord,
                scales,
            } => {
                let r = d0.rank();
                let g = |d: &Dims, i: usize| d.get(i).ok_or(bad_graph()).and_then(to_u32);
                let meta = self.meta(&[g(d0, r - 2)?, g(d0, r - 1)?, g(od, r - 2)?, g(od, r - 1)?]);
                self.push(
                    Kernel::Resize {
                        mode: mode.code(),
                        coord: coord.code(),
                        scales,
                    },
                    vec![in0()?],
                    out,
                    meta,
                );
            }
            NodeOp::Pad { mode, begin, .. } => {
                let r = d0.rank();
                let mut w = vec![to_u32(r)?];
                w.extend(dims_u32(od)?);
                w.extend(dims_u32(d0)?);
                w.extend(begin.iter().take(r).map(|b| u32::from(*b)));
                let meta = self.meta(&w);
                let value = match mode {
                    PadMode::Constant(v) => v,
                    _ => 0.0,
                };
                self.push(
                    Kernel::Pad {
                        mode: mode.code(),
                        value,
                    },
                    vec![in0()?],
                    out,
                    meta,
                );
            }
        }
        Ok(())
    }

    /// The [`image::geo`] words of a convolution or pool.
    fn geometry(
        &self,
        xd: &Dims,
        od: &Dims,
        (kh, kw): (usize, usize),
        groups: u32,
        win: &flowrt::ops::Window,
    ) -> Result<Option<Handle>, GpuError> {
        let nchw = |d: &Dims| -> Result<[usize; 4], GpuError> {
            match *d.as_slice() {
                [n, c, l] => Ok([n, c, 1, l]),
                [n, c, h, w] => Ok([n, c, h, w]),
                _ => Err(bad_graph()),
            }
        };
        let [n, c, h, w] = nchw(xd)?;
        let [_, m, oh, ow] = nchw(od)?;
        // 1-D windows keep their column attributes in index 1.
        let words = [
            n,
            c,
            h,
            w,
            m,
            oh,
            ow,
            kh,
            kw,
            usize::from(win.stride[0]),
            usize::from(win.stride[1]),
            usize::from(win.dilation[0]),
            usize::from(win.dilation[1]),
            usize::from(win.pad_begin[0]),
            usize::from(win.pad_begin[1]),
            groups as usize,
            usize::from(win.pad_end[0]),
            usize::from(win.pad_end[1]),
        ];
        debug_assert_eq!(words.len(), image::geo::LEN);
        let w: Vec<u32> = words.iter().map(|v| to_u32(*v)).collect::<Result<_, _>>()?;
        Ok(self.meta(&w))
    }
}

/// `[outer, len, inner]` of `d` around the axis range `start..end`.
fn split3(d: &Dims, start: usize, end: usize) -> Result<(usize, usize, usize), GpuError> {
    let s = d.as_slice();
    if start >= end || end > s.len() {
        return Err(bad_graph());
    }
    Ok((
        s[..start].iter().product(),
        s[start..end].iter().product(),
        s[end..].iter().product(),
    ))
}

/// The GEMM shape and grid for `batches` products of `m × n`: 8×8 outputs per thread
/// (128×128 tiles) when both sides are at least 128, else 4×4 (64×64 tiles).
fn gemm_grid(m: usize, n: usize, batches: usize) -> Result<((u32, u32, u32), u32), GpuError> {
    let per = if m >= 128 && n >= 128 { 8 } else { 4 };
    let t = gemm::tile(per) as usize;
    let x = to_u32(n.div_ceil(t).max(1))?;
    let y = to_u32(m.div_ceil(t).max(1))?;
    let z = to_u32(batches.max(1))?;
    if x > MAX_CUBES || y > MAX_CUBES || z > MAX_CUBES {
        return Err(unsupported(format!(
            "a matrix product of {batches} x [{m} x {n}] exceeds the device's launch grid"
        )));
    }
    Ok(((x, y, z), per))
}

fn bad_graph() -> GpuError {
    GpuError::Flowrt(flowrt::Error::Invalid {
        what: "graph structure is inconsistent",
    })
}
