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

/// A static buffer handed out once, as `&mut`, by `main`.
pub struct Static<T>(pub UnsafeCell<T>);
// SAFETY: single core / single hart, no interrupt handler touches these; `main` takes each once.
unsafe impl<T> Sync for Static<T> {}

/// The arena: exactly the plan's size, 16-byte aligned, in .bss.
pub static ARENA: Static<Aligned16<[u8; ARENA_BYTES]>> =
    Static(UnsafeCell::new(Aligned16([0; ARENA_BYTES])));
/// The state: noise in, samples out.
pub static STATE: Static<[f32; STATE_LEN]> = Static(UnsafeCell::new([0.0; STATE_LEN]));
