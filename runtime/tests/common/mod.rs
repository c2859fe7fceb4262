//! Helpers shared by the runtime's integration tests: shape shorthands, a deterministic
//! generator for weights and inputs, and small hand-built graphs.
#![allow(dead_code)]

use flowrt::format::{self, AlignedBytes};
use flowrt::ir::{BinaryOp, Dim, ModelBuilder, ModelDesc, Op};
use flowrt::{Error, Model};

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

/// [`load`] in a given record layout.
#[allow(dead_code)]
pub fn load_with(desc: &ModelDesc, layout: flowrt::write::Layout) -> AlignedBytes {
    AlignedBytes::copy_from(&flowrt::write::write_with(desc, layout).unwrap())
}

/// A section's body (offset, length) in a written file, found in its section table (any
/// version: `flowrt::format::section_entry`).
pub fn section_range(file: &[u8], kind: u16) -> Option<(usize, usize)> {
    let version = u16::from_le_bytes(file[4..6].try_into().unwrap());
    let count = u32::from_le_bytes(file[20..24].try_into().unwrap()) as usize;
    (0..count).find_map(|i| {
        let (k, _, off, len) = flowrt::format::section_entry(file, version, count, i)?;
        (k == kind).then_some((off as usize, len as usize))
    })
}

/// Loads a copy of `bytes` with `value` written at `at` and the checksum recomputed.
pub fn patched(bytes: &[u8], at: usize, value: &[u8]) -> Result<(), Error> {
    let mut b = bytes.to_vec();
    b[at..at + value.len()].copy_from_slice(value);
    let crc = format::file_checksum(&b).to_le_bytes();
    b[16..20].copy_from_slice(&crc);
    let a = AlignedBytes::copy_from(&b);
    Model::from_bytes(a.as_slice()).map(|_| ())
}

/// Asserts that each patch `(at, value, what)` of `file` is an `Error::Invalid` naming `what`.
pub fn assert_invalid_patches<const N: usize>(file: &[u8], patches: [(usize, Vec<u8>, &str); N]) {
    for (at, value, what) in patches {
        match patched(file, at, &value) {
            Err(Error::Invalid { what: w }) => assert!(w.contains(what), "{w} vs {what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// `x · 0 + other` with the shape of `x` ([B, 2]): an output that depends on `x`'s batch but
/// shows only `other` (a constant, or the time input).
pub fn zero_plus(m: &mut ModelBuilder, x: u32, other: u32) -> u32 {
    let zero = m.constant(&[f(1)], vec![0.0]);
    let xz = m.node(Op::Binary(BinaryOp::Mul), &[x, zero], &[B, f(2)]);
    m.node(Op::Binary(BinaryOp::Add), &[xz, other], &[B, f(2)])
}
