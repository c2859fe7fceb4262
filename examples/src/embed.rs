//! Embedding flowrt in a Rust program: load a `.frt`, size the arena from the model's static
//! memory plan, and draw samples with a fixed-size arena and stack buffers — no heap
//! allocation in the sampling path. The README's "Embedding in Rust" snippet is the marked
//! part of `main` (`tests/tests/doc_snippets.rs` checks that it stays a verbatim copy).
//!
//! ```sh
//! ./scripts/demo.sh                                   # writes out/demo/moons_reflow.frt
//! cargo run --release -p flowrt-examples --bin embed -- out/demo/moons_reflow.frt
//! ```

use flowrt::format::{Aligned16, AlignedBytes};

/// Samples drawn per call.
const ROWS: usize = 8;
/// Largest state dimension this program supports.
const MAX_DIM: usize = 16;
/// Arena budget; `sample_arena_bytes` says what a model needs.
const ARENA_BYTES: usize = 64 * 1024;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "out/demo/moons_reflow.frt".into());
    let bytes = AlignedBytes::copy_from(&std::fs::read(&path)?);
    let file = bytes.as_slice();

    // README: embedding in Rust (begin)
    // `file`: the .frt bytes at a 16-byte aligned address (in firmware, from flash:
    // `static FILE: &[u8] = flowrt::include_frt!("model.frt");`).
    let model = flowrt::Model::from_bytes(file)?; // validates the whole file once
    let method = flowrt::solver::Method::Euler;
    let need = flowrt::sampler::sample_arena_bytes(&model, method, ROWS)?;
    let mut arena = Aligned16([0u8; ARENA_BYTES]); // firmware: a `static` sized from `need`
    let mut buf = [0f32; ROWS * MAX_DIM];
    let x = buf
        .get_mut(..ROWS * model.state_dim())
        .ok_or("state wider than MAX_DIM")?;
    flowrt::rng::fill_normal(42, x); // the same noise on every CPU
    let grid = flowrt::grid::Uniform::new(1, 0.0, 1.0)?; // one step, noise (0) to data (1)
    flowrt::sampler::sample(&model, method, &grid, x, &mut arena.0)?; // x now holds the samples
                                                                      // README: embedding in Rust (end)

    println!(
        "{path}: state dim {}; {method} x 1 step for {ROWS} samples needs {need} arena bytes (have {ARENA_BYTES})",
        model.state_dim()
    );
    for row in x.chunks_exact(model.state_dim()) {
        println!("{row:?}");
    }
    Ok(())
}
