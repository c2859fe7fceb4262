//! The full-integer kernels' blocked path: the Cortex-M4/M7 one (ARMv7E-M, whose DSP
//! extension has `SMLAD`, two 16 × 16-bit multiply-accumulates in one instruction, and
//! `SXTB16`, two int8 → int16 sign extensions in one), compiled on other targets only for
//! the unit tests, which run it with a portable `SMLAD`.
//!
//! The product `out[rows, n] = q[rows, K] · w[n, K]ᵀ` (Dense rows, or a Conv's output
//! positions with their receptive fields as rows) runs in groups of up to [`GROUP`] rows,
//! tiles of [`TILE`] columns and chunks of [`KC`] (Dense) or [`KC_CONV`] (Conv) reduction
//! values. Per chunk, the group's rows are quantized once into int16 pairs ([`pack_rows`];
//! Conv gathers them from a [`BAND`]-byte band of input rows quantized once), each column
//! pair's int8 weights are widened once for the whole group ([`widen_rows`]), and [`kernel`]
//! accumulates 2 rows × 2 columns at a time: per 4 reduction values, 2 loads (`LDM`) and 8
//! `SMLAD`s for 16 multiply-accumulates (an assembly function using all 14 core registers,
//! 4 quads unrolled; `targets/cortex-m4/examples/kernels.rs` checks it on the core). A group
//! of one row (batch 1, or the last row of an odd count) uses each weight once, so
//! [`row_kernel`] reads the int8 weights as they are instead: per quad and column pair, 2
//! weight loads, 2 act loads, 4 `SXTB16` and 4 `SMLAD`s for 8 multiply-accumulates (14
//! instructions with the loop; widening into the buffer first cost about 21). The
//! buffers live on the stack: 6.5 KB for Dense, 6.5 KB for Conv (the edge model's stack
//! stays within the 16 KiB reserve of `memory-2m-256k.x`, tests/tests/qemu.rs).
//!
//! Both operands use one layout, per quad of reduction values `k .. k + 4` of a row pair
//! (or column pair) `a`, `b`: the words `[a(k, k+2), b(k, k+2), a(k+1, k+3), b(k+1, k+3)]`,
//! each the low value in its low half — what `SXTB16` makes of a little-endian int8 word
//! (bytes 0 and 2) and of it rotated by 8 (bytes 1 and 3). Values past the reduction, and a
//! missing row or column of an odd count, are zeros. Integer sums are exact, so this order
//! gives the sum of the definition bit for bit (the module docs of `int8.rs`).

use super::conv::{ConvGeometry, Window};
use super::int8::{scaled_code, InputCodes};
use super::lut::quantize_fast;
use super::weights::{load_bias, Int8Weights, Weights};
use super::SIZE_ERR;
use crate::Error;

/// Rows (Dense rows, Conv output positions) per group: a column pair's weights are widened
/// once per group.
pub(super) const GROUP: usize = 16;
/// Reduction values per chunk (a multiple of 4): Dense's.
pub(super) const KC: usize = 128;
/// Conv's chunk: smaller, so that its act buffer and its band of input rows together stay
/// within the stack Dense uses (the firmware's stack reserve, tests/tests/qemu.rs).
pub(super) const KC_CONV: usize = 64;
/// Output columns accumulated per tile (even).
pub(super) const TILE: usize = 32;
/// Bytes of a Conv's quantized band of input rows (a power of two).
pub(super) const BAND: usize = 2048;

const PAIRS: usize = GROUP / 2;
const COL_PAIRS: usize = TILE / 2;

/// Two int16 values in one word, `lo` in the low half (`PKHBT`).
#[inline(always)]
fn pair(lo: i32, hi: i32) -> u32 {
    (lo as u32 & 0xFFFF) | ((hi as u32) << 16)
}

