//! flowrt: run flow-matching / rectified-flow generative models from `.frt` files.
//!
//! `#![no_std]` and allocation-free by default: a [`Model`] borrows its weights zero-copy
//! from the file bytes, the executor works in a caller-supplied arena, and the fixed-step
//! solvers drive any [`VelocityField`].
//!
//! ```
//! use flowrt::{grid::Uniform, solver::Method, Model};
//!
//! // A two-moons model written by `flowrt export`, embedded 16-byte aligned (in flash on a
//! // microcontroller); `Model::from_bytes` validates the whole file once.
//! let model = Model::from_bytes(flowrt::include_frt!("../tests/data/moons_icfm.frt"))?;
//! let (rows, dim) = (4, model.state_dim());
//! // The arena size is known before anything runs: the model's static memory plan.
//! let need = flowrt::sampler::sample_arena_bytes(&model, Method::Rk4, rows)?;
//! let mut arena = flowrt::format::Aligned16([0u8; 16 * 1024]);
//! assert!(need <= arena.0.len());
//! let mut x = [0f32; 4 * 2];
//! assert_eq!(x.len(), rows * dim);
//! flowrt::rng::fill_normal(7, &mut x); // the same noise on every CPU
//! let grid = Uniform::new(8, 0.0, 1.0)?; // 8 steps from noise (t = 0) to data (t = 1)
//! flowrt::sampler::sample(&model, Method::Rk4, &grid, &mut x, &mut arena.0)?;
//! assert!(x.iter().all(|v| v.is_finite())); // x now holds 4 two-moons samples
//! # Ok::<(), flowrt::Error>(())
//! ```
#![no_std]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

// Modules import one way, each only from those listed before it (scripts/check-layers.py
// checks it in CI): error, crc, io (std) → rng, time → grid → method → ops → linked → format → ir → plan →
// model → write → select → field → exec → solver → guidance, fewstep, sde → pipeline → sampler.
pub mod crc;
pub mod error;
pub mod field;
#[cfg(feature = "std")]
pub mod io;
#[cfg(feature = "alloc")]
pub mod ir;
pub mod method;
#[cfg(feature = "alloc")]
pub mod write;

// Format, model loading and CPU execution (format.rs, model.rs, exec.rs, ops/, plan.rs).
pub mod exec;
pub mod fewstep;
pub mod format;
pub mod model;
pub mod ops;
pub mod pipeline;
#[cfg(feature = "alloc")]
pub mod plan;

// Solvers, time grids and the deterministic RNG.
#[cfg(feature = "alloc")]
pub mod calibrate;
pub mod grid;
pub mod guidance;
// The `Selection` trait and its bits, below the format and the model (re-exported by
// `select`).
mod linked;
pub mod rng;
pub mod run;
pub mod sampler;
pub mod sde;
pub mod select;
pub mod solver;
pub mod time;

pub use error::Error;
pub use field::{CpuOps, StateOps, VelocityField};
pub use model::Model;
