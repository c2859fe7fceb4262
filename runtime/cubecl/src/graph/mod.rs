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

mod launch;
mod lower;
mod plan;

use cubecl::prelude::*;
use cubecl::server::Handle;
use flowrt::format::TensorKind;
use flowrt::model::MAX_INPUTS;
use flowrt::Model;

use crate::kernels::elementwise;
use crate::{Gpu, GpuError};
use launch::launch;
use plan::Planner;

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
    Norm {
        len: u32,
        inner: u32,
        rows: u32,
        eps: f32,
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
    /// Uploads every constant tensor of `model` once, as f32 (f16, bf16 and int8 weights are
    /// dequantized on the host first, to exactly the values the CPU kernels compute with).
    ///
    /// Errors: a constant that cannot be read ([`GpuError::Flowrt`]).
    pub fn new<R: Runtime>(gpu: &Gpu<R>, model: &Model<'_>) -> Result<GpuGraph, GpuError> {
        let mut consts = Vec::with_capacity(model.tensor_count());
        for t in model.tensors() {
            consts.push(if t.kind == TensorKind::Const {
                let w = model.const_weights(t.index)?;
                Some(match w.as_f32() {
                    Some(data) => gpu.upload(data),
                    None => gpu.upload(&w.dequantize()),
                })
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

fn to_u32(v: usize) -> Result<u32, GpuError> {
    u32::try_from(v).map_err(|_| unsupported("a tensor over 2^32 elements".into()))
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

fn bad_graph() -> GpuError {
    GpuError::Flowrt(flowrt::Error::Invalid {
        what: "graph structure is inconsistent",
    })
}