/// `(b0, b2)` and `(b1, b3)` of the int8 bytes `b0..b3` of a little-endian word, sign-extended
/// to int16 pairs (`SXTB16` and `SXTB16` with `ROR #8`).
#[inline(always)]
fn widen(word: u32) -> (u32, u32) {
    #[cfg(flowrt_dsp)]
    {
        let (even, odd): (u32, u32);
        // SAFETY: two register-only instructions of the ARMv7E-M DSP extension (this cfg is
        // set for thumbv7em targets only, build.rs), no memory, stack or flags touched.
        unsafe {
            core::arch::asm!(
                "sxtb16 {e}, {w}",
                "sxtb16 {o}, {w}, ror #8",
                w = in(reg) word,
                e = out(reg) even,
                o = lateout(reg) odd,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        (even, odd)
    }
    #[cfg(not(flowrt_dsp))]
    {
        let b = word.to_le_bytes();
        let s = |i: usize| i32::from(b.get(i).copied().unwrap_or(0) as i8);
        (pair(s(0), s(2)), pair(s(1), s(3)))
    }
}

/// The little-endian word of 4 int8 values.
#[inline(always)]
fn word_of(v: &[i8]) -> u32 {
    match *v {
        [a, b, c, d] => u32::from_le_bytes([a as u8, b as u8, c as u8, d as u8]),
        _ => 0,
    }
}

/// Rows `a` and `b` (`None`: zeros) of int8 values, of one length, widened into the packed
/// layout (module docs): `4 · ⌈len / 4⌉` words of `out`, zeros past `len`.
pub(super) fn widen_rows(a: &[i8], b: Option<&[i8]>, out: &mut [u32]) {
    let full = a.len() / 4;
    let (head, tail) = out.split_at_mut((4 * full).min(out.len()));
    match b {
        Some(b) => widen_pairs(a, b, head),
        None => {
            for (o, qa) in head.chunks_exact_mut(4).zip(a.chunks_exact(4)) {
                let (ae, ao) = widen(word_of(qa));
                o.copy_from_slice(&[ae, 0, ao, 0]);
            }
        }
    }
    let rest = a.len() % 4;
    if rest > 0 {
        let mut qa = [0i8; 4];
        let mut qb = [0i8; 4];
        for (d, s) in qa.iter_mut().zip(a.get(4 * full..).unwrap_or(&[])) {
            *d = *s;
        }
        if let Some(b) = b {
            for (d, s) in qb.iter_mut().zip(b.get(4 * full..).unwrap_or(&[])) {
                *d = *s;
            }
        }
        let (ae, ao) = widen(word_of(&qa));
        let (be, bo) = widen(word_of(&qb));
        if let Some(o) = tail.get_mut(..4) {
            o.copy_from_slice(&[ae, be, ao, bo]);
        }
    }
}

/// The full quads of rows `a` and `b` widened into `out` (4 words per quad, as many quads as
/// all three hold).
fn widen_pairs(a: &[i8], b: &[i8], out: &mut [u32]) {
    let quads = (a.len() / 4).min(b.len() / 4).min(out.len() / 4);
    #[cfg(flowrt_dsp)]
    if quads > 0 {
        let end = out.as_mut_ptr().wrapping_add(4 * quads);
        // SAFETY: `quads` quads fit all three slices (just computed): the loop reads
        // `4 · quads` bytes of `a` and of `b` (word loads at any alignment, which ARMv7-M
        // allows for LDR) and writes `4 · quads` words of `out` (word-aligned), stopping
        // when the output pointer reaches `end`. SXTB16 is an ARMv7E-M instruction
        // (thumbv7em only, build.rs); only the declared registers are written.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldr {wa}, [{pa}], #4",
                "ldr {wb}, [{pb}], #4",
                "sxtb16 r8, {wa}",
                "sxtb16 r9, {wb}",
                "sxtb16 r10, {wa}, ror #8",
                "sxtb16 r11, {wb}, ror #8",
                "stm {po}!, {{r8, r9, r10, r11}}",
                "cmp {po}, {end}",
                "bne 2b",
                pa = inout(reg) a.as_ptr() => _,
                pb = inout(reg) b.as_ptr() => _,
                po = inout(reg) out.as_mut_ptr() => _,
                end = in(reg) end,
                wa = out(reg) _,
                wb = out(reg) _,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                out("r11") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(flowrt_dsp))]
    for ((o, qa), qb) in out
        .chunks_exact_mut(4)
        .zip(a.chunks_exact(4))
        .zip(b.chunks_exact(4))
        .take(quads)
    {
        let (ae, ao) = widen(word_of(qa));
        let (be, bo) = widen(word_of(qb));
        o.copy_from_slice(&[ae, be, ao, bo]);
    }
}

/// Quantizes rows `xa` and `xb` (`None`: zeros) of one length by `code` (`code(x) = (y,
/// q)`: the int8 code `q` and `x` scaled, `y`, [`scaled_code`]) into the packed
/// layout (`4 · ⌈len / 4⌉` words of `out`, zeros past `len`); returns whether each had a NaN.
///
/// A NaN quantizes to 0 like in `int8::quantize_one`; it is found by the running f32 sum of
/// the scaled values (one addition per value), which is not finite when one is NaN (or
/// infinite: then the row is scanned for a NaN).
#[inline(always)]
pub(super) fn pack_rows(
    code: impl Fn(f32) -> (f32, i32),
    xa: &[f32],
    xb: Option<&[f32]>,
    out: &mut [u32],
) -> [bool; 2] {
    let full = xa.len() / 4;
    let (head, tail) = out.split_at_mut((4 * full).min(out.len()));
    let (mut sa, mut sb) = (0f32, 0f32);
    let q = |v: f32, s: &mut f32| {
        let (y, c) = code(v);
        *s += y;
        c
    };
    let quads = head.chunks_exact_mut(4);
    match xb {
        Some(xb) => {
            for ((o, a), b) in quads.zip(xa.chunks_exact(4)).zip(xb.chunks_exact(4)) {
                if let ([a0, a1, a2, a3], [b0, b1, b2, b3]) = (a, b) {
                    let (a0, a1, a2, a3) = (
                        q(*a0, &mut sa),
                        q(*a1, &mut sa),
                        q(*a2, &mut sa),
                        q(*a3, &mut sa),
                    );
                    let (b0, b1, b2, b3) = (
                        q(*b0, &mut sb),
                        q(*b1, &mut sb),
                        q(*b2, &mut sb),
                        q(*b3, &mut sb),
                    );
                    o.copy_from_slice(&[pair(a0, a2), pair(b0, b2), pair(a1, a3), pair(b1, b3)]);
                }
            }
        }
        None => {
            for (o, a) in quads.zip(xa.chunks_exact(4)) {
                if let [a0, a1, a2, a3] = a {
                    let (a0, a1, a2, a3) = (
                        q(*a0, &mut sa),
                        q(*a1, &mut sa),
                        q(*a2, &mut sa),
                        q(*a3, &mut sa),
                    );
                    o.copy_from_slice(&[pair(a0, a2), 0, pair(a1, a3), 0]);
                }
            }
        }
    }
    let rest = xa.len() % 4;
    if rest > 0 {
        let mut qa = [0i32; 4];
        let mut qb = [0i32; 4];
        for (d, v) in qa.iter_mut().zip(xa.get(4 * full..).unwrap_or(&[])) {
            *d = q(*v, &mut sa);
        }
        if let Some(xb) = xb {
            for (d, v) in qb.iter_mut().zip(xb.get(4 * full..).unwrap_or(&[])) {
                *d = q(*v, &mut sb);
            }
        }
        if let (Some(o), [a0, a1, a2, a3], [b0, b1, b2, b3]) = (tail.get_mut(..4), qa, qb) {
            o.copy_from_slice(&[pair(a0, a2), pair(b0, b2), pair(a1, a3), pair(b1, b3)]);
        }
    }
    let has_nan = |s: f32, x: &[f32]| !s.is_finite() && x.iter().any(|v| v.is_nan());
    [has_nan(sa, xa), xb.is_some_and(|xb| has_nan(sb, xb))]
}

/// `SMLAD`: both int16 halves of `a` and `b` multiplied, the two products added to `s`.
#[inline(always)]
fn smlad(a: u32, b: u32, s: i32) -> i32 {
    #[cfg(flowrt_dsp)]
    {
        let r: i32;
        // SAFETY: one register-only instruction of the ARMv7E-M DSP extension (this cfg is
        // set for thumbv7em targets only, build.rs); the Q flag it may set is never read.
        unsafe {
            core::arch::asm!(
                "smlad {r}, {a}, {b}, {s}",
                r = lateout(reg) r,
                a = in(reg) a,
                b = in(reg) b,
                s = in(reg) s,
                options(pure, nomem, nostack),
            );
        }
        r
    }
    #[cfg(not(flowrt_dsp))]
    {
        let lo = i32::from(a as u16 as i16) * i32::from(b as u16 as i16);
        let hi = i32::from((a >> 16) as u16 as i16) * i32::from((b >> 16) as u16 as i16);
        s.wrapping_add(lo).wrapping_add(hi)
    }
}

/// One row (a group of one: batch 1) against one column pair, reading the int8 weights
/// rows `wa`, `wb` (`None`: zeros) of `kl` values as they are: `acc[0]`, `acc[1] +=` the
/// row's sums. The row is `act`'s first row of a row pair in the packed layout (module
/// docs), `⌈kl / 4⌉` quads. Each weight is used once, so widening it into the buffer first
/// (what [`kernel`] needs for its 2 × 2 blocks) would only add a store and a load: here
/// each quad is one load and one `SXTB16` pair per column, two `SMLAD`s per column.
pub(super) fn row_kernel(act: &[u32], wa: &[i8], wb: Option<&[i8]>, acc: &mut [i32; 4]) {
    let [mut s0, mut s1, _, _] = *acc;
    let mut quads = act.chunks_exact(4);
    let mut ca = wa.chunks_exact(4);
    match wb {
        Some(wb) => {
            let mut cb = wb.chunks_exact(4);
            #[cfg(flowrt_dsp)]
            {
                let n = ca.len().min(cb.len()).min(quads.len());
                if n > 0 {
                    // SAFETY: `n` full quads fit all three slices (just computed): the loop
                    // reads `4 · n` bytes of `wa` and of `wb` (word loads at any alignment,
                    // which ARMv7-M allows for LDR) and words 0 and 2 of `n` quads of `act`
                    // (word-aligned), and writes only the declared registers. SXTB16 and
                    // SMLAD are ARMv7E-M instructions (thumbv7em only, build.rs).
                    unsafe {
                        core::arch::asm!(
                            "2:",
                            "ldr {x}, [{pa}], #4",
                            "ldr {y}, [{pb}], #4",
                            "ldr {re}, [{pq}], #8",
                            "ldr {ro}, [{pq}], #8",
                            "sxtb16 {t}, {x}",
                            "smlad {s0}, {re}, {t}, {s0}",
                            "sxtb16 {t}, {x}, ror #8",
                            "smlad {s0}, {ro}, {t}, {s0}",
                            "sxtb16 {t}, {y}",
                            "smlad {s1}, {re}, {t}, {s1}",
                            "sxtb16 {t}, {y}, ror #8",
                            "smlad {s1}, {ro}, {t}, {s1}",
                            "subs {n}, {n}, #1",
                            "bne 2b",
                            pa = inout(reg) wa.as_ptr() => _,
                            pb = inout(reg) wb.as_ptr() => _,
                            pq = inout(reg) act.as_ptr() => _,
                            n = inout(reg) n => _,
                            s0 = inout(reg) s0,
                            s1 = inout(reg) s1,
                            x = out(reg) _,
                            y = out(reg) _,
                            re = out(reg) _,
                            ro = out(reg) _,
                            t = out(reg) _,
                            options(nostack, readonly),
                        );
                    }
                    // Past the quads done.
                    ca.nth(n - 1);
                    cb.nth(n - 1);
                    quads.nth(n - 1);
                }
            }
            // The weight rows first: they end first (full quads only), and `zip` stops
            // there without taking the last, partial quad of `quads`. (The assembly above
            // did them on ARMv7E-M.)
            #[cfg(not(flowrt_dsp))]
            for ((a, b), q) in (&mut ca).zip(&mut cb).zip(&mut quads) {
                if let [re, _, ro, _] = q {
                    let (ae, ao) = widen(word_of(a));
                    let (be, bo) = widen(word_of(b));
                    s0 = smlad(*ro, ao, smlad(*re, ae, s0));
                    s1 = smlad(*ro, bo, smlad(*re, be, s1));
                }
            }
            tail_quad(
                &mut quads,
                ca.remainder(),
                Some(cb.remainder()),
                &mut s0,
                &mut s1,
            );
        }
        None => {
            for (a, q) in (&mut ca).zip(&mut quads) {
                if let [re, _, ro, _] = q {
                    let (ae, ao) = widen(word_of(a));
                    s0 = smlad(*ro, ao, smlad(*re, ae, s0));
                }
            }
            tail_quad(&mut quads, ca.remainder(), None, &mut s0, &mut s1);
        }
    }
    acc[0] = s0;
    acc[1] = s1;
}

/// [`row_kernel`]'s last quad when the weight rows end part-way through it (zeros past).
#[inline(never)]
fn tail_quad(
    quads: &mut core::slice::ChunksExact<'_, u32>,
    a: &[i8],
    b: Option<&[i8]>,
    s0: &mut i32,
    s1: &mut i32,
) {
    if a.is_empty() {
        return;
    }
    let Some([re, _, ro, _]) = quads.next() else {
        return;
    };
    let word = |v: &[i8]| {
        let mut q = [0i8; 4];
        for (d, x) in q.iter_mut().zip(v) {
            *d = *x;
        }
        widen(word_of(&q))
    };
    let (ae, ao) = word(a);
    *s0 = smlad(*ro, ao, smlad(*re, ae, *s0));
    if let Some(b) = b {
        let (be, bo) = word(b);
        *s1 = smlad(*ro, bo, smlad(*re, be, *s1));
    }
}

/// `acc[p · COL_PAIRS] += ` the 2 × 2 block of row pair `p < pairs` against one column pair,
/// over `quads` quads: row pair `p` is the words `act[4·quads·p ..][.. 4·quads]`, the column
/// pair `w[.. 4·quads]` (module docs), a block `[row 0 col 0, row 0 col 1, row 1 col 0, row 1
/// col 1]`. Does nothing when a slice is shorter than that.
pub(super) fn kernel(act: &[u32], w: &[u32], quads: usize, pairs: usize, acc: &mut [[i32; 4]]) {
    let words = 4 * quads;
    if pairs == 0 || quads == 0 {
        return;
    }
    let (Some(act), Some(w), Some(acc)) = (
        act.get(..pairs * words),
        w.get(..words),
        acc.get_mut(..(pairs - 1) * COL_PAIRS + 1),
    ) else {
        return;
    };
    #[cfg(flowrt_dsp)]
    {
        kernel_dsp(act, w, quads, acc);
    }
    #[cfg(not(flowrt_dsp))]
    {
        for (s, a) in acc
            .iter_mut()
            .step_by(COL_PAIRS)
            .zip(act.chunks_exact(words))
        {
            let [mut s00, mut s01, mut s10, mut s11] = *s;
            for (qa, qw) in a.chunks_exact(4).zip(w.chunks_exact(4)) {
                if let ([r0e, r1e, r0o, r1o], [c0e, c1e, c0o, c1o]) = (qa, qw) {
                    s00 = smlad(*r0o, *c0o, smlad(*r0e, *c0e, s00));
                    s01 = smlad(*r0o, *c1o, smlad(*r0e, *c1e, s01));
                    s10 = smlad(*r1o, *c0o, smlad(*r1e, *c0e, s10));
                    s11 = smlad(*r1o, *c1o, smlad(*r1e, *c1e, s11));
                }
            }
            *s = [s00, s01, s10, s11];
        }
    }
}

/// Quads per pass of [`kernel_dsp`]'s unrolled body.
#[cfg(flowrt_dsp)]
const UNROLL: usize = 4;
/// Bytes of one quad of the unrolled body: two 32-bit `LDM.W` and eight `SMLAD`.
#[cfg(flowrt_dsp)]
const QUAD_BYTES: usize = 40;

/// One quad of `flowrt_q8_pairs`: the row pair's 4 words into r4–r7 (row 0 and 1 of values
/// k, k+2, then of k+1, k+3), the column pair's into r8–r11 (the same for columns 0 and 1),
/// and the 8 `SMLAD`s into r2 (row 0 col 0), r3 (row 0 col 1), r12 (row 1 col 0), lr (row 1
/// col 1). Exactly [`QUAD_BYTES`] long (the `.w` forms: the entry point is computed).
#[cfg(flowrt_dsp)]
macro_rules! quad {
    () => {
        concat!(
            "ldmia.w r0!, {{r4, r5, r6, r7}}\n",
            "ldmia.w r1!, {{r8, r9, r10, r11}}\n",
            "smlad r2, r4, r8, r2\n",
            "smlad r3, r4, r9, r3\n",
            "smlad r12, r5, r8, r12\n",
            "smlad lr, r5, r9, lr\n",
            "smlad r2, r6, r10, r2\n",
            "smlad r3, r6, r11, r3\n",
            "smlad r12, r7, r10, r12\n",
            "smlad lr, r7, r11, lr\n",
        )
    };
}

// `flowrt_q8_pairs(act, w, quads, acc, pairs)` (AAPCS; `pairs` on the stack): for each of
// `pairs` row pairs, the 2 × 2 block at `acc` (then `acc + 16 · COL_PAIRS` bytes, ...) plus
// the row pair's `quads` quads (its words follow the previous pair's in `act`) against the
// column pair's (`w`, the same for every pair). A function of its own, not inline assembly,
// so that it may use all 14 core registers (inline assembly may not name r6, r7): the row
// pair's quad loads in one `LDM` as the column pair's, 10 instructions per 16
// multiply-accumulates. The body is 4 quads unrolled (8 gave 1.32 instead of 1.34 M4F
// instructions per MAC on checker_fm int8+act8, for 160 more bytes: past 48 KiB of code);
// the first pass enters it part-way (computed branch) so that whole passes follow; `w`'s
// end closes the loop. Loop state on the stack: [sp] w, [sp, #4] entry (Thumb bit set),
// [sp, #8] acc, [sp, #12] pairs left, [sp, #16] w's end.
#[cfg(flowrt_dsp)]
core::arch::global_asm!(
    ".section .text.flowrt_q8_pairs,\"ax\",%progbits",
    ".global flowrt_q8_pairs",
    ".type flowrt_q8_pairs,%function",
    ".syntax unified",
    ".thumb",
    ".thumb_func",
    ".p2align 2",
    "flowrt_q8_pairs:",
    "push {{r4, r5, r6, r7, r8, r9, r10, r11, lr}}",
    "sub sp, #20",
    "ldr r4, [sp, #56]",
    "str r1, [sp]",
    "str r3, [sp, #8]",
    "str r4, [sp, #12]",
    "add.w r5, r1, r2, lsl #4",
    "str r5, [sp, #16]",
    // Entry: the body's start plus (UNROLL − first pass's quads) quads, the first pass
    // ((quads − 1) mod UNROLL) + 1 quads long.
    "subs r6, r2, #1",
    "and r6, r6, #{mask}",
    "rsb r6, r6, #{mask}",
    "movs r7, #{quad_bytes}",
    "mul r6, r6, r7",
    "adr.w r7, 3f",
    "add r6, r6, r7",
    "orr r6, r6, #1",
    "str r6, [sp, #4]",
    "2:",
    "ldr r4, [sp, #8]",
    "ldm r4, {{r2, r3, r12, lr}}",
    "ldr r1, [sp]",
    "ldr r4, [sp, #4]",
    "bx r4",
    ".p2align 2",
    "3:",
    quad!(),
    quad!(),
    quad!(),
    quad!(),
    "ldr r4, [sp, #16]",
    "cmp r1, r4",
    "bne 3b",
    "ldr r4, [sp, #8]",
    "stm r4, {{r2, r3, r12, lr}}",
    "add r4, r4, #{stride}",
    "str r4, [sp, #8]",
    "ldr r5, [sp, #12]",
    "subs r5, r5, #1",
    "str r5, [sp, #12]",
    "bne 2b",
    "add sp, #20",
    "pop {{r4, r5, r6, r7, r8, r9, r10, r11, pc}}",
    ".size flowrt_q8_pairs, . - flowrt_q8_pairs",
    mask = const UNROLL - 1,
    quad_bytes = const QUAD_BYTES,
    stride = const 16 * COL_PAIRS,
);

#[cfg(flowrt_dsp)]
extern "C" {
    fn flowrt_q8_pairs(act: *const u32, w: *const u32, quads: usize, acc: *mut i32, pairs: usize);
}

/// [`kernel`] on ARMv7E-M: `flowrt_q8_pairs` (the assembly above) over every row pair.
#[cfg(flowrt_dsp)]
#[inline(never)]
fn kernel_dsp(act: &[u32], w: &[u32], quads: usize, acc: &mut [[i32; 4]]) {
    let pairs = (acc.len() - 1) / COL_PAIRS + 1;
    // SAFETY: `kernel` checked `act.len() == pairs · 4 · quads`, `w.len() == 4 · quads`,
    // `acc.len() == (pairs − 1) · COL_PAIRS + 1`, `quads > 0` and `pairs > 0`. Per row pair
    // the function reads the `4 · quads` words of `w` from its start (passes of at most
    // UNROLL quads, the first entered part-way so that the passes end exactly at `w`'s
    // end) and the next `4 · quads` words of `act` (r0 advances through it once), and
    // reads and writes one `[i32; 4]` of `acc` per row pair, at blocks 0, COL_PAIRS, ...,
    // (pairs − 1) · COL_PAIRS. All loads and stores are word-aligned (u32 and i32 slices).
    // It follows the AAPCS (r4–r11 saved and restored, sp restored), SMLAD and LDM/STM are
    // ARMv7E-M instructions (thumbv7em only, build.rs). The sums cannot overflow (at most
    // 133,000 products of magnitude at most 127²).
    unsafe {
        flowrt_q8_pairs(
            act.as_ptr(),
            w.as_ptr(),
            quads,
            acc.as_mut_ptr().cast(),
            pairs,
        );
    }
}

/// The first row pair's `4 · quads` words of `act`.
#[inline(always)]
fn act_of(act: &[u32], quads: usize) -> Result<&[u32], Error> {
    act.get(..4 * quads).ok_or(SIZE_ERR)
}

/// The buffers of one [`gemm`] with chunks of `ACT / PAIRS` reduction values (on the stack:
/// 6.5 KB for Dense's, 4.5 KB for Conv's).
pub(super) struct Scratch<const ACT: usize> {
    act: [u32; ACT],
    w: [u32; KC],
    acc: [[i32; 4]; PAIRS * COL_PAIRS],
}

impl<const ACT: usize> Scratch<ACT> {
    pub(super) fn new() -> Scratch<ACT> {
        Scratch {
            act: [0; ACT],
            w: [0; KC],
            acc: [[0; 4]; PAIRS * COL_PAIRS],
        }
    }
}

/// `out[rows, n]` of the full-integer product, blocked (module docs), in groups of `group <=
/// GROUP` rows and chunks of `ACT / PAIRS` reduction values: `pack(r0, len, k0, kl, act,
/// nan)` quantizes reduction values `k0 .. k0 + kl` of rows `r0 .. r0 + len` (`len <=
/// group`) into the packed layout (`⌈len / 2⌉` row pairs of `4 · ⌈kl / 4⌉` words at the start
/// of `act`) and sets `nan[i]` for a row `r0 + i` with a NaN among them; column `j` reads
/// weight row `c0 + j` (`red` values), scale and bias `c0 + j`, and its value for row `r`
/// goes to `out[base + r · rs + j · cs]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm<const ACT: usize>(
    s: &mut Scratch<ACT>,
    group: usize,
    rows: usize,
    red: usize,
    n: usize,
    c0: usize,
    w: &Int8Weights<'_>,
    bias: Option<Weights<'_>>,
    act_scale: f32,
    mut pack: impl FnMut(
        usize,
        usize,
        usize,
        usize,
        &mut [u32],
        &mut [bool; GROUP],
    ) -> Result<(), Error>,
    out: &mut [f32],
    [base, rs, cs]: [usize; 3],
) -> Result<(), Error> {
    let kc = (ACT / PAIRS).min(KC) & !3;
    let group = group.clamp(1, GROUP);
    if kc == 0 {
        return Err(SIZE_ERR);
    }
    let single = red <= kc;
    let mut r0 = 0;
    while r0 < rows {
        let len = group.min(rows - r0);
        let pairs = len.div_ceil(2);
        let mut nan = [false; GROUP];
        let mut t0 = 0;
        while t0 < n {
            let tn = TILE.min(n - t0);
            let cpairs = tn.div_ceil(2);
            for p in 0..pairs {
                let used = s
                    .acc
                    .get_mut(p * COL_PAIRS..p * COL_PAIRS + cpairs)
                    .ok_or(SIZE_ERR)?;
                used.fill([0; 4]);
            }
            let mut k0 = 0;
            while k0 < red {
                let kl = kc.min(red - k0);
                let quads = kl.div_ceil(4);
                let act = s.act.get_mut(..pairs * 4 * quads).ok_or(SIZE_ERR)?;
                if !single || t0 == 0 {
                    pack(r0, len, k0, kl, act, &mut nan)?;
                }
                for cp in 0..cpairs {
                    let c = c0 + t0 + 2 * cp;
                    let wa = w
                        .values
                        .get(c * red + k0..c * red + k0 + kl)
                        .ok_or(SIZE_ERR)?;
                    let wb = if 2 * cp + 1 < tn {
                        Some(
                            w.values
                                .get((c + 1) * red + k0..(c + 1) * red + k0 + kl)
                                .ok_or(SIZE_ERR)?,
                        )
                    } else {
                        None
                    };
                    if len == 1 {
                        let acc = s.acc.get_mut(cp).ok_or(SIZE_ERR)?;
                        row_kernel(act_of(&s.act, quads)?, wa, wb, acc);
                        continue;
                    }
                    let wbuf = s.w.get_mut(..4 * quads).ok_or(SIZE_ERR)?;
                    widen_rows(wa, wb, wbuf);
                    let acc = s.acc.get_mut(cp..).ok_or(SIZE_ERR)?;
                    kernel(&s.act, &s.w, quads, pairs, acc);
                }
                k0 += kl;
            }
            let mut sc = [0f32; TILE];
            let mut b = [0f32; TILE];
            load_bias(bias, c0 + t0, b.get_mut(..tn).ok_or(SIZE_ERR)?).ok_or(SIZE_ERR)?;
            for (j, v) in sc.iter_mut().enumerate().take(tn) {
                *v = act_scale * w.scales.get(c0 + t0 + j).ok_or(SIZE_ERR)?;
            }
            for p in 0..pairs {
                // Row pair p's sums, column pair by column pair, rescaled into `out`.
                let blocks = s
                    .acc
                    .get(p * COL_PAIRS..p * COL_PAIRS + cpairs)
                    .ok_or(SIZE_ERR)?;
                for i in 0..2 {
                    let r = 2 * p + i;
                    if r >= len {
                        break;
                    }
                    let row_nan = nan.get(r).copied().unwrap_or(false);
                    let start = base + (r0 + r) * rs + t0 * cs;
                    let cols = blocks.iter().zip(sc.chunks_exact(2).zip(b.chunks_exact(2)));
                    // The two values of row `i` of a block, rescaled.
                    let pair_of = |blk: &[i32; 4], scp: &[f32], bp: &[f32]| -> [f32; 2] {
                        let (a0, a1) = match (i, *blk) {
                            (0, [x0, x1, _, _]) => (x0, x1),
                            (_, [_, _, x2, x3]) => (x2, x3),
                        };
                        match (scp, bp) {
                            ([s0, s1], [b0, b1]) if !row_nan => {
                                [(a0 as f32) * s0 + b0, (a1 as f32) * s1 + b1]
                            }
                            _ => [f32::NAN; 2],
                        }
                    };
                    if cs == 1 {
                        let dst = out.get_mut(start..start + tn).ok_or(SIZE_ERR)?;
                        let (even, odd) = dst.split_at_mut(tn & !1);
                        let mut cols = cols;
                        for (d, (blk, (scp, bp))) in even.chunks_exact_mut(2).zip(&mut cols) {
                            d.copy_from_slice(&pair_of(blk, scp, bp));
                        }
                        if let (Some(d), Some((blk, (scp, bp)))) = (odd.first_mut(), cols.next()) {
                            *d = pair_of(blk, scp, bp)[0];
                        }
                    } else {
                        for (cp, (blk, (scp, bp))) in cols.enumerate() {
                            let v = pair_of(blk, scp, bp);
                            for (odd, x) in v.iter().enumerate() {
                                let j = 2 * cp + odd;
                                if j < tn {
                                    *out.get_mut(start + j * cs).ok_or(SIZE_ERR)? = *x;
                                }
                            }
                        }
                    }
                }
            }
            t0 += tn;
        }
        r0 += len;
    }
    Ok(())
}

