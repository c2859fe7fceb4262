//! The f32 Dense kernel for Arm cores with a single-precision FPU (hard-float ABI, e.g.
//! Cortex-M4F/M7/M33): register tiles of 2 rows (or the last single row) × 8, 4, 2 or 1
//! columns in inline assembly, so that the weights of one `k` step come in with one `vldm`,
//! four `k` values of a row with one `vldmia`, and every multiply-add is one `vmla.f32`.
//!
//! `vmla.f32 d, n, m` is *not* fused: it rounds `n * m`, then rounds `d + (n * m)` — exactly
//! Rust's `d += n * m` (which the compiler itself compiles to `vmla.f32` on these cores).
//! Each output element is accumulated in the order of [`super::dense`]: `acc = init`, then
//! `acc = acc + a[k] * w[k, c]` for `k` ascending; the tiles only decide which elements are
//! computed together, so the results are bit for bit those of the portable kernel.
//!
//! Registers: `s0..s3` (row 0) and `s4..s7` (row 1) hold four `k` values, `s8..s15` one
//! weight row of the tile, `s16..s23` and `s24..s31` the accumulators of rows 0 and 1.

use core::arch::asm;

use super::super::weights::{load_bias, Weights};
use super::super::SIZE_ERR;
use crate::Error;

/// `vmla.f32 s<acc>, a, s<w>` for each `acc w` register pair: `s<acc> += a * s<w>`.
macro_rules! mla {
    ($a:literal; $($acc:literal $w:literal),*) => {
        concat!($("vmla.f32 s", $acc, ", ", $a, ", s", $w, "\n"),*)
    };
}

/// Row 0 (`s16..`) `+= a * w` over 8 columns.
macro_rules! mla0x8 {
    ($a:literal) => {
        mla!($a; 16 8, 17 9, 18 10, 19 11, 20 12, 21 13, 22 14, 23 15)
    };
}

/// Row 1 (`s24..`) `+= a * w` over 8 columns.
macro_rules! mla1x8 {
    ($a:literal) => {
        mla!($a; 24 8, 25 9, 26 10, 27 11, 28 12, 29 13, 30 14, 31 15)
    };
}

/// Loads one weight row of 8 columns and steps `{w}` to the next.
macro_rules! w8 {
    () => {
        "vldm {w}, {{s8-s15}}\nadd {w}, {w}, {stride}\n"
    };
}

/// Row 0 (`s16..`) `+= a * w` over 4 columns.
macro_rules! mla0x4 {
    ($a:literal) => {
        mla!($a; 16 8, 17 9, 18 10, 19 11)
    };
}

/// Row 1 (`s24..`) `+= a * w` over 4 columns.
macro_rules! mla1x4 {
    ($a:literal) => {
        mla!($a; 24 8, 25 9, 26 10, 27 11)
    };
}

/// Loads one weight row of 4 columns and steps `{w}` to the next.
macro_rules! w4 {
    () => {
        "vldm {w}, {{s8-s11}}\nadd {w}, {w}, {stride}\n"
    };
}

/// Row 0 (`s16..`) `+= a * w` over 2 columns.
macro_rules! mla0x2 {
    ($a:literal) => {
        mla!($a; 16 8, 17 9)
    };
}

/// Row 1 (`s24..`) `+= a * w` over 2 columns.
macro_rules! mla1x2 {
    ($a:literal) => {
        mla!($a; 24 8, 25 9)
    };
}

/// Loads one weight row of 2 columns and steps `{w}` to the next.
macro_rules! w2 {
    () => {
        "vldm {w}, {{s8-s9}}\nadd {w}, {w}, {stride}\n"
    };
}

/// Row 0 (`s16..`) `+= a * w` over 1 column.
macro_rules! mla0x1 {
    ($a:literal) => {
        mla!($a; 16 8)
    };
}

/// Row 1 (`s24..`) `+= a * w` over 1 column.
macro_rules! mla1x1 {
    ($a:literal) => {
        mla!($a; 24 8)
    };
}

/// Loads one weight row of 1 column and steps `{w}` to the next.
macro_rules! w1 {
    () => {
        "vldm {w}, {{s8}}\nadd {w}, {w}, {stride}\n"
    };
}

/// The operands of one tile (see [`tile`]).
struct Tile {
    a0: *const f32,
    a1: *const f32,
    w: *const f32,
    stride: usize,
    k4: usize,
    k1: usize,
    init: *const f32,
    o0: *mut f32,
    o1: *mut f32,
}

