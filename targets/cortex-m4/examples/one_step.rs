//! The smallest one-step flowrt generator for a Cortex-M firmware: copy this.
//!
//! The model lives in flash (`include_frt!`), the arena is a static whose size comes from the
//! model's memory plan at compile time (`ARENA_BYTES`, written by `build.rs` from
//! `flowrt::sampler::sample_arena_bytes`; `flowrt inspect --json` prints the graph part), and
//! one Euler step maps noise to a sample. No heap, no std. Only the op kernels the model uses,
//! their checks in the loader and the Euler loop are linked: `build.rs` writes
//! `plan::Selected` (a `flowrt::select::Selection` made from the model) and the example loads
//! with `Model::from_bytes_with::<plan::Selected>` and samples with
//! `sample_with::<plan::Selected>`; `Model::from_bytes` and `flowrt::sampler::sample` would
//! link every op kind.
//!
//! Build and run (from targets/cortex-m4; add `--features f16,int8` for a model with typed
//! weights, as build.rs says):
//!   FLOWRT_FRT=/abs/model.frt FLOWRT_NOISE=/abs/noise.npy cargo run --release --example one_step
#![no_std]
#![no_main]

#[path = "../src/vectors.rs"]
mod vectors;
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use flowrt::format::Aligned16;
use panic_semihosting as _;

// The runtime logs through defmt in this crate (feature `defmt`): a global logger is needed.
#[path = "../src/logger.rs"]
mod logger;

mod plan {
    #![allow(dead_code)]
    include!(concat!(env!("OUT_DIR"), "/plan.rs"));
}

static MODEL: &[u8] = flowrt::include_frt!(concat!(env!("OUT_DIR"), "/model.frt"));

#[entry]
fn main() -> ! {
    logger::init();
    // Arena sized by the plan for one row and one Euler step; on the stack here for brevity,
    // a `static` (as in src/main.rs) works the same.
    let mut arena = Aligned16([0u8; plan::ARENA_BYTES]);
    // In a real device: fill from your RNG (`flowrt::rng::fill_normal` is deterministic).
    let mut x = [0f32; plan::STATE_LEN];
    flowrt::rng::fill_normal(42, &mut x);

    let result = flowrt::Model::from_bytes_with::<plan::Selected>(MODEL).and_then(|model| {
        let grid = flowrt::grid::GridSpec::Uniform.build(1, model.time_convention().axis)?;
        flowrt::sampler::sample_with::<plan::Selected>(
            &model,
            flowrt::solver::Method::Euler,
            &grid,
            &mut x,
            &mut arena.0,
        )
    });
    match result {
        Ok(()) => hprintln!("sample: {:?}", x),
        Err(e) => hprintln!("error: {}", e),
    }
    debug::exit(if result.is_ok() {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        core::hint::spin_loop();
    }
}