/// Full-integer Dense through [`gemm`]: `a [rows, k]`, `out [rows, n]`, sizes checked by
/// the caller.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
pub(super) fn dense(
    a: &[f32],
    w: &Int8Weights<'_>,
    bias: Option<Weights<'_>>,
    act_scale: f32,
    codes: InputCodes,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    let rows = out.len() / n;
    let mut s = Scratch::<{ PAIRS * KC }>::new();
    let pack =
        |r0: usize, len: usize, k0: usize, kl: usize, act: &mut [u32], nan: &mut [bool; GROUP]| {
            let quads = kl.div_ceil(4);
            for (p, dst) in act.chunks_exact_mut(4 * quads).enumerate() {
                let ra = r0 + 2 * p;
                let row = |r: usize| a.get(r * k + k0..r * k + k0 + kl).ok_or(SIZE_ERR);
                let xa = row(ra)?;
                let xb = if 2 * p + 1 < len {
                    Some(row(ra + 1)?)
                } else {
                    None
                };
                let [na, nb] = match codes {
                    InputCodes::Scaled(inv) => pack_rows(|v| scaled_code(v, inv), xa, xb, dst),
                    InputCodes::Stored => {
                        // The rows' bytes: `kl` codes from `k0`, the NaN flag at `k`.
                        let whole = |r: usize| a.get(r * k..r * k + k).ok_or(SIZE_ERR);
                        let codes = |r: usize| -> Result<(&[i8], bool), Error> {
                            let b: &[i8] = bytemuck::cast_slice(whole(r)?);
                            let c = b.get(k0..k0 + kl).ok_or(SIZE_ERR)?;
                            Ok((c, b.get(k).copied().ok_or(SIZE_ERR)? != 0))
                        };
                        let (ca, na) = codes(ra)?;
                        let b = if xb.is_some() {
                            Some(codes(ra + 1)?)
                        } else {
                            None
                        };
                        widen_rows(ca, b.map(|(c, _)| c), dst);
                        [na, b.is_some_and(|(_, f)| f)]
                    }
                };
                let flags = nan.get_mut(2 * p..(2 * p + 2).min(len)).ok_or(SIZE_ERR)?;
                for (f, v) in flags.iter_mut().zip([na, nb]) {
                    *f |= v;
                }
            }
            Ok(())
        };
    gemm(
        &mut s,
        GROUP,
        rows,
        k,
        n,
        0,
        w,
        bias,
        act_scale,
        pack,
        out,
        [0, n, 1],
    )
}

