//! The model as a velocity field on the device ([`GpuField`]) and classifier-free guidance
//! over one doubled batch ([`GpuCfgField`]), both [`VelocityField`]s of [`GpuOps`], so
//! `flowrt::solver` integrates them as it integrates the CPU executor.
//!
//! Inputs are fed by role exactly as `flowrt::exec::CpuField` feeds them: `x` is the solver's
//! state buffer itself; `t` (and a few-step model's `step`) is filled on the device with one
//! launch; `xt` rows `[x_row, t]` are assembled by a kernel; `label`, `cond` and `guidance`
//! are checked and uploaded once ([`GpuField::set_conditioning`]).

use std::collections::HashMap;

use cubecl::prelude::*;
use cubecl::server::Handle;
use flowrt::field::Conditioning;
use flowrt::format::InputRole;
use flowrt::guidance::Guidance;
use flowrt::model::MAX_INPUTS;
use flowrt::time::TimeConvention;
use flowrt::{Error, Model, StateOps, VelocityField};

use crate::graph::{GpuGraph, Plan, BLOCK};
use crate::kernels::{layout, state};
use crate::{GpuBuf, GpuError, GpuOps};

/// The flowrt error a failed device operation turns into inside the solver; the cause is
/// kept by the field ([`GpuField::take_error`]).
pub const DEVICE_FAILED: Error = Error::BadArgument {
    what: "the GPU backend failed (its error says why)",
};

/// Conditioning uploaded for up to `rows` rows.
#[derive(Default)]
struct Uploaded {
    label: Option<Handle>,
    cond: Option<Handle>,
    guidance: Option<Handle>,
    step: Option<f32>,
}

/// A `.frt` model evaluated on the device for up to `batch` rows per call.
pub struct GpuField<'m> {
    model: Model<'m>,
    graph: GpuGraph,
    plans: HashMap<usize, Plan>,
    batch: usize,
    cond: Uploaded,
    /// Scratch for the `t`, `step` and `xt` inputs (per signature position).
    scratch: [Option<(Handle, usize)>; MAX_INPUTS],
    error: Option<GpuError>,
    evaluations: usize,
}

