//! Embedding flowrt in a Rust program: load a `.frt`, size the arena from the model's static
//! memory plan, and draw samples with a fixed-size arena and stack buffers — no heap
//! allocation in the sampling path.
//!
//! ```sh
//! ./scripts/demo.sh                                   # writes out/demo/moons_reflow.frt
//! cargo run --release -p flowrt-examples --bin embed -- out/demo/moons_reflow.frt
//! ```

use flowrt::format::AlignedBytes;
use flowrt::grid::Uniform;
use flowrt::solver::Method;
use flowrt::Model;

/// Samples drawn per call.
const BATCH: usize = 8;
/// Largest state dimension this program supports.
const MAX_DIM: usize = 16;
/// Arena budget; `sample_arena_bytes` says whether the model fits.
const ARENA_BYTES: usize = 64 * 1024;

/// A 16-byte aligned arena, as the runtime prefers.
#[repr(C, align(16))]
struct Arena([u8; ARENA_BYTES]);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "out/demo/moons_reflow.frt".into());
    // On a microcontroller: `static MODEL: &[u8] = flowrt::include_frt!("model.frt");`
    let file = AlignedBytes::copy_from(&std::fs::read(&path)?);
    let model = Model::from_bytes(file.as_slice())?;
    let dim = model.state_dim();
    if dim > MAX_DIM {
        return Err(format!("state dim {dim} > MAX_DIM {MAX_DIM}").into());
    }
    let method = Method::Euler;
    let need = flowrt::sampler::sample_arena_bytes(&model, method, BATCH)?;
    println!("{path}: state dim {dim}; {method} x 1 step for {BATCH} samples needs {need} arena bytes (have {ARENA_BYTES})");

    let mut arena = Arena([0; ARENA_BYTES]);
    let mut buf = [0f32; BATCH * MAX_DIM];
    let x = &mut buf[..BATCH * dim];
    flowrt::rng::fill_normal(42, x); // deterministic noise, same on every platform
    let grid = Uniform::new(1, 0.0, 1.0)?;
    flowrt::sampler::sample(&model, method, &grid, x, &mut arena.0)?;
    for row in x.chunks_exact(dim) {
        println!("{row:?}");
    }
    Ok(())
}