/// A Conv's input rows (padded coordinates) quantized once for several groups of output
/// positions: `cg` channels × `rows` × `wp` int8 values (zeros in the padding), rows
/// `y0 .. y0 + loaded` of the padded image.
struct Band {
    /// One byte past BAND, so that a halfword load at any masked index stays inside.
    q: [i8; BAND + 1],
    y0: usize,
    loaded: usize,
    /// Whether one of the loaded input values is NaN.
    nan: bool,
}

/// Full-integer Conv through [`gemm`], image by image and group by group: the output
/// positions are the rows, their receptive fields (reduction index `(ci · kh + ky) · kw +
/// kx`, the weights' order) gathered from a [`Band`] of quantized input rows; sizes checked
/// by the caller. Returns `false`, having done nothing, when one band of `cg` channels
/// cannot hold the rows a group of positions needs (the caller then runs the portable path).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
pub(super) fn conv(
    x: &[f32],
    geo: &ConvGeometry,
    w: &Int8Weights<'_>,
    bias: Option<Weights<'_>>,
    act_scale: f32,
    inv: f32,
    groups: usize,
    win: &Window,
    out: &mut [f32],
) -> Result<bool, Error> {
    let &ConvGeometry {
        n,
        h,
        wi,
        cg,
        kh,
        kw,
        m,
        oh,
        ow,
        ..
    } = geo;
    let (sh, dh, ph, pe_h) = win.get(0);
    let (sw, dw, pw, pe_w) = win.get(1);
    let wp = wi + pw + pe_w;
    let hp = h + ph + pe_h;
    let plane = cg * wp;
    // Rows of the padded image one band holds; the most positions per group (16, 8, 4, 2)
    // whose padded rows fit in it.
    let cap = BAND.checked_div(plane).unwrap_or(0);
    let fits = |g: usize| {
        // Output rows a group of g consecutive positions spans (groups start at multiples of
        // g), and the padded rows they read.
        let rows_out = if g.is_multiple_of(ow) || ow.is_multiple_of(g) {
            g.div_ceil(ow)
        } else {
            g.div_ceil(ow) + 1
        };
        let need = (rows_out - 1) * sh + (kh - 1) * dh + 1;
        cap >= need.min(hp)
    };
    let Some(group) = [GROUP, 8, 4, 2].into_iter().find(|g| fits(*g)) else {
        return Ok(false);
    };
    let red = cg * kh * kw;
    let mg = m / groups;
    let (plane_in, plane_out) = (h * wi, oh * ow);
    let mut s = Scratch::<{ PAIRS * KC_CONV }>::new();
    let mut band = Band {
        q: [0; BAND + 1],
        y0: 0,
        loaded: 0,
        nan: false,
    };
    let mut off = [0u16; KC_CONV];
    for b in 0..n {
        let (xb, ob) = geo.image(b, x, out)?;
        for g in 0..groups {
            let xg = xb
                .get(g * cg * plane_in..(g + 1) * cg * plane_in)
                .ok_or(SIZE_ERR)?;
            band.loaded = 0;
            let pack = |p0: usize,
                        len: usize,
                        k0: usize,
                        kl: usize,
                        act: &mut [u32],
                        nan: &mut [bool; GROUP]| {
                // The padded rows of positions p0 .. p0 + len.
                let (oy_a, oy_b) = (p0 / ow, (p0 + len - 1) / ow);
                let (ya, yb) = (oy_a * sh, oy_b * sh + (kh - 1) * dh + 1);
                if ya < band.y0 || yb > band.y0 + band.loaded {
                    load_band(
                        &mut band,
                        xg,
                        inv,
                        ya,
                        cap.min(hp - ya),
                        cap,
                        [h, wi, cg, ph, pw, wp],
                    )?;
                    if yb > band.y0 + band.loaded {
                        return Err(SIZE_ERR);
                    }
                }
                // Offsets of the chunk's reduction values from a position's corner, by
                // additions: `dw` along a kernel row, then to the next kernel row of the
                // channel, then to the next channel's rows in the band.
                let (ci, rest) = (k0 / (kh * kw), k0 % (kh * kw));
                let (mut ky, mut kx) = (rest / kw, rest % kw);
                let mut chan = ci * cap * wp;
                let mut row = chan + ky * dh * wp;
                let mut v = row + kx * dw;
                let mut max_off = 0;
                for o in off.iter_mut().take(kl) {
                    max_off = max_off.max(v);
                    *o = v as u16;
                    kx += 1;
                    v += dw;
                    if kx == kw {
                        kx = 0;
                        ky += 1;
                        row += dh * wp;
                        if ky == kh {
                            ky = 0;
                            chan += cap * wp;
                            row = chan;
                        }
                        v = row;
                    }
                }
                let corner = |p: usize| ((p / ow) * sh - band.y0) * wp + (p % ow) * sw;
                let quads = kl.div_ceil(4);
                let offs = off.get(..kl).ok_or(SIZE_ERR)?;
                for (pi, dst) in act.chunks_exact_mut(4 * quads).enumerate() {
                    let pa = p0 + 2 * pi;
                    let has_b = 2 * pi + 1 < len;
                    let ba = corner(pa);
                    let bb = if has_b { corner(pa + 1) } else { ba };
                    if ba.max(bb) + max_off >= BAND {
                        return Err(SIZE_ERR);
                    }
                    // Indices below BAND (just checked), so the mask changes nothing and
                    // spares the bounds checks.
                    let at = |i: usize| i32::from(band.q.get(i & (BAND - 1)).copied().unwrap_or(0));
                    let full = kl / 4;
                    let (head, tail) = dst.split_at_mut((4 * full).min(dst.len()));
                    let qo = offs.chunks_exact(4);
                    let rest = qo.remainder();
                    if has_b && bb == ba + 1 {
                        // The pair's values are adjacent bytes: one halfword holds both, and
                        // two halfwords (values k and k + 2) widen into both rows' words.
                        let hw = |i: usize| {
                            let i = i & (BAND - 1);
                            match band.q.get(i..i + 2) {
                                Some([lo, hi]) => {
                                    u32::from(u16::from_le_bytes([*lo as u8, *hi as u8]))
                                }
                                _ => 0,
                            }
                        };
                        for (o, q) in head.chunks_exact_mut(4).zip(qo) {
                            if let [o0, o1, o2, o3] = *q {
                                let (o0, o1, o2, o3) =
                                    (o0 as usize, o1 as usize, o2 as usize, o3 as usize);
                                let (ae, be) = widen(hw(ba + o0) | (hw(ba + o2) << 16));
                                let (ao, bo) = widen(hw(ba + o1) | (hw(ba + o3) << 16));
                                o.copy_from_slice(&[ae, be, ao, bo]);
                            }
                        }
                    } else {
                        for (o, q) in head.chunks_exact_mut(4).zip(qo) {
                            if let [o0, o1, o2, o3] = *q {
                                let (o0, o1, o2, o3) =
                                    (o0 as usize, o1 as usize, o2 as usize, o3 as usize);
                                let (a0, a1, a2, a3) =
                                    (at(ba + o0), at(ba + o1), at(ba + o2), at(ba + o3));
                                let (b0, b1, b2, b3) = if has_b {
                                    (at(bb + o0), at(bb + o1), at(bb + o2), at(bb + o3))
                                } else {
                                    (0, 0, 0, 0)
                                };
                                o.copy_from_slice(&[
                                    pair(a0, a2),
                                    pair(b0, b2),
                                    pair(a1, a3),
                                    pair(b1, b3),
                                ]);
                            }
                        }
                    }
                    if let Some(o) = tail.get_mut(..4) {
                        let mut va = [0i32; 4];
                        let mut vb = [0i32; 4];
                        for (j, oj) in rest.iter().enumerate() {
                            if let (Some(da), Some(db)) = (va.get_mut(j), vb.get_mut(j)) {
                                *da = at(ba + *oj as usize);
                                if has_b {
                                    *db = at(bb + *oj as usize);
                                }
                            }
                        }
                        let ([a0, a1, a2, a3], [b0, b1, b2, b3]) = (va, vb);
                        o.copy_from_slice(&[
                            pair(a0, a2),
                            pair(b0, b2),
                            pair(a1, a3),
                            pair(b1, b3),
                        ]);
                    }
                }
                if band.nan {
                    // Rare: which positions see a NaN, from the input itself.
                    for (i, f) in nan.iter_mut().enumerate().take(len) {
                        let p = p0 + i;
                        *f |= window_has_nan(xg, p / ow, p % ow, [h, wi, kh, kw], win, cg);
                    }
                }
                Ok(())
            };
            let at = [g * mg * plane_out, 1, plane_out];
            gemm(
                &mut s,
                group,
                oh * ow,
                red,
                mg,
                g * mg,
                w,
                bias,
                act_scale,
                pack,
                ob,
                at,
            )?;
        }
    }
    Ok(true)
}