impl<'m> GpuField<'m> {
    /// Uploads `model`'s weights and plans it for `batch` rows.
    ///
    /// Errors: a plain graph (`data` inputs) or a model whose output is not a velocity
    /// ([`GpuError::Unsupported`]); a launch the device cannot take; `batch` 0.
    pub fn new<R: Runtime>(
        ops: &GpuOps<R>,
        model: &Model<'m>,
        batch: usize,
    ) -> Result<GpuField<'m>, GpuError> {
        if batch == 0 {
            return Err(Error::BadArgument {
                what: "batch size must be at least 1",
            }
            .into());
        }
        if model.state_dim() == 0 {
            return Err(GpuError::Unsupported(
                "a plain graph (inputs `data`) is not a velocity field".into(),
            ));
        }
        if model.output_dim() != model.state_dim() {
            return Err(Error::BadArgument {
                what: "the model's output is not a velocity (its rows differ from the state's)",
            }
            .into());
        }
        let (graph, plan) = crate::guard(|| {
            Ok((
                GpuGraph::new(&ops.gpu, model)?,
                Plan::new(&ops.gpu, model, batch)?,
            ))
        })?;
        let mut plans = HashMap::new();
        plans.insert(batch, plan);
        Ok(GpuField {
            model: *model,
            graph,
            plans,
            batch,
            cond: Uploaded::default(),
            scratch: Default::default(),
            error: None,
            evaluations: 0,
        })
    }

    /// Kernel launches of one evaluation of `rows` rows (graph only, without the input
    /// fills), if planned.
    pub fn launches_per_eval(&self, rows: usize) -> Option<usize> {
        self.plans.get(&rows).map(Plan::launches)
    }

    /// Velocity evaluations so far.
    pub fn evaluations(&self) -> usize {
        self.evaluations
    }

    /// The first device error an evaluation hit (cleared).
    pub fn take_error(&mut self) -> Option<GpuError> {
        self.error.take()
    }

    /// Checks the conditioning for `batch` rows with the CPU executor's own rules
    /// ([`flowrt::field::check_conditioning`]) and uploads it. The `step` value of few-step
    /// models is optional here: the few-step rule sets it per step, and an evaluation
    /// without it fails.
    ///
    /// Errors: as [`flowrt::field::check_conditioning`] (a missing or unused role, wrong
    /// lengths, labels out of range, non-finite values).
    pub fn set_conditioning<R: Runtime>(
        &mut self,
        ops: &GpuOps<R>,
        cond: &Conditioning<'_>,
    ) -> Result<(), GpuError> {
        let model = &self.model;
        let rows = self.batch;
        flowrt::field::check_conditioning(model, rows, cond)?;
        let mut up = Uploaded {
            step: cond.step,
            ..Default::default()
        };
        if let Some(l) = cond.label {
            // Exact in f32: check_conditioning bounds labels by 2^24.
            let f: Vec<f32> = l.iter().map(|v| *v as f32).collect();
            up.label = Some(ops.gpu.upload(&f));
        }
        if let Some(c) = cond.cond {
            up.cond = Some(ops.gpu.upload(c));
        }
        if let (Some(g), Some(info)) = (cond.guidance, model.input_by_role(InputRole::Guidance)) {
            up.guidance = Some(if info.shape.has_batch() {
                ops.gpu.upload(g)
            } else {
                // One value for all rows (check_conditioning made sure they are equal).
                let len = info.shape.elements(rows).unwrap_or(1);
                ops.gpu
                    .upload(&vec![g.first().copied().unwrap_or(0.0); len])
            });
        }
        self.cond = up;
        Ok(())
    }

    /// Sets only the `step` value (the few-step sampler changes it per step).
    pub fn set_step(&mut self, step: Option<f32>) {
        self.cond.step = step;
    }

    fn eval_gpu<R: Runtime>(
        &mut self,
        ops: &mut GpuOps<R>,
        t: f32,
        x: &GpuBuf,
        v: &GpuBuf,
    ) -> Result<(), GpuError> {
        let d = self.model.state_dim();
        let rows = x.len / d;
        if rows == 0 || rows > self.batch || rows * d != x.len || v.len != x.len {
            return Err(Error::ShapeMismatch {
                what: "x (a whole number of rows, at most the field's batch)",
                expected: self.batch * d,
                found: x.len,
            }
            .into());
        }
        if !self.plans.contains_key(&rows) {
            let plan = Plan::new(&ops.gpu, &self.model, rows)?;
            self.plans.insert(rows, plan);
        }
        let mut inputs: [Option<Handle>; MAX_INPUTS] = Default::default();
        for info in self.model.inputs() {
            let len = info.shape.elements(rows).unwrap_or(0);
            let slot = inputs
                .get_mut(info.index)
                .ok_or(GpuError::Unsupported("too many inputs".into()))?;
            *slot = Some(match info.role {
                InputRole::X => x.handle.clone(),
                InputRole::T | InputRole::Step => {
                    let value = if info.role == InputRole::T {
                        t
                    } else {
                        self.cond.step.ok_or(Error::BadArgument {
                            what: "model needs a step input (a few-step model: sample it \
                                   with the few-step sampler)",
                        })?
                    };
                    let h = scratch(&mut self.scratch, info.index, ops, len);
                    ops.fill(&h, len, value);
                    h
                }
                InputRole::Xt => {
                    let h = scratch(&mut self.scratch, info.index, ops, len);
                    let (Some(grid), Ok(c), Ok(du)) =
                        (ops.grid(len), u32::try_from(len), u32::try_from(d))
                    else {
                        return Err(GpuError::Unsupported("an xt input too large".into()));
                    };
                    ops.gpu.launches += 1;
                    layout::assemble_xt::launch::<R>(
                        &ops.gpu.client,
                        grid,
                        CubeDim::new_1d(BLOCK),
                        unsafe { ArrayArg::from_raw_parts(x.handle.clone(), x.len) },
                        unsafe { ArrayArg::from_raw_parts(h.clone(), len) },
                        du,
                        t,
                        c,
                    );
                    h
                }
                InputRole::Label => self.cond.label.clone().ok_or(Error::BadArgument {
                    what: "model needs a label input",
                })?,
                InputRole::Cond => self.cond.cond.clone().ok_or(Error::BadArgument {
                    what: "model needs a cond input",
                })?,
                InputRole::Guidance => self.cond.guidance.clone().ok_or(Error::BadArgument {
                    what: "model needs a guidance input",
                })?,
                InputRole::Data => {
                    return Err(GpuError::Unsupported(
                        "a plain graph (inputs `data`) is not a velocity field".into(),
                    ))
                }
            });
        }
        let plan = self
            .plans
            .get(&rows)
            .ok_or(GpuError::Device("plan missing".into()))?;
        plan.run(&mut ops.gpu, &self.graph, &inputs, &v.handle)?;
        self.evaluations += 1;
        Ok(())
    }
}

