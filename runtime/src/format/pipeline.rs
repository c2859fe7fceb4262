//! The `PIPELINE` section's stage records (multi-network files; see [`crate::pipeline`]).

/// Most stages a pipeline holds.
pub const MAX_STAGES: usize = 8;
/// Length of one stage record.
pub const STAGE_RECORD_LEN: usize = 32;

/// What a pipeline stage does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StageKind {
    /// A velocity net for steps starting in `[min(a, b), max(a, b)]` (model time).
    Block {
        /// One end of the interval.
        a: f32,
        /// The other end.
        b: f32,
    },
    /// A velocity net for steps `n` with `from ≤ n/N < to`.
    Refiner {
        /// Lower end (fraction of the steps).
        from: f32,
        /// Upper end, exclusive.
        to: f32,
    },
    /// Applied to the final state.
    Decoder,
}

impl StageKind {
    /// Code in the stage record (0 block, 1 refiner, 2 decoder).
    pub fn code(&self) -> u16 {
        match self {
            StageKind::Block { .. } => 0,
            StageKind::Refiner { .. } => 1,
            StageKind::Decoder => 2,
        }
    }

    /// The two parameters as stored.
    pub fn params(&self) -> (f32, f32) {
        match *self {
            StageKind::Block { a, b } => (a, b),
            StageKind::Refiner { from, to } => (from, to),
            StageKind::Decoder => (0.0, 0.0),
        }
    }
}