/// A two-row tile: the accumulators `$acc0` and `$acc1` (register ranges) start from
/// `{init}`, `$w` loads a weight row, `$m0` and `$m1` multiply-add one `k` value of a row;
/// four `k` steps per loop turn, then one at a time; the accumulators go to `{o0}`, `{o1}`.
macro_rules! tile2 {
    ($p:ident, $acc0:literal, $acc1:literal, $w:ident, $m0:ident, $m1:ident) => {
        asm!(
            concat!("vldm {init}, {{", $acc0, "}}"),
            concat!("vldm {init}, {{", $acc1, "}}"),
            "cmp {k4}, #0",
            "beq 2f",
            "1:",
            "vldmia {a0}!, {{s0-s3}}",
            "vldmia {a1}!, {{s4-s7}}",
            $w!(), $m0!("s0"), $m1!("s4"),
            $w!(), $m0!("s1"), $m1!("s5"),
            $w!(), $m0!("s2"), $m1!("s6"),
            $w!(), $m0!("s3"), $m1!("s7"),
            "subs {k4}, {k4}, #1",
            "bne 1b",
            "2:",
            "cmp {k1}, #0",
            "beq 4f",
            "3:",
            "vldmia {a0}!, {{s0}}",
            "vldmia {a1}!, {{s4}}",
            $w!(), $m0!("s0"), $m1!("s4"),
            "subs {k1}, {k1}, #1",
            "bne 3b",
            "4:",
            concat!("vstm {o0}, {{", $acc0, "}}"),
            concat!("vstm {o1}, {{", $acc1, "}}"),
            a0 = inout(reg) $p.a0 => _,
            a1 = inout(reg) $p.a1 => _,
            w = inout(reg) $p.w => _,
            stride = in(reg) $p.stride,
            k4 = inout(reg) $p.k4 => _,
            k1 = inout(reg) $p.k1 => _,
            init = in(reg) $p.init,
            o0 = in(reg) $p.o0,
            o1 = in(reg) $p.o1,
            out("s0") _, out("s1") _, out("s2") _, out("s3") _,
            out("s4") _, out("s5") _, out("s6") _, out("s7") _,
            out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            out("s12") _, out("s13") _, out("s14") _, out("s15") _,
            out("s16") _, out("s17") _, out("s18") _, out("s19") _,
            out("s20") _, out("s21") _, out("s22") _, out("s23") _,
            out("s24") _, out("s25") _, out("s26") _, out("s27") _,
            out("s28") _, out("s29") _, out("s30") _, out("s31") _,
            options(nostack),
        )
    };
}

/// A one-row tile (see [`tile2`]).
macro_rules! tile1 {
    ($p:ident, $acc0:literal, $w:ident, $m0:ident) => {
        asm!(
            concat!("vldm {init}, {{", $acc0, "}}"),
            "cmp {k4}, #0",
            "beq 2f",
            "1:",
            "vldmia {a0}!, {{s0-s3}}",
            $w!(), $m0!("s0"),
            $w!(), $m0!("s1"),
            $w!(), $m0!("s2"),
            $w!(), $m0!("s3"),
            "subs {k4}, {k4}, #1",
            "bne 1b",
            "2:",
            "cmp {k1}, #0",
            "beq 4f",
            "3:",
            "vldmia {a0}!, {{s0}}",
            $w!(), $m0!("s0"),
            "subs {k1}, {k1}, #1",
            "bne 3b",
            "4:",
            concat!("vstm {o0}, {{", $acc0, "}}"),
            a0 = inout(reg) $p.a0 => _,
            w = inout(reg) $p.w => _,
            stride = in(reg) $p.stride,
            k4 = inout(reg) $p.k4 => _,
            k1 = inout(reg) $p.k1 => _,
            init = in(reg) $p.init,
            o0 = in(reg) $p.o0,
            out("s0") _, out("s1") _, out("s2") _, out("s3") _,
            out("s4") _, out("s5") _, out("s6") _, out("s7") _,
            out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            out("s12") _, out("s13") _, out("s14") _, out("s15") _,
            out("s16") _, out("s17") _, out("s18") _, out("s19") _,
            out("s20") _, out("s21") _, out("s22") _, out("s23") _,
            out("s24") _, out("s25") _, out("s26") _, out("s27") _,
            out("s28") _, out("s29") _, out("s30") _, out("s31") _,
            options(nostack),
        )
    };
}

