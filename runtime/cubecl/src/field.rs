//! The model on the device ([`GpuField`]): a [`ConditionalField`] of [`GpuOps`], so the
//! runtime's request-driven run (`flowrt::run`: solvers, guidance, the few-step rule)
//! integrates it as it integrates the CPU executor.
//!
//! Inputs are fed by role exactly as `flowrt::exec::CpuField` feeds them: `x` is the solver's
//! state buffer itself; `t` (and a few-step model's `step`) is filled on the device with one
//! launch; `xt` rows `[x_row, t]` are assembled by a kernel; `label`, `cond` and `guidance`
//! are checked with the same [`Signature`] as on every backend and uploaded only when they
//! change (an evaluation with the rows already on the device uploads nothing).

use std::collections::HashMap;

use cubecl::prelude::*;
use cubecl::server::Handle;
use flowrt::field::{ConditionalField, Conditioning, Signature};
use flowrt::format::InputRole;
use flowrt::model::MAX_INPUTS;
use flowrt::{Error, Model};

use crate::graph::{GpuGraph, Plan};
use crate::kernels::layout;
use crate::{GpuBuf, GpuError, GpuOps};

/// The flowrt error a failed device operation turns into inside the solver; the cause is
/// kept by the field ([`GpuField::take_error`]) or the ops ([`GpuOps::take_error`]).
pub const DEVICE_FAILED: Error = Error::Backend {
    what: "the GPU backend failed (its error says why)",
};

/// One conditioning input on the device, with the host values it was made from.
struct OnDevice<T> {
    handle: Handle,
    host: Vec<T>,
}

/// Conditioning uploaded for some number of rows.
#[derive(Default)]
struct Uploaded {
    label: Option<OnDevice<i64>>,
    cond: Option<OnDevice<f32>>,
    guidance: Option<OnDevice<f32>>,
    step: Option<f32>,
}

/// What identifies the conditioning of one evaluation (see [`GpuField`]'s `checked`).
type CondKey = (usize, [(usize, usize); 3]);

/// The key of an evaluation of `x_len` values with `cond`.
fn cond_key(x_len: usize, cond: &Conditioning<'_>) -> CondKey {
    fn at<T>(s: Option<&[T]>) -> (usize, usize) {
        s.map_or((0, 0), |s| (s.as_ptr() as usize, s.len()))
    }
    (x_len, [at(cond.label), at(cond.cond), at(cond.guidance)])
}

/// `true` when `want` is on the device already: both absent, or `want` a prefix of what was
/// uploaded (bit for bit).
fn covers<T: Copy + PartialEq>(have: &Option<OnDevice<T>>, want: Option<&[T]>) -> bool {
    match (have, want) {
        (None, None) => true,
        (Some(h), Some(w)) => h.host.get(..w.len()).is_some_and(|p| p == w),
        _ => false,
    }
}

