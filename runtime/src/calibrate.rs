//! Export-time calibration (feature `alloc`): samples trajectories of a model on the CPU and
//! shows every tensor of every evaluation to an [`Observer`], so the exporter can pick the
//! int8 activation scales of the full-integer mode (`flowrt export --activations int8`).

use alloc::vec;
use alloc::vec::Vec;

use crate::exec::{CpuField, Observer};
use crate::field::{Conditioning, CpuOps};
use crate::format::{AlignedBytes, InputRole};
use crate::grid::GridSpec;
use crate::run::{run, Buffers, Facts, Request};
use crate::solver::{Method, NoObserver, Workspace};
use crate::{Error, Model};

/// Samples `rows` trajectories of `model` with `steps` Euler steps on a uniform grid in the
/// model's time, from `flowrt::rng` noise of `seed` (class-conditional models: labels drawn
/// uniformly from every row of the label table, the null label included), calling `observe`
/// with every input and node output of every evaluation.
///
/// Errors: a model with a `cond` or `guidance` input (there is no generic way to draw
/// those: [`Error::BadArgument`]), `rows` or `steps` 0, or any sampling error.
pub fn trajectories(
    model: &Model<'_>,
    rows: usize,
    steps: usize,
    seed: u64,
    observe: &mut Observer<'_>,
) -> Result<(), Error> {
    if rows == 0 || steps == 0 {
        return Err(Error::BadArgument {
            what: "calibration needs at least one row and one step",
        });
    }
    let mut labels = Vec::new();
    for info in model.inputs() {
        match info.role {
            InputRole::Label => {
                // Every class of the label table (the null label included), else label 0.
                let span = model.label_classes().map_or(1, |n| n.max(1)) as u64;
                let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
                labels = (0..rows)
                    .map(|_| {
                        s = s
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        ((s >> 33) % span) as i64
                    })
                    .collect();
            }
            InputRole::Cond | InputRole::Guidance => {
                return Err(Error::BadArgument {
                    what: "calibrating a model with a cond or guidance input is not supported",
                })
            }
            _ => {}
        }
    }
    let method = Method::Euler;
    let d = model.state_dim();
    let mut x = vec![
        0f32;
        rows.checked_mul(d).ok_or(Error::BadArgument {
            what: "calibration batch too large",
        })?
    ];
    crate::rng::fill_normal(seed, &mut x);
    let field_bytes = (model.required_arena_bytes(rows)? + 15) & !15;
    let mut arena = AlignedBytes::zeroed(field_bytes);
    let mut work_arena =
        AlignedBytes::zeroed(method.workspace_bytes(x.len()).ok_or(Error::BadArgument {
            what: "calibration batch too large",
        })?);
    let (work, _) =
        Workspace::from_arena(work_arena.as_mut_slice(), x.len(), method.work_buffers())?;
    let mut field = CpuField::new(model, rows, arena.as_mut_slice())?;
    field.observe(observe);
    let grid = GridSpec::Uniform.build(steps, model.time_convention().axis)?;
    let cond = Conditioning {
        label: (!labels.is_empty()).then_some(labels.as_slice()),
        ..Default::default()
    };
    let req = Request {
        method,
        grid: &grid,
        tol: Default::default(),
        cond,
        guidance: None,
    };
    let mut bufs = Buffers { work, guided: None };
    run(
        &mut CpuOps,
        &mut field,
        &Facts::of(model),
        &req,
        &mut x,
        &mut bufs,
        &mut NoObserver,
    )?;
    Ok(())
}