/// The scratch buffer of input `pos` (created on first use, grown as needed).
fn scratch<R: Runtime>(
    slots: &mut [Option<(Handle, usize)>; MAX_INPUTS],
    pos: usize,
    ops: &GpuOps<R>,
    len: usize,
) -> Handle {
    match slots.get_mut(pos) {
        Some(slot) => {
            if slot.as_ref().is_none_or(|(_, n)| *n < len) {
                *slot = Some((ops.gpu.empty(len), len));
            }
            slot.as_ref()
                .map(|(h, _)| h.clone())
                .unwrap_or_else(|| ops.gpu.empty(len))
        }
        None => ops.gpu.empty(len),
    }
}

impl<R: Runtime> VelocityField<GpuOps<R>> for GpuField<'_> {
    fn eval(
        &mut self,
        ops: &mut GpuOps<R>,
        t: f32,
        x: &GpuBuf,
        v: &mut GpuBuf,
    ) -> Result<(), Error> {
        match self.eval_gpu(ops, t, x, v) {
            Ok(()) => Ok(()),
            Err(GpuError::Flowrt(e)) => Err(e),
            Err(e) => {
                self.error.get_or_insert(e);
                Err(DEVICE_FAILED)
            }
        }
    }
}

/// Classifier-free guidance on the device: `v = v_u + w·(v_c − v_u)` from one doubled batch,
/// as `flowrt::guidance::CfgField` computes it on the CPU (same order, same interval rule,
/// same time convention handling). The inner field is created for `2B` rows with the
/// doubled conditioning (conditional rows first, then the null rows).
pub struct GpuCfgField<'f, 'm> {
    inner: &'f mut GpuField<'m>,
    conv: TimeConvention,
    guidance: Guidance,
    x2: GpuBuf,
    v2: GpuBuf,
}

impl<'f, 'm> GpuCfgField<'f, 'm> {
    /// Guidance around `inner` (planned for `2 · batch` rows, conditioning set doubled) for
    /// `batch` rows of the model's state.
    ///
    /// Errors: a bad guidance setting; an inner field not made for `2 · batch` rows.
    pub fn new<R: Runtime>(
        ops: &GpuOps<R>,
        inner: &'f mut GpuField<'m>,
        conv: TimeConvention,
        guidance: Guidance,
        batch: usize,
    ) -> Result<Self, GpuError> {
        guidance.validate()?;
        let d = inner.model.state_dim();
        if inner.batch != batch * 2 {
            return Err(Error::ShapeMismatch {
                what: "guided field rows (2 x batch)",
                expected: batch * 2,
                found: inner.batch,
            }
            .into());
        }
        let n2 = batch * d * 2;
        Ok(GpuCfgField {
            inner,
            conv,
            guidance,
            x2: ops.buffer(n2),
            v2: ops.buffer(n2),
        })
    }
}

impl<R: Runtime> VelocityField<GpuOps<R>> for GpuCfgField<'_, '_> {
    fn eval(
        &mut self,
        ops: &mut GpuOps<R>,
        t: f32,
        x: &GpuBuf,
        v: &mut GpuBuf,
    ) -> Result<(), Error> {
        let n = x.len;
        if v.len != n || n * 2 != self.x2.len {
            return Err(Error::ShapeMismatch {
                what: "guided state (batch x state dim)",
                expected: self.x2.len / 2,
                found: n,
            });
        }
        let tn = self.conv.network_time(t);
        if !self.guidance.active_at(t) {
            self.inner.eval(ops, tn, x, v)?;
        } else {
            let n2 = self.x2.len;
            ops.copy_range(&x.handle, n, &self.x2.handle, n2, 0, 0, n);
            ops.copy_range(&x.handle, n, &self.x2.handle, n2, 0, n, n);
            let (x2, mut v2) = (self.x2.clone(), self.v2.clone());
            self.inner.eval(ops, tn, &x2, &mut v2)?;
            let (Some(grid), Ok(half)) = (ops.grid(n), u32::try_from(n)) else {
                return Err(DEVICE_FAILED);
            };
            ops.gpu.launches += 1;
            state::cfg_combine::launch::<R>(
                &ops.gpu.client,
                grid,
                CubeDim::new_1d(BLOCK),
                unsafe { ArrayArg::from_raw_parts(v2.handle.clone(), n2) },
                unsafe { ArrayArg::from_raw_parts(v.handle.clone(), n) },
                self.guidance.scale,
                half,
            );
        }
        if self.conv.negate_output {
            ops.scale(v, -1.0);
        }
        Ok(())
    }
}