/// A `.frt` model evaluated on the device for up to `batch` rows per call.
pub struct GpuField<'m> {
    model: Model<'m>,
    graph: GpuGraph,
    plans: HashMap<usize, Plan>,
    batch: usize,
    sig: Signature,
    cond: Uploaded,
    /// The state length and the (address, length) of the label, cond and guidance slices
    /// of the last two conditionings checked whose rows are on the device (a guided run
    /// alternates the doubled one and its conditional half): an evaluation with one of them
    /// skips the O(rows) check. Valid within one run, whose conditioning is borrowed
    /// (unchanged) throughout; [`GpuField::forget_checked`] ends it, and an upload clears it.
    checked: [Option<CondKey>; 2],
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
            sig: Signature::of(model),
            cond: Uploaded::default(),
            checked: [None; 2],
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

    /// Checks `cond` for `rows` rows with the rules of every backend ([`Signature::check`])
    /// and uploads what is not on the device yet (nothing when its rows are a prefix of the
    /// last upload, as a guided run's conditional half is). The `step` value is kept for the
    /// next evaluation.
    ///
    /// Errors: as [`Signature::check`] (a missing or unused role, wrong lengths, labels out
    /// of range, non-finite values).
    pub fn set_conditioning<R: Runtime>(
        &mut self,
        ops: &GpuOps<R>,
        rows: usize,
        cond: &Conditioning<'_>,
    ) -> Result<(), GpuError> {
        self.sig.check(rows, cond)?;
        self.upload(ops, rows, cond);
        self.checked = [None; 2];
        Ok(())
    }

    /// Forgets which conditioning was checked last, so the next evaluation checks its
    /// conditioning again (call it when the caller's buffers may have changed: a new run).
    pub fn forget_checked(&mut self) {
        self.checked = [None; 2];
    }

    /// Uploads what of `cond` (checked) is not on the device yet; keeps the `step` value.
    /// Returns whether anything was uploaded.
    fn upload<R: Runtime>(
        &mut self,
        ops: &GpuOps<R>,
        rows: usize,
        cond: &Conditioning<'_>,
    ) -> bool {
        self.cond.step = cond.step;
        let up = &mut self.cond;
        let mut uploaded = false;
        if !covers(&up.label, cond.label) {
            uploaded = true;
            up.label = cond.label.map(|l| {
                // Exact in f32: the signature check bounds labels by 2^24.
                let f: Vec<f32> = l.iter().map(|v| *v as f32).collect();
                OnDevice {
                    handle: ops.gpu.upload(&f),
                    host: l.to_vec(),
                }
            });
        }
        if !covers(&up.cond, cond.cond) {
            uploaded = true;
            up.cond = cond.cond.map(|c| OnDevice {
                handle: ops.gpu.upload(c),
                host: c.to_vec(),
            });
        }
        if !covers(&up.guidance, cond.guidance) {
            uploaded = true;
            let info = self.model.input_by_role(InputRole::Guidance);
            up.guidance = match (cond.guidance, info) {
                (Some(g), Some(info)) => Some(OnDevice {
                    handle: if info.shape.has_batch() {
                        ops.gpu.upload(g)
                    } else {
                        // One value for all rows (the check made sure they are equal).
                        let len = info.shape.elements(rows).unwrap_or(1);
                        ops.gpu
                            .upload(&vec![g.first().copied().unwrap_or(0.0); len])
                    },
                    host: g.to_vec(),
                }),
                _ => None,
            };
        }
        uploaded
    }

    fn eval_gpu<R: Runtime>(
        &mut self,
        ops: &mut GpuOps<R>,
        t: f32,
        x: &GpuBuf,
        v: &GpuBuf,
        rows: usize,
    ) -> Result<(), GpuError> {
        let d = self.model.state_dim();
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
                    let too_large = || GpuError::Unsupported("an xt input too large".into());
                    let du = u32::try_from(d).map_err(|_| too_large())?;
                    let launched = ops.launch_1d(len, None, |client, grid, dim, c| {
                        layout::assemble_xt::launch::<R>(
                            client,
                            grid,
                            dim,
                            GpuOps::<R>::arr(&x.handle, x.len),
                            GpuOps::<R>::arr(&h, len),
                            du,
                            t,
                            c,
                        )
                    });
                    if !launched {
                        return Err(too_large());
                    }
                    h
                }
                InputRole::Label => on_device(&self.cond.label, "model needs a label input")?,
                InputRole::Cond => on_device(&self.cond.cond, "model needs a cond input")?,
                InputRole::Guidance => {
                    on_device(&self.cond.guidance, "model needs a guidance input")?
                }
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

/// The device handle of a conditioning input, or the error naming it.
fn on_device<T>(c: &Option<OnDevice<T>>, what: &'static str) -> Result<Handle, Error> {
    c.as_ref()
        .map(|c| c.handle.clone())
        .ok_or(Error::BadArgument { what })
}

impl<R: Runtime> ConditionalField<GpuOps<R>> for GpuField<'_> {
    fn eval_cond(
        &mut self,
        ops: &mut GpuOps<R>,
        t: f32,
        x: &GpuBuf,
        cond: &Conditioning<'_>,
        v: &mut GpuBuf,
    ) -> Result<(), Error> {
        let key = cond_key(x.len, cond);
        let fast = self.checked.contains(&Some(key))
            && v.len == x.len
            && cond.step.is_some() == self.sig.step;
        let rows = if fast {
            if cond.step.is_some_and(|s| !s.is_finite()) {
                return Err(Error::NonFiniteInput {
                    what: "second time input",
                });
            }
            self.cond.step = cond.step;
            x.len / self.model.state_dim().max(1)
        } else {
            let rows = self.sig.check_eval(x.len, v.len, self.batch, cond)?;
            if self.upload(ops, rows, cond) {
                self.checked = [Some(key), None];
            } else {
                self.checked = [Some(key), self.checked[0]];
            }
            rows
        };
        match self.eval_gpu(ops, t, x, v, rows) {
            Ok(()) => Ok(()),
            Err(GpuError::Flowrt(e)) => Err(e),
            Err(e) => {
                self.error.get_or_insert(e);
                Err(DEVICE_FAILED)
            }
        }
    }
}
