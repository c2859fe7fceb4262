//! `Model::from_bytes` on arbitrary bytes; when the file loads, samples a few rows with the
//! runtime's own no_std API over a fixed arena, as firmware does.
//!
//! The input is a `.frt` image followed by (optional) option bytes: the header's `total_len`
//! ends the file and the reader ignores what follows, so the seeds are plain `.frt` files and
//! the fuzzer appends or mutates the options:
//!
//! * byte 0: solver method (index into `Method::ALL`: the fixed-step methods; dopri5 is left
//!   out because the sampler runs it with the default `max_steps` of 2^20 attempted steps,
//!   which a mutated network that keeps the error estimate high reaches only after minutes:
//!   bounded, but a libFuzzer timeout),
//! * byte 1: steps, 1..=4,
//! * byte 2: batch, 1..=4,
//! * byte 3: grid (bit 0: the file's solver-defaults grid when it has one, else uniform).
//!
//! The checksum is not checked in fuzzing builds (`cfg(fuzzing)` in the runtime's loader), so
//! mutated files reach the validation behind it.
#![no_main]

use std::cell::RefCell;

use flowrt::field::Conditioning;
use flowrt::format::AlignedBytes;
use flowrt::grid::{GridSpec, TimeGrid};
use flowrt::solver::Method;
use flowrt::Model;
use libfuzzer_sys::fuzz_target;

/// The fixed arena: 1 MiB, 16-byte aligned (what a large microcontroller could spare).
const ARENA_BYTES: usize = 1 << 20;

thread_local! {
    static ARENA: RefCell<AlignedBytes> = RefCell::new(AlignedBytes::zeroed(ARENA_BYTES));
}

fuzz_target!(|data: &[u8]| {
    // The model must sit at an aligned address; libFuzzer's buffer need not.
    let file = AlignedBytes::copy_from(data);
    let Ok(model) = Model::from_bytes(file.as_slice()) else {
        return;
    };
    // Everything the loader accepted must be answerable without panics.
    let _ = model.required_arena_bytes(1);
    let _ = model.solver_defaults();
    let _ = model.metadata().count();
    let _ = model.tensors().count();
    let _ = model.nodes().count();
    let opts = data.get(model.file_len()..).unwrap_or(&[]);
    let opt = |i: usize| opts.get(i).copied().unwrap_or(0);
    let method = Method::ALL[opt(0) as usize % Method::ALL.len()];
    let steps = 1 + (opt(1) % 4) as usize;
    let batch = 1 + (opt(2) % 4) as usize;
    let axis = model.time_convention().axis;
    let spec = match model.solver_defaults() {
        Some(d) if opt(3) & 1 == 1 => d.grid.unwrap_or(GridSpec::Uniform),
        _ => GridSpec::Uniform,
    };
    let Ok(grid) = spec.build(steps, axis) else {
        return;
    };
    // Bound the work per input: explicit and step-size grids fix their own step count.
    if grid.steps() > 64 {
        return;
    }
    let d = model.state_dim();
    let Some(n) = d.checked_mul(batch).filter(|&n| n <= 1 << 16) else {
        return;
    };
    let mut x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 200) as f32 / 100.0 - 1.0)
        .collect();
    let labels = vec![0i64; batch];
    let cond_vec = vec![0.25f32; batch * model.cond_dim().unwrap_or(0)];
    let guid = vec![1.5f32; batch];
    use flowrt::format::InputRole;
    let cond = Conditioning {
        label: model.input_by_role(InputRole::Label).map(|_| &labels[..]),
        cond: model.input_by_role(InputRole::Cond).map(|_| &cond_vec[..]),
        guidance: model.input_by_role(InputRole::Guidance).map(|_| &guid[..]),
        step: None,
    };
    ARENA.with(|a| {
        let mut a = a.borrow_mut();
        let arena = a.as_mut_slice();
        if let Some(p) = model.pipeline() {
            let mut out = vec![0f32; batch * p.output_dim().min(1 << 16)];
            let out = p.decoder().is_some().then_some(&mut out[..]);
            let _ = flowrt::pipeline::sample_pipeline_cond(
                &p, method, &grid, &mut x, &cond, out, arena,
            );
        } else {
            let _ = flowrt::sampler::sample_cond(&model, method, &grid, &mut x, &cond, arena);
        }
    });
});
