//! What both firmwares embed, included by each with `#[path]` (so `env!("OUT_DIR")` is that
//! crate's): the build-time plan constants, the model and noise from flash, and the
//! 16-byte aligned arena and state statics sized by the model's memory plan.

use core::cell::UnsafeCell;

use flowrt::format::Aligned16;

#[allow(dead_code)]
mod plan {
    include!(concat!(env!("OUT_DIR"), "/plan.rs"));
}
pub use plan::*;

/// The model, 16-byte aligned in flash.
pub static MODEL: &[u8] = flowrt::include_frt!(concat!(env!("OUT_DIR"), "/model.frt"));
/// The noise: raw little-endian f32, `STATE_LEN` values.
pub static NOISE: &[u8; STATE_LEN * 4] = include_bytes!(concat!(env!("OUT_DIR"), "/noise.bin"));

/// Class labels (raw little-endian i64, `LABELS_LEN` values; none for unconditional models).
pub static LABELS_RAW: &[u8; LABELS_LEN * 8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/labels.bin"));
/// The labels, decoded by [`buffers`].
pub static LABELS: Static<[i64; LABELS_LEN]> = Static(UnsafeCell::new([0; LABELS_LEN]));

/// A static buffer handed out once, as `&mut`, by `main`.
pub struct Static<T>(pub UnsafeCell<T>);
// SAFETY: single core / single hart, no interrupt handler touches these; `main` takes each once.
unsafe impl<T> Sync for Static<T> {}

/// The arena: exactly the plan's size, 16-byte aligned, in .bss.
pub static ARENA: Static<Aligned16<[u8; ARENA_BYTES]>> =
    Static(UnsafeCell::new(Aligned16([0; ARENA_BYTES])));
/// The state: noise in, samples out.
pub static STATE: Static<[f32; STATE_LEN]> = Static(UnsafeCell::new([0.0; STATE_LEN]));

/// The arena, the state filled with the embedded noise, and the labels.
///
/// Call once (from `main`): the returned references are the only ones ever made to
/// [`ARENA`], [`STATE`] and [`LABELS`].
pub fn buffers() -> (
    &'static mut [u8],
    &'static mut [f32; STATE_LEN],
    &'static [i64],
) {
    // SAFETY: called once from `main` (single core, no interrupt uses these), so these are
    // the only references to the statics.
    let (arena, x, labels) = unsafe {
        (
            &mut (*ARENA.0.get()).0,
            &mut *STATE.0.get(),
            &mut *LABELS.0.get(),
        )
    };
    for (v, b) in x.iter_mut().zip(NOISE.chunks_exact(4)) {
        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    for (v, b) in labels.iter_mut().zip(LABELS_RAW.chunks_exact(8)) {
        *v = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    }
    (arena, x, labels)
}

/// Samples `x` in place: conditioned on `labels` when the firmware embeds them.
pub fn sample_embedded(
    model: &flowrt::Model<'_>,
    method: flowrt::solver::Method,
    grid: &dyn flowrt::grid::TimeGrid,
    x: &mut [f32],
    labels: &[i64],
    arena: &mut [u8],
) -> Result<(), flowrt::Error> {
    if labels.is_empty() {
        flowrt::sampler::sample(model, method, grid, x, arena)
    } else {
        let cond = flowrt::field::Conditioning {
            label: Some(labels),
            ..Default::default()
        };
        flowrt::sampler::sample_cond(model, method, grid, x, &cond, arena)
    }
}

/// What [`run_embedded`] measured around the sampling.
pub struct Measured {
    /// Counter ticks the sampling took (SysTick ticks, retired instructions).
    pub counted: u64,
    /// The deepest stack address the sampling touched ([`lowest_touched`]).
    pub touched: usize,
}

/// The firmware's job: loads the embedded model, builds the uniform grid of `STEPS` steps from
/// the model's noise end to its data end (t 0 -> 1, or sigma 1 -> 0) and samples `x` in place
/// ([`sample_embedded`]), with the free stack painted by `paint_stack` and `counter` read
/// around the sampling. Any error goes to `fail`, which does not return.
pub fn run_embedded(
    x: &mut [f32],
    labels: &[i64],
    arena: &mut [u8],
    paint_stack: fn() -> (usize, usize),
    counter: fn() -> u64,
    fail: fn(&str, flowrt::Error) -> !,
) -> Measured {
    let model = flowrt::Model::from_bytes(MODEL).unwrap_or_else(|e| fail("loading the model", e));
    let method: flowrt::solver::Method = METHOD.parse().unwrap_or_else(|e| fail("method", e));
    let grid = flowrt::grid::GridSpec::Uniform
        .build(STEPS, model.time_convention().axis)
        .unwrap_or_else(|e| fail("grid", e));

    let (lo, hi) = paint_stack();
    let c0 = counter();
    sample_embedded(&model, method, &grid, x, labels, arena)
        .unwrap_or_else(|e| fail("sampling", e));
    let counted = counter() - c0;
    Measured {
        counted,
        touched: lowest_touched(lo, hi),
    }
}

/// Pattern painted on the free stack to measure its high-water mark.
const PAINT: u32 = 0xC0DE_F10E;

/// Paints `[lo, hi)` with a pattern; returns `(lo, hi)` for [`lowest_touched`].
///
/// # Safety
/// `[lo, hi)` must be 4-aligned RAM nobody uses: between the end of .bss and the live stack.
pub unsafe fn paint(lo: usize, hi: usize) -> (usize, usize) {
    let mut p = lo;
    while p < hi {
        // SAFETY: the caller guarantees [lo, hi) is unused RAM.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
    (lo, hi)
}

/// Lowest address in `[lo, hi)` whose paint was overwritten (the stack's deepest point).
pub fn lowest_touched(lo: usize, hi: usize) -> usize {
    let mut p = lo;
    // SAFETY: [lo, hi) was painted by `paint` and is RAM.
    while p < hi && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    p
}
