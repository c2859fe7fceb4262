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
/// The decoded samples of a latent model (a pipeline with a decoder; empty otherwise).
pub static DECODED: Static<[f32; DECODED_LEN]> = Static(UnsafeCell::new([0.0; DECODED_LEN]));

/// The buffers of one run, handed out once by [`buffers`].
pub struct Buffers {
    /// The arena.
    pub arena: &'static mut [u8],
    /// The state, filled with the embedded noise.
    pub x: &'static mut [f32; STATE_LEN],
    /// The labels.
    pub labels: &'static [i64],
    /// The decoded samples (empty without a decoder).
    pub decoded: &'static mut [f32; DECODED_LEN],
}

/// The arena, the state filled with the embedded noise, the labels and the decoder output.
///
/// Call once (from `main`): the returned references are the only ones ever made to
/// [`ARENA`], [`STATE`], [`LABELS`] and [`DECODED`].
pub fn buffers() -> Buffers {
    // SAFETY: called once from `main` (single core, no interrupt uses these), so these are
    // the only references to the statics.
    let (arena, x, labels, decoded) = unsafe {
        (
            &mut (*ARENA.0.get()).0,
            &mut *STATE.0.get(),
            &mut *LABELS.0.get(),
            &mut *DECODED.0.get(),
        )
    };
    for (v, b) in x.iter_mut().zip(NOISE.chunks_exact(4)) {
        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    for (v, b) in labels.iter_mut().zip(LABELS_RAW.chunks_exact(8)) {
        *v = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    }
    Buffers {
        arena,
        x,
        labels,
        decoded,
    }
}

/// Samples `x` in place, conditioned on `labels` when the firmware embeds them. A plain
/// model links only the op kernels and the solver of the embedded model and method
/// ([`Selected`], written by build.rs); a multi-network file ([`PIPELINE`]) samples with
/// `flowrt::pipeline` (every stage linked) and writes its decoder's rows into `decoded`.
pub fn sample_embedded(
    model: &flowrt::Model<'_>,
    method: flowrt::solver::Method,
    grid: &dyn flowrt::grid::TimeGrid,
    x: &mut [f32],
    labels: &[i64],
    decoded: Option<&mut [f32]>,
    arena: &mut [u8],
) -> Result<(), flowrt::Error> {
    let cond = flowrt::field::Conditioning {
        label: (!labels.is_empty()).then_some(labels),
        ..Default::default()
    };
    if PIPELINE {
        let p = model.pipeline().ok_or(flowrt::Error::Invalid {
            what: "build.rs saw a pipeline section that the model lacks",
        })?;
        flowrt::pipeline::sample_pipeline_cond(&p, method, grid, x, &cond, decoded, arena)
    } else {
        flowrt::sampler::sample_cond_with::<Selected>(model, method, grid, x, &cond, arena)
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
    b: &mut Buffers,
    paint_stack: fn() -> (usize, usize),
    counter: fn() -> u64,
    fail: fn(&str, flowrt::Error) -> !,
) -> Measured {
    let decoded = HAS_DECODER.then_some(&mut b.decoded[..]);
    let (x, labels, arena) = (&mut b.x[..], b.labels, &mut *b.arena);
    // Validates only the op kinds and weight types `Selected` links (a model using others
    // is refused with `NotLinked`), so the firmware contains no other op's checks.
    let model = flowrt::Model::from_bytes_with::<Selected>(MODEL)
        .unwrap_or_else(|e| fail("loading the model", e));
    let method = flowrt::solver::Method::EVERY[METHOD_INDEX];
    // `GridSpec::Uniform.build(STEPS, axis)`, without linking the other schedules.
    let axis = model.time_convention().axis;
    let grid = flowrt::grid::Uniform::new(STEPS, axis.noise_end(), axis.data_end())
        .unwrap_or_else(|e| fail("grid", e));

    let (lo, hi) = paint_stack();
    let c0 = counter();
    sample_embedded(&model, method, &grid, x, labels, decoded, arena)
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

/// Line output without `core::fmt` (whose integer and padding machinery would be most of a
/// small firmware's code): text is collected in a buffer and handed to `sink` per line.
/// Not generic and not inlined, so each call costs a few instructions of flash.
pub struct Text<'s> {
    buf: [u8; 160],
    len: usize,
    sink: &'s mut dyn FnMut(&[u8]),
}

impl<'s> Text<'s> {
    /// Output through `sink` (the semihosting console, a UART).
    pub fn new(sink: &'s mut dyn FnMut(&[u8])) -> Self {
        Text {
            buf: [0; 160],
            len: 0,
            sink,
        }
    }

    /// Appends `s` (flushing first when the buffer is full).
    #[inline(never)]
    pub fn str(&mut self, s: &str) -> &mut Self {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        self
    }

    /// Appends `v` in decimal.
    ///
    /// Divides 16-bit limbs by 10 in 32-bit arithmetic: a 64-bit division would link the
    /// runtime's `u64` division routine (most of a kilobyte on a 32-bit core).
    #[inline(never)]
    pub fn dec(&mut self, v: u64) -> &mut Self {
        let mut limbs = [48, 32, 16, 0].map(|shift| (v >> shift) as u32 & 0xFFFF);
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        while i > 0 {
            let mut rem = 0u32;
            for limb in limbs.iter_mut() {
                let cur = (rem << 16) | *limb;
                *limb = cur / 10;
                rem = cur % 10;
            }
            i -= 1;
            digits[i] = b'0' + rem as u8;
            if limbs == [0; 4] {
                break;
            }
        }
        self.str(core::str::from_utf8(&digits[i..]).unwrap_or("?"))
    }

    /// Appends `v` as 8 lowercase hex digits (`{:08x}`).
    #[inline(never)]
    pub fn hex8(&mut self, v: u32) -> &mut Self {
        let mut digits = [0u8; 8];
        for (k, d) in digits.iter_mut().enumerate() {
            let nibble = (v >> (28 - 4 * k)) & 0xF;
            *d = b"0123456789abcdef"[nibble as usize];
        }
        self.str(core::str::from_utf8(&digits).unwrap_or("?"))
    }

    /// Ends the line and writes it out.
    #[inline(never)]
    pub fn line(&mut self) -> &mut Self {
        self.str("\n");
        self.flush();
        self
    }

    fn flush(&mut self) {
        (self.sink)(&self.buf[..self.len]);
        self.len = 0;
    }
}

/// What the firmware prints: the decoded samples with a decoder, else the state.
pub fn samples(b: &Buffers) -> &[f32] {
    if HAS_DECODER {
        &b.decoded[..]
    } else {
        &b.x[..]
    }
}

/// Prints the samples as `targets/run-qemu.sh` reads them: `FLOWRT-SHAPE d0,d1,...`, then
/// `FLOWRT-OUT` lines of 8 hex f32 words.
pub fn print_samples(t: &mut Text<'_>, x: &[f32]) {
    t.str("FLOWRT-SHAPE ").str(SHAPE).line();
    for chunk in x.chunks(8) {
        t.str("FLOWRT-OUT");
        for v in chunk {
            t.str(" ").hex8(v.to_bits());
        }
        t.line();
    }
}

/// The common part of the `FLOWRT-STATS` line (the caller appends its counters and ends the
/// line).
pub fn print_stats(t: &mut Text<'_>, stack_bytes: usize) {
    t.str("FLOWRT-STATS batch=").dec(BATCH as u64);
    t.str(" dim=").dec(DIM as u64);
    t.str(" method=").str(METHOD);
    t.str(" steps=").dec(STEPS as u64);
    t.str(" evals=").dec((STEPS * STAGES) as u64);
    t.str(" arena_bytes=").dec(ARENA_BYTES as u64);
    t.str(" graph_arena_bytes=").dec(GRAPH_ARENA_BYTES as u64);
    t.str(" stack_bytes=").dec(stack_bytes as u64);
    t.str(" macs_per_row=").dec(MACS_PER_ROW as u64);
    t.str(" frt_bytes=").dec(FRT_BYTES as u64);
    t.str(" weight_bytes=").dec(WEIGHT_BYTES as u64);
}

/// `FLOWRT-ERROR {what}: {error}`, the error's text as its `Display` words it for the common
/// cases (the full error also goes to the defmt log where there is one).
pub fn print_error(t: &mut Text<'_>, what: &str, e: &flowrt::Error) {
    use flowrt::Error as E;
    t.str("FLOWRT-ERROR ").str(what).str(": ");
    match *e {
        E::NotLinked { what } => {
            t.str(what).str(" is not linked into this firmware (it was built for another model or method: rebuild it)")
        }
        E::Invalid { what } => t.str("invalid .frt file: ").str(what),
        E::InvalidNode { node, what } => t.str("invalid node #").dec(node.into()).str(": ").str(what),
        E::InvalidTensor { tensor, what } => {
            t.str("invalid tensor #").dec(tensor.into()).str(": ").str(what)
        }
        E::ShapeMismatch {
            what,
            expected,
            found,
        } => t
            .str("wrong size for ")
            .str(what)
            .str(": expected ")
            .dec(expected as u64)
            .str(", got ")
            .dec(found as u64),
        E::ArenaTooSmall { needed, given } => t
            .str("arena too small: need ")
            .dec(needed as u64)
            .str(" bytes, got ")
            .dec(given as u64),
        E::BadSolverConfig { what } => t.str("bad solver configuration: ").str(what),
        E::BadArgument { what } => t.str("bad argument: ").str(what),
        E::NonFiniteInput { what } | E::NonFiniteOutput { what } => {
            t.str(what).str(" contains NaN or infinity")
        }
        _ => t.str("see the error's Display text (flowrt::Error)"),
    };
    t.line();
}