/// One tile: `R` rows (1 or 2) × `C` columns (8, 4, 2 or 1) over all of `k`:
/// `o_r[c] = init[c] + a_r[0] * w[0, c] + a_r[1] * w[1, c] + ...` (left to right).
///
/// # Safety
///
/// `p.a0` (and `p.a1` when `R == 2`) are readable for `k = 4 * p.k4 + p.k1` values, `p.w`
/// for `C` values at `p.w + i * p.stride` bytes for every `i < k`, `p.init` for `C` values;
/// `p.o0` (and `p.o1` when `R == 2`) are writable for `C` values.
#[inline(always)]
unsafe fn tile<const R: usize, const C: usize>(p: Tile) {
    // SAFETY: the caller's contract; the assembly reads and writes only that memory and
    // the registers it declares (the compiler saves s16-s31, which the ABI preserves).
    unsafe {
        match (R, C) {
            (2, 8) => tile2!(p, "s16-s23", "s24-s31", w8, mla0x8, mla1x8),
            (2, 4) => tile2!(p, "s16-s19", "s24-s27", w4, mla0x4, mla1x4),
            (2, 2) => tile2!(p, "s16-s17", "s24-s25", w2, mla0x2, mla1x2),
            (2, 1) => tile2!(p, "s16", "s24", w1, mla0x1, mla1x1),
            (1, 8) => tile1!(p, "s16-s23", w8, mla0x8),
            (1, 4) => tile1!(p, "s16-s19", w4, mla0x4),
            (1, 2) => tile1!(p, "s16-s17", w2, mla0x2),
            (1, 1) => tile1!(p, "s16", w1, mla0x1),
            _ => {}
        }
    }
}

/// `out[rows, n] = a[rows, k] x w[k, n] (+ bias)` with f32 weights, the sizes already
/// checked by the caller (`a.len() == rows * k`, `w.len() == k * n`, `out.len() == rows * n`,
/// the bias `n` long, `k, n >= 1`).
pub(super) fn dense(
    a: &[f32],
    w: &[f32],
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    let mut o_pairs = out.chunks_exact_mut(2 * n);
    let mut a_pairs = a.chunks_exact(2 * k);
    for (o, a) in (&mut o_pairs).zip(&mut a_pairs) {
        let (o0, o1) = o.split_at_mut(n);
        let (a0, a1) = a.split_at(k);
        rows::<2>([o0, o1], [a0, a1], w, bias, k, n)?;
    }
    let (o, a) = (o_pairs.into_remainder(), a_pairs.remainder());
    if !o.is_empty() {
        rows::<1>([o, &mut []], [a, &[]], w, bias, k, n)?;
    }
    Ok(())
}

/// `R` rows (1 or 2), all columns: tiles of 8 columns, then at most one each of 4, 2 and 1.
#[inline(always)]
fn rows<const R: usize>(
    o: [&mut [f32]; 2],
    a: [&[f32]; 2],
    w: &[f32],
    bias: Option<Weights<'_>>,
    k: usize,
    n: usize,
) -> Result<(), Error> {
    let [o0, o1] = o;
    let [a0, a1] = a;
    let two = R == 2;
    let rows_ok = a0.len() == k && o0.len() == n && (!two || (a1.len() == k && o1.len() == n));
    if !rows_ok || k == 0 || k.checked_mul(n) != Some(w.len()) {
        return Err(SIZE_ERR);
    }
    // f32 biases are read in place; others are dequantized into `buf` per tile.
    static ZEROS: [f32; 8] = [0.0; 8];
    let mut buf = [0f32; 8];
    let mut c0 = 0;
    while c0 < n {
        let cols = match n - c0 {
            8.. => 8,
            4..=7 => 4,
            2..=3 => 2,
            _ => 1,
        };
        let init = match (bias, bias.and_then(|b| b.as_f32())) {
            (None, _) => ZEROS.as_ptr(),
            (_, Some(b)) => b.get(c0..c0 + cols).ok_or(SIZE_ERR)?.as_ptr(),
            (Some(_), None) => {
                let dst = buf.get_mut(..cols).ok_or(SIZE_ERR)?;
                load_bias(bias, c0, dst).ok_or(SIZE_ERR)?;
                dst.as_ptr()
            }
        };
        let d0 = o0.get_mut(c0..c0 + cols).ok_or(SIZE_ERR)?.as_mut_ptr();
        let d1 = match two {
            true => o1.get_mut(c0..c0 + cols).ok_or(SIZE_ERR)?.as_mut_ptr(),
            false => d0,
        };
        let p = Tile {
            a0: a0.as_ptr(),
            a1: if two { a1.as_ptr() } else { a0.as_ptr() },
            w: w.get(c0..).ok_or(SIZE_ERR)?.as_ptr(),
            stride: n * 4,
            k4: k / 4,
            k1: k % 4,
            init,
            o0: d0,
            o1: d1,
        };
        // SAFETY: the rows hold k values, `init` and the output runs `cols` (checked above); the
        // tile reads w[i * n + c0 .. i * n + c0 + cols] for i < k, inside w because
        // c0 + cols <= n and w.len() == k * n.
        unsafe {
            match (two, cols) {
                (true, 8) => tile::<2, 8>(p),
                (true, 4) => tile::<2, 4>(p),
                (true, 2) => tile::<2, 2>(p),
                (true, _) => tile::<2, 1>(p),
                (false, 8) => tile::<1, 8>(p),
                (false, 4) => tile::<1, 4>(p),
                (false, 2) => tile::<1, 2>(p),
                (false, _) => tile::<1, 1>(p),
            }
        }
        c0 += cols;
    }
    Ok(())
}