/// Quantizes padded rows `y0 .. y0 + rows` of the `cg` channels of `x` (`[cg, h, wi]`) into
/// `band` (channel `ci`, padded row `y`, padded column `px` at `(ci · cap + y − y0) · wp +
/// px`; zeros in the padding). Rows the band already holds are moved, not quantized again.
#[allow(clippy::too_many_arguments)]
fn load_band(
    band: &mut Band,
    x: &[f32],
    inv: f32,
    y0: usize,
    rows: usize,
    cap: usize,
    [h, wi, cg, ph, pw, wp]: [usize; 6],
) -> Result<(), Error> {
    // Rows y0 .. y0 + keep are in the band already, `shift` rows down.
    let old_end = band.y0 + band.loaded;
    let (keep, shift) = if band.loaded > 0 && band.y0 <= y0 && y0 < old_end {
        ((old_end - y0).min(rows), y0 - band.y0)
    } else {
        (0, 0)
    };
    let mut sum = 0f32;
    for ci in 0..cg {
        if keep > 0 && shift > 0 {
            let from = (ci * cap + shift) * wp;
            if from + keep * wp > band.q.len() {
                return Err(SIZE_ERR);
            }
            band.q.copy_within(from..from + keep * wp, ci * cap * wp);
        }
        for y in keep..rows {
            let at = (ci * cap + y) * wp;
            let dst = band.q.get_mut(at..at + wp).ok_or(SIZE_ERR)?;
            match (y0 + y).checked_sub(ph).filter(|iy| *iy < h) {
                Some(iy) => {
                    let src = x
                        .get((ci * h + iy) * wi..(ci * h + iy + 1) * wi)
                        .ok_or(SIZE_ERR)?;
                    let (left, rest) = dst.split_at_mut(pw.min(wp));
                    left.fill(0);
                    let (mid, right) = rest.split_at_mut(wi.min(rest.len()));
                    right.fill(0);
                    for (d, v) in mid.iter_mut().zip(src) {
                        let y = v * inv;
                        sum += y;
                        *d = quantize_fast(y) as i8;
                    }
                }
                None => dst.fill(0),
            }
        }
    }
    // A NaN among the new rows, or (conservatively) anywhere in the previous band.
    let kept_nan = keep > 0 && band.nan;
    band.y0 = y0;
    band.loaded = rows;
    band.nan = kept_nan
        || (!sum.is_finite() && {
            let lo = (y0 + keep).saturating_sub(ph).min(h);
            let hi = (y0 + rows).saturating_sub(ph).min(h);
            (0..cg).any(|ci| {
                x.get((ci * h + lo) * wi..(ci * h + hi) * wi)
                    .is_some_and(|r| r.iter().any(|v| v.is_nan()))
            })
        });
    Ok(())
}

/// Whether the receptive field of output `(oy, ox)` (padding excluded) holds a NaN.
fn window_has_nan(
    x: &[f32],
    oy: usize,
    ox: usize,
    [h, wi, kh, kw]: [usize; 4],
    win: &Window,
    cg: usize,
) -> bool {
    let (sh, dh, ph, _) = win.get(0);
    let (sw, dw, pw, _) = win.get(1);
    (0..cg).any(|ci| {
        (0..kh).any(|ky| {
            (oy * sh + ky * dh)
                .checked_sub(ph)
                .filter(|v| *v < h)
                .is_some_and(|iy| {
                    (0..kw).any(|kx| {
                        (ox * sw + kx * dw)
                            .checked_sub(pw)
                            .filter(|v| *v < wi)
                            .is_some_and(|ix| {
                                x.get((ci * h + iy) * wi + ix).is_some_and(|v| v.is_nan())
                            })
                    })
                })
        })
    })
}
