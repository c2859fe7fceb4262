//! Helpers shared by the runtime's integration tests: shape shorthands, a deterministic
//! generator for weights and inputs, and small hand-built graphs.
#![allow(dead_code)]

use flowrt::format::AlignedBytes;
use flowrt::ir::{BinaryOp, Dim, ModelBuilder, ModelDesc, Op};

/// The symbolic batch dimension.
pub const B: Dim = Dim::Batch;

/// A fixed dimension.
pub fn f(n: u32) -> Dim {
    Dim::Fixed(n)
}

/// A linear congruential generator: the same values on every machine.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next 53 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }

    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        ((self.next_u64() >> 29) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values of [`Lcg::f32`].
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Writes `desc` and loads the bytes into an aligned buffer.
pub fn load(desc: &ModelDesc) -> AlignedBytes {
    AlignedBytes::copy_from(&flowrt::write::write(desc).unwrap())
}

/// `x · 0 + other` with the shape of `x` ([B, 2]): an output that depends on `x`'s batch but
/// shows only `other` (a constant, or the time input).
pub fn zero_plus(m: &mut ModelBuilder, x: u32, other: u32) -> u32 {
    let zero = m.constant(&[f(1)], vec![0.0]);
    let xz = m.node(Op::Binary(BinaryOp::Mul), &[x, zero], &[B, f(2)]);
    m.node(Op::Binary(BinaryOp::Add), &[xz, other], &[B, f(2)])
}
