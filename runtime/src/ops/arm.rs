//! f32 kernels for Arm cores with a single-precision FPU (hard-float ABI, e.g.
//! Cortex-M4F/M7/M33), in inline assembly: Dense (register tiles of 2 rows, or the last
//! single row, × 8, 4, 2 or 1 columns: the weights of one `k` step come in with one `vldm`,
//! four `k` values of a row with one `vldmia`, every multiply-add is one `vfma.f32`), Conv
//! (tiles of 2 pixels × 8 output channels, below), element-wise `+ - * /`, `-x`, `|x|`,
//! `x * x`, `1 / x` (8 values per load and store) and the square root (`vsqrt.f32`).
//!
//! `vfma.f32 d, n, m` is fused (VFPv4 and later): `d + n · m` rounded once — the bits of
//! [`super::exact::mul_add`], x86's `vfmadd` and the software `fmaf` of the other targets.
//! Each output element is accumulated in the order of [`super::dense`]: `acc = init`, then
//! `acc = acc + a[k] * w[k, c]` for `k` ascending; the tiles only decide which elements are
//! computed together, so the results are bit for bit those of the portable kernel.
//!
//! Registers: `s0..s3` (row 0) and `s4..s7` (row 1) hold four `k` values, `s8..s15` one
//! weight row of the tile, `s16..s23` and `s24..s31` the accumulators of rows 0 and 1.

use core::arch::asm;

use super::elementwise::{Arith, Simple as Unary1};
use super::weights::{load_bias, Weights};
use super::SIZE_ERR;
use crate::Error;

/// `vfma.f32 s<acc>, a, s<w>` for each `acc w` register pair: `s<acc> += a * s<w>`, rounded
/// once.
macro_rules! mla {
    ($a:literal; $($acc:literal $w:literal),*) => {
        concat!($("vfma.f32 s", $acc, ", ", $a, ", s", $w, "\n"),*)
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
/// Not inlined where stored weights are linked: f32 and stored-weight Dense then share one
/// copy of the tiles (2 KB less code than two inlined copies).
#[cfg_attr(any(feature = "weights-int8", feature = "weights-f16"), inline(never))]
#[cfg_attr(
    not(any(feature = "weights-int8", feature = "weights-f16")),
    inline(always)
)]
pub(super) fn rows<const R: usize>(
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

// ---- Conv ------------------------------------------------------------------------------------

/// The operands of one conv tile (see [`conv_tile`]).
struct ConvTile {
    /// Input of pixel A (B) at its first tap: channel 0 of the group, the first valid row
    /// and column of its window.
    xa: *const f32,
    xb: *const f32,
    /// Weights of the first tap at the tile's first output channel.
    w: *const f32,
    /// Bytes between the weights of consecutive taps (`M * 4`).
    stride: usize,
    /// Bytes from the input read pointer after a kernel row's taps to the next row's first.
    xky: usize,
    /// The same for the weight pointer.
    wky: usize,
    /// Bytes from the input read pointer after a channel's last kernel row to the next
    /// channel's first (may wrap: two's complement).
    xci: usize,
    /// The same for the weight pointer.
    wci: usize,
    /// Input channels of the group (>= 1).
    cg: usize,
    /// Kernel rows and accumulators, read through one register.
    rows_acc: *const RowsAcc,
}

/// What a conv tile reads through one pointer (offsets 0 and 4).
#[repr(C)]
struct RowsAcc {
    /// Valid kernel rows per channel (>= 1).
    rows: usize,
    /// Pixel A's 8 accumulators, then B's (32 bytes further): initial values in, sums out.
    acc: *mut f32,
}

/// A two-pixel conv tile: `$init`/`$store` move the accumulators, then for each input
/// channel, for each valid kernel row, the row's taps: `$xa`/`$xb` load the pixels' inputs,
/// and per tap (`($a0, $a1)` registers) `$w` loads the weights, `$m0`/`$m1` multiply-add.
macro_rules! conv2 {
    ($p:ident, $init:literal, $store:literal, $xa:literal, $xb:literal, $w:ident,
     $m0:ident, $m1:ident, $(($a0:literal, $a1:literal)),+) => {
        asm!(
            "ldr {ky}, [{s}, #4]",
            $init,
            "1:",
            "ldr {ky}, [{s}]",
            "2:",
            concat!("vldmia {xa}!, {{", $xa, "}}"),
            concat!("vldmia {xb}!, {{", $xb, "}}"),
            $($w!(), $m0!($a0), $m1!($a1),)+
            "add {xa}, {xa}, {xky}",
            "add {xb}, {xb}, {xky}",
            "add {w}, {w}, {wky}",
            "subs {ky}, {ky}, #1",
            "bne 2b",
            "add {xa}, {xa}, {xci}",
            "add {xb}, {xb}, {xci}",
            "add {w}, {w}, {wci}",
            "subs {ci}, {ci}, #1",
            "bne 1b",
            "ldr {ky}, [{s}, #4]",
            $store,
            xa = inout(reg) $p.xa => _,
            xb = inout(reg) $p.xb => _,
            w = inout(reg) $p.w => _,
            stride = in(reg) $p.stride,
            xky = in(reg) $p.xky,
            wky = in(reg) $p.wky,
            xci = in(reg) $p.xci,
            wci = in(reg) $p.wci,
            ci = inout(reg) $p.cg => _,
            ky = out(reg) _,
            s = in(reg) $p.rows_acc,
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

/// A one-pixel conv tile (see [`conv2`]).
macro_rules! conv1 {
    ($p:ident, $init:literal, $store:literal, $xa:literal, $w:ident, $m0:ident,
     $($a0:literal),+) => {
        asm!(
            "ldr {ky}, [{s}, #4]",
            $init,
            "1:",
            "ldr {ky}, [{s}]",
            "2:",
            concat!("vldmia {xa}!, {{", $xa, "}}"),
            $($w!(), $m0!($a0),)+
            "add {xa}, {xa}, {xky}",
            "add {w}, {w}, {wky}",
            "subs {ky}, {ky}, #1",
            "bne 2b",
            "add {xa}, {xa}, {xci}",
            "add {w}, {w}, {wci}",
            "subs {ci}, {ci}, #1",
            "bne 1b",
            "ldr {ky}, [{s}, #4]",
            $store,
            xa = inout(reg) $p.xa => _,
            w = inout(reg) $p.w => _,
            stride = in(reg) $p.stride,
            xky = in(reg) $p.xky,
            wky = in(reg) $p.wky,
            xci = in(reg) $p.xci,
            wci = in(reg) $p.wci,
            ci = inout(reg) $p.cg => _,
            ky = out(reg) _,
            s = in(reg) $p.rows_acc,
            out("s0") _, out("s1") _, out("s2") _, out("s3") _,
            out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            out("s12") _, out("s13") _, out("s14") _, out("s15") _,
            out("s16") _, out("s17") _, out("s18") _, out("s19") _,
            out("s20") _, out("s21") _, out("s22") _, out("s23") _,
            out("s24") _,
            options(nostack),
        )
    };
}

/// One conv tile: `R` pixels (1 or 2) × `C` output channels (8 or 1), `NKX` (1..=3) taps per
/// kernel row: `acc[p][j] += x_p[tap] * w[tap][j]` over the valid taps in (input channel,
/// kernel row, kernel column) order.
///
/// # Safety
///
/// For each of the `cg` channels and each valid row, `NKX` consecutive inputs at `xa` (and
/// `xb` when `R == 2`) and `C` weights at each of `NKX` taps `stride` bytes apart are
/// readable, the pointers moving by the steps; the accumulators are readable and writable
/// for 16 values.
#[inline(always)]
unsafe fn conv_tile<const R: usize, const C: usize, const NKX: usize>(p: ConvTile) {
    // SAFETY: the caller's contract; the assembly touches only that memory and the
    // registers it declares.
    unsafe {
        match (R, C, NKX) {
            (2, 8, 3) => conv2!(
                p,
                "vldm {ky}, {{s16-s31}}",
                "vstm {ky}, {{s16-s31}}",
                "s0-s2",
                "s4-s6",
                w8,
                mla0x8,
                mla1x8,
                ("s0", "s4"),
                ("s1", "s5"),
                ("s2", "s6")
            ),
            (2, 8, 2) => conv2!(
                p,
                "vldm {ky}, {{s16-s31}}",
                "vstm {ky}, {{s16-s31}}",
                "s0-s1",
                "s4-s5",
                w8,
                mla0x8,
                mla1x8,
                ("s0", "s4"),
                ("s1", "s5")
            ),
            (2, 8, 1) => conv2!(
                p,
                "vldm {ky}, {{s16-s31}}",
                "vstm {ky}, {{s16-s31}}",
                "s0",
                "s4",
                w8,
                mla0x8,
                mla1x8,
                ("s0", "s4")
            ),
            (2, 1, 3) => conv2!(
                p,
                "vldr s16, [{ky}]\nvldr s24, [{ky}, #32]",
                "vstr s16, [{ky}]\nvstr s24, [{ky}, #32]",
                "s0-s2",
                "s4-s6",
                w1,
                mla0x1,
                mla1x1,
                ("s0", "s4"),
                ("s1", "s5"),
                ("s2", "s6")
            ),
            (2, 1, 2) => conv2!(
                p,
                "vldr s16, [{ky}]\nvldr s24, [{ky}, #32]",
                "vstr s16, [{ky}]\nvstr s24, [{ky}, #32]",
                "s0-s1",
                "s4-s5",
                w1,
                mla0x1,
                mla1x1,
                ("s0", "s4"),
                ("s1", "s5")
            ),
            (2, 1, 1) => conv2!(
                p,
                "vldr s16, [{ky}]\nvldr s24, [{ky}, #32]",
                "vstr s16, [{ky}]\nvstr s24, [{ky}, #32]",
                "s0",
                "s4",
                w1,
                mla0x1,
                mla1x1,
                ("s0", "s4")
            ),
            (1, 8, 3) => conv1!(
                p,
                "vldm {ky}, {{s16-s23}}",
                "vstm {ky}, {{s16-s23}}",
                "s0-s2",
                w8,
                mla0x8,
                "s0",
                "s1",
                "s2"
            ),
            (1, 8, 2) => conv1!(
                p,
                "vldm {ky}, {{s16-s23}}",
                "vstm {ky}, {{s16-s23}}",
                "s0-s1",
                w8,
                mla0x8,
                "s0",
                "s1"
            ),
            (1, 8, 1) => conv1!(
                p,
                "vldm {ky}, {{s16-s23}}",
                "vstm {ky}, {{s16-s23}}",
                "s0",
                w8,
                mla0x8,
                "s0"
            ),
            (1, 1, 3) => conv1!(
                p,
                "vldr s16, [{ky}]",
                "vstr s16, [{ky}]",
                "s0-s2",
                w1,
                mla0x1,
                "s0",
                "s1",
                "s2"
            ),
            (1, 1, 2) => conv1!(
                p,
                "vldr s16, [{ky}]",
                "vstr s16, [{ky}]",
                "s0-s1",
                w1,
                mla0x1,
                "s0",
                "s1"
            ),
            (1, 1, 1) => conv1!(
                p,
                "vldr s16, [{ky}]",
                "vstr s16, [{ky}]",
                "s0",
                w1,
                mla0x1,
                "s0"
            ),
            _ => {}
        }
    }
}

/// Runs of output positions along one axis that read the same range of kernel taps:
/// `(o0, o1, k0, k1)`: outputs `o0..o1` read taps `k0..k1`, the taps whose input
/// `o * s + k * d - p` lies in `0..len` (a contiguous range; empty when none does).
fn tap_runs(
    out_len: usize,
    k: usize,
    (s, d, p): (usize, usize, usize),
    len: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let taps = move |o: usize| {
        let inside = |kk: usize| (o * s + kk * d).checked_sub(p).is_some_and(|i| i < len);
        let k0 = (0..k).find(|kk| inside(*kk)).unwrap_or(k);
        let k1 = (k0..k).find(|kk| !inside(*kk)).unwrap_or(k);
        (k0, k1)
    };
    let mut o = 0;
    core::iter::from_fn(move || {
        if o >= out_len {
            return None;
        }
        let (o0, range) = (o, taps(o));
        while o < out_len && taps(o) == range {
            o += 1;
        }
        Some((o0, o, range.0, range.1))
    })
}

/// ONNX Conv with f32 weights (the layout and order of [`super::conv()`]) in tiles of 2 output
/// pixels × 8 output channels (the last `M/groups % 8` channels one at a time). The image is
/// cut into rectangles of pixels whose windows have the same valid taps; a tile's pixels come
/// from one rectangle, so padding is skipped exactly as the portable kernel skips it, and
/// each accumulator adds its products in (input channel, kernel row, kernel column) order
/// from the bias: the same bits.
///
/// `None` when the geometry is not covered (column dilation other than 1, kernels wider than
/// 3) or is invalid: the caller then runs the portable kernel (which reports the error).
#[allow(clippy::too_many_arguments)]
pub(super) fn conv(
    x: &[f32],
    xd: &super::Dims,
    w: &[f32],
    wd: &super::Dims,
    bias: Option<Weights<'_>>,
    groups: usize,
    win: &super::Window,
    out: &mut [f32],
    od: &super::Dims,
) -> Option<Result<(), Error>> {
    let geo = covered(x, xd, w.len(), wd, bias, groups, win, out, od)?;
    Some(conv_tiles(&geo, x, w, bias, groups, win, out, (0, geo.cg)))
}

/// The checked geometry of a convolution the tiles cover (column dilation 1, kernels at most
/// 3 wide, `w_len` kernel values); `None` otherwise or when it is invalid.
#[allow(clippy::too_many_arguments)]
fn covered(
    x: &[f32],
    xd: &super::Dims,
    w_len: usize,
    wd: &super::Dims,
    bias: Option<Weights<'_>>,
    groups: usize,
    win: &super::Window,
    out: &[f32],
    od: &super::Dims,
) -> Option<super::conv::ConvGeometry> {
    use super::conv::{kernel_dims, ConvGeometry};
    super::check_len(w_len, wd).ok()?;
    let kernel = kernel_dims(wd).ok()?;
    let geo = ConvGeometry::check(x, xd, kernel, wd, bias, groups, win, out, od).ok()?;
    (win.get(1).1 == 1 && geo.kw <= 3).then_some(geo)
}

/// Weights [`conv_typed`] dequantizes at a time (4 KB of stack: the edge model, int8
/// weights and tables, then peaks at ~13.7 KB of the 16 KiB reserve; 8 KB ran 14 % fewer
/// instructions on digits_unet but overflowed it).
const CONV_PANEL: usize = 1024;

/// [`conv`] with stored (f16, bf16, int8) weights: the kernel `[C/groups, KH, KW, M]` is
/// contiguous per input channel, so the weights of a run of input channels (at most
/// [`CONV_PANEL`] values) are dequantized once into a stack panel and the f32 tiles run on
/// them, the first run from the bias, each later one from the sums the previous left in
/// `out` (stored f32, reloaded exactly). Every output keeps its order — bias, then input
/// channel, kernel row, kernel column ascending — so the bits are those of the f32 kernel
/// on the dequantized weights; dequantizing costs once per weight instead of once per
/// weight and pair of pixels (digits_unet with int8 weights, one row: 9.8 → 3.6 M4F
/// instructions per MAC; f32 1.8).
///
/// `None` where [`conv`] is (and when one input channel's weights exceed the panel).
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_typed(
    x: &[f32],
    xd: &super::Dims,
    w: Weights<'_>,
    wd: &super::Dims,
    bias: Option<Weights<'_>>,
    groups: usize,
    win: &super::Window,
    out: &mut [f32],
    od: &super::Dims,
) -> Option<Result<(), Error>> {
    let geo = covered(x, xd, w.len(), wd, bias, groups, win, out, od)?;
    let per_channel = geo.kh * geo.kw * geo.m;
    let run = CONV_PANEL / per_channel.max(1);
    if run == 0 {
        return None;
    }
    let mut panel = [0f32; CONV_PANEL];
    let mut c0 = 0;
    while c0 < geo.cg {
        let cn = run.min(geo.cg - c0);
        let p = panel.get_mut(..cn * per_channel)?;
        // Rows of M output channels, the channel of each scale.
        if w.load_runs(c0 * per_channel, geo.m, geo.m, p).is_none() {
            return Some(Err(SIZE_ERR));
        }
        if let Err(e) = conv_tiles(&geo, x, p, bias, groups, win, out, (c0, cn)) {
            return Some(Err(e));
        }
        c0 += cn;
    }
    Some(Ok(()))
}

/// The tiles of [`conv`] (geometry checked and covered) over the input channels `c0 .. c0 +
/// cn` of each group, `w` holding their weights only (`[cn, KH, KW, M]`): from the bias when
/// `c0 == 0`, else continuing from the sums in `out`.
#[allow(clippy::too_many_arguments)]
fn conv_tiles(
    geo: &super::conv::ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<Weights<'_>>,
    groups: usize,
    win: &super::Window,
    out: &mut [f32],
    (c0, cn): (usize, usize),
) -> Result<(), Error> {
    let (h, wi, cg, kh, kw, m, oh, ow) =
        (geo.h, geo.wi, geo.cg, geo.kh, geo.kw, geo.m, geo.oh, geo.ow);
    if cn == 0 || c0 + cn > cg {
        return Err(SIZE_ERR);
    }
    let carry = c0 > 0;
    let (sh, dh, ph, _) = win.get(0);
    let (sw, _, pw, _) = win.get(1);
    let (plane_in, plane_out, mg) = (h * wi, oh * ow, m / groups);
    // Writes `vals` to the output channels `oc..` of pixel `pix` (channel planes apart).
    let put = |ob: &mut [f32], oc: usize, pix: usize, vals: &[f32]| -> Result<(), Error> {
        let dst = ob.get_mut(oc * plane_out + pix..).ok_or(SIZE_ERR)?;
        let mut dst = dst.iter_mut().step_by(plane_out);
        for v in vals {
            *dst.next().ok_or(SIZE_ERR)? = *v;
        }
        Ok(())
    };
    // Reads the channels `oc..` of pixel `pix` into `vals` (the sums of earlier channels).
    let get = |ob: &[f32], oc: usize, pix: usize, vals: &mut [f32]| -> Result<(), Error> {
        let src = ob.get(oc * plane_out + pix..).ok_or(SIZE_ERR)?;
        let mut src = src.iter().step_by(plane_out);
        for v in vals {
            *v = *src.next().ok_or(SIZE_ERR)?;
        }
        Ok(())
    };
    for b in 0..geo.n {
        let (xb, ob) = geo.image(b, x, out)?;
        for g in 0..groups {
            let xg = xb
                .get((g * cg + c0) * plane_in..(g * cg + c0 + cn) * plane_in)
                .ok_or(SIZE_ERR)?;
            let (oc_begin, oc_end) = (g * mg, (g + 1) * mg);
            for (oy0, oy1, ky0, ky1) in tap_runs(oh, kh, (sh, dh, ph), h) {
                for (ox0, ox1, kx0, kx1) in tap_runs(ow, kw, (sw, 1, pw), wi) {
                    let (nky, nkx) = (ky1 - ky0, kx1 - kx0);
                    let cols = ox1 - ox0;
                    let npx = (oy1 - oy0) * cols;
                    let pix = |i: usize| (oy0 + i / cols, ox0 + i % cols);
                    if nky == 0 || nkx == 0 {
                        // No tap inside the input: the bias (a later run of channels adds
                        // nothing).
                        if carry {
                            continue;
                        }
                        for oc in oc_begin..oc_end {
                            let mut v = [0f32];
                            load_bias(bias, oc, &mut v).ok_or(SIZE_ERR)?;
                            for (oy, ox) in (0..npx).map(pix) {
                                put(ob, oc, oy * ow + ox, &v)?;
                            }
                        }
                        continue;
                    }
                    // Every weight a tile reads is at or below the last tap's last channel.
                    let w_last = (((cn - 1) * kh + ky1 - 1) * kw + kx1 - 1) * m + oc_end - 1;
                    if w_last >= w.len() {
                        return Err(SIZE_ERR);
                    }
                    // The first input of a pixel's window (channel 0, row ky0, column kx0),
                    // its last one (channel cn - 1 of this run, row ky1 - 1, column kx1 - 1)
                    // checked.
                    let first = |(oy, ox): (usize, usize)| -> Result<*const f32, Error> {
                        let (iy, ix) = (oy * sh + ky0 * dh - ph, ox * sw + kx0 - pw);
                        let last = (cn - 1) * plane_in + (iy + (nky - 1) * dh) * wi + ix + nkx - 1;
                        xg.get(last).ok_or(SIZE_ERR)?;
                        Ok(xg.get(iy * wi + ix).ok_or(SIZE_ERR)?)
                    };
                    let mut i = 0;
                    while i < npx {
                        let two = i + 1 < npx;
                        let (pa, pb) = (pix(i), pix(if two { i + 1 } else { i }));
                        let (xa, xb) = (first(pa)?, first(pb)?);
                        let mut oc = oc_begin;
                        while oc < oc_end {
                            let c = if oc + 8 <= oc_end { 8 } else { 1 };
                            let mut acc = [0f32; 16];
                            let (acc_a, acc_b) = acc.split_at_mut(8);
                            if carry {
                                let (ia, ib) = (
                                    acc_a.get_mut(..c).ok_or(SIZE_ERR)?,
                                    acc_b.get_mut(..c).ok_or(SIZE_ERR)?,
                                );
                                get(ob, oc, pa.0 * ow + pa.1, ia)?;
                                get(ob, oc, pb.0 * ow + pb.1, ib)?;
                            } else {
                                let init = acc_a.get_mut(..c).ok_or(SIZE_ERR)?;
                                load_bias(bias, oc, init).ok_or(SIZE_ERR)?;
                                acc_b.copy_from_slice(acc_a);
                            }
                            let ra = RowsAcc {
                                rows: nky,
                                acc: acc.as_mut_ptr(),
                            };
                            let t = ConvTile {
                                xa,
                                xb,
                                w: w.get((ky0 * kw + kx0) * m + oc..).ok_or(SIZE_ERR)?.as_ptr(),
                                stride: m * 4,
                                xky: (dh * wi - nkx) * 4,
                                wky: (kw - nkx) * m * 4,
                                xci: (plane_in * 4).wrapping_sub(nky * dh * wi * 4),
                                wci: (kh - nky) * kw * m * 4,
                                cg: cn,
                                rows_acc: &ra,
                            };
                            // SAFETY: a pixel's inputs lie in the rows iy + r * dh (r < nky)
                            // and columns ix .. ix + nkx of the group's channels, inside the
                            // image (valid taps) and inside `xg` (first and last checked);
                            // the weights lie between the first tap's and `w_last` (checked);
                            // `acc` holds 16 values.
                            unsafe {
                                match (two, c, nkx) {
                                    (true, 8, 3) => conv_tile::<2, 8, 3>(t),
                                    (true, 8, 2) => conv_tile::<2, 8, 2>(t),
                                    (true, 8, _) => conv_tile::<2, 8, 1>(t),
                                    (true, _, 3) => conv_tile::<2, 1, 3>(t),
                                    (true, _, 2) => conv_tile::<2, 1, 2>(t),
                                    (true, _, _) => conv_tile::<2, 1, 1>(t),
                                    (false, 8, 3) => conv_tile::<1, 8, 3>(t),
                                    (false, 8, 2) => conv_tile::<1, 8, 2>(t),
                                    (false, 8, _) => conv_tile::<1, 8, 1>(t),
                                    (false, _, 3) => conv_tile::<1, 1, 3>(t),
                                    (false, _, 2) => conv_tile::<1, 1, 2>(t),
                                    (false, _, _) => conv_tile::<1, 1, 1>(t),
                                }
                            }
                            let (acc_a, acc_b) = acc.split_at(8);
                            put(ob, oc, pa.0 * ow + pa.1, acc_a.get(..c).ok_or(SIZE_ERR)?)?;
                            if two {
                                put(ob, oc, pb.0 * ow + pb.1, acc_b.get(..c).ok_or(SIZE_ERR)?)?;
                            }
                            oc += c;
                        }
                        i += 2;
                    }
                }
            }
        }
    }
    Ok(())
}

// ---- Element-wise arithmetic -----------------------------------------------------------------

/// `$op` on 8 register pairs: `s0..s7 = $op(s0..s7, s8..s15)`.
macro_rules! vv8 {
    ($op:literal) => {
        concat!(
            $op,
            " s0, s0, s8\n",
            $op,
            " s1, s1, s9\n",
            $op,
            " s2, s2, s10\n",
            $op,
            " s3, s3, s11\n",
            $op,
            " s4, s4, s12\n",
            $op,
            " s5, s5, s13\n",
            $op,
            " s6, s6, s14\n",
            $op,
            " s7, s7, s15\n"
        )
    };
}
/// `s0..s7 = $op(s0..s7, s16)`.
macro_rules! vs8 {
    ($op:literal) => {
        concat!(
            $op,
            " s0, s0, s16\n",
            $op,
            " s1, s1, s16\n",
            $op,
            " s2, s2, s16\n",
            $op,
            " s3, s3, s16\n",
            $op,
            " s4, s4, s16\n",
            $op,
            " s5, s5, s16\n",
            $op,
            " s6, s6, s16\n",
            $op,
            " s7, s7, s16\n"
        )
    };
}
/// `s0..s7 = $op(s16, s0..s7)`.
macro_rules! sv8 {
    ($op:literal) => {
        concat!(
            $op,
            " s0, s16, s0\n",
            $op,
            " s1, s16, s1\n",
            $op,
            " s2, s16, s2\n",
            $op,
            " s3, s16, s3\n",
            $op,
            " s4, s16, s4\n",
            $op,
            " s5, s16, s5\n",
            $op,
            " s6, s16, s6\n",
            $op,
            " s7, s16, s7\n"
        )
    };
}
/// `s0..s7 = $op(s0..s7)`.
macro_rules! u8x {
    ($op:literal) => {
        concat!(
            $op,
            " s0, s0\n",
            $op,
            " s1, s1\n",
            $op,
            " s2, s2\n",
            $op,
            " s3, s3\n",
            $op,
            " s4, s4\n",
            $op,
            " s5, s5\n",
            $op,
            " s6, s6\n",
            $op,
            " s7, s7\n"
        )
    };
}

/// An element-wise loop over `{n8}` blocks of 8 values, then `{n1}` single values: `$load8`
/// / `$load1` read the operands (advancing their pointers), `$op8` / `$op1` compute into
/// `s0..` and the results go to `{o}`. `$pre` runs once first. The operand pointers are the
/// trailing `name = inout(reg) value` list.
macro_rules! eltwise {
    ($n8:expr, $n1:expr, $o:expr, $pre:expr, $load8:expr, $op8:expr, $load1:expr, $op1:expr,
     $($name:ident = $val:expr),*) => {
        asm!(
            $pre,
            "cmp {n8}, #0",
            "beq 2f",
            "1:",
            $load8,
            $op8,
            "vstmia {o}!, {{s0-s7}}",
            "subs {n8}, {n8}, #1",
            "bne 1b",
            "2:",
            "cmp {n1}, #0",
            "beq 4f",
            "3:",
            $load1,
            $op1,
            "vstmia {o}!, {{s0}}",
            "subs {n1}, {n1}, #1",
            "bne 3b",
            "4:",
            n8 = inout(reg) $n8 => _,
            n1 = inout(reg) $n1 => _,
            o = inout(reg) $o => _,
            $($name = inout(reg) $val => _,)*
            out("s0") _, out("s1") _, out("s2") _, out("s3") _,
            out("s4") _, out("s5") _, out("s6") _, out("s7") _,
            out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            out("s12") _, out("s13") _, out("s14") _, out("s15") _,
            out("s16") _,
            options(nostack),
        )
    };
}

/// `out[i] = a[i] op b[i]` for `i < out.len()`; `false` (nothing written) when `a` or `b` is
/// shorter than `out`.
#[inline(always)]
pub(super) fn binary_vv(op: Arith, out: &mut [f32], a: &[f32], b: &[f32]) -> bool {
    let n = out.len();
    if a.len() < n || b.len() < n {
        return false;
    }
    let (o, a, b) = (out.as_mut_ptr(), a.as_ptr(), b.as_ptr());
    let (n8, n1) = (n / 8, n % 8);
    // SAFETY: the loop reads n values from a and b and writes n to out (lengths checked).
    unsafe {
        macro_rules! vv {
            ($op:literal) => {
                eltwise!(
                    n8,
                    n1,
                    o,
                    "",
                    "vldmia {a}!, {{s0-s7}}\nvldmia {b}!, {{s8-s15}}",
                    vv8!($op),
                    "vldmia {a}!, {{s0}}\nvldmia {b}!, {{s8}}",
                    concat!($op, " s0, s0, s8"),
                    a = a,
                    b = b
                )
            };
        }
        match op {
            Arith::Add => vv!("vadd.f32"),
            Arith::Sub => vv!("vsub.f32"),
            Arith::Mul => vv!("vmul.f32"),
            Arith::Div => vv!("vdiv.f32"),
        }
    }
    true
}

/// `out[i] = a[i] op b` (`b_first == false`) or `b op a[i]` (`b_first`) for `i < out.len()`;
/// `false` (nothing written) when `a` is shorter than `out`.
#[inline(always)]
pub(super) fn binary_vs(op: Arith, out: &mut [f32], a: &[f32], b: f32, b_first: bool) -> bool {
    let n = out.len();
    if a.len() < n {
        return false;
    }
    let (o, a, s) = (out.as_mut_ptr(), a.as_ptr(), &b as *const f32);
    let (n8, n1) = (n / 8, n % 8);
    // SAFETY: the loop reads n values from a and one at s, and writes n to out.
    unsafe {
        macro_rules! vs {
            ($op:literal) => {
                eltwise!(
                    n8,
                    n1,
                    o,
                    "vldr s16, [{s}]",
                    "vldmia {a}!, {{s0-s7}}",
                    vs8!($op),
                    "vldmia {a}!, {{s0}}",
                    concat!($op, " s0, s0, s16"),
                    a = a,
                    s = s
                )
            };
        }
        macro_rules! sv {
            ($op:literal) => {
                eltwise!(
                    n8,
                    n1,
                    o,
                    "vldr s16, [{s}]",
                    "vldmia {a}!, {{s0-s7}}",
                    sv8!($op),
                    "vldmia {a}!, {{s0}}",
                    concat!($op, " s0, s16, s0"),
                    a = a,
                    s = s
                )
            };
        }
        match (op, b_first) {
            (Arith::Add, false) => vs!("vadd.f32"),
            (Arith::Sub, false) => vs!("vsub.f32"),
            (Arith::Mul, false) => vs!("vmul.f32"),
            (Arith::Div, false) => vs!("vdiv.f32"),
            (Arith::Add, true) => sv!("vadd.f32"),
            (Arith::Sub, true) => sv!("vsub.f32"),
            (Arith::Mul, true) => sv!("vmul.f32"),
            (Arith::Div, true) => sv!("vdiv.f32"),
        }
    }
    true
}

/// `out[i] = op(x[i])` for `i < out.len()`; `false` (nothing written) when `x` is shorter.
#[inline(always)]
pub(super) fn unary(op: Unary1, out: &mut [f32], x: &[f32]) -> bool {
    let n = out.len();
    if x.len() < n {
        return false;
    }
    let (o, a) = (out.as_mut_ptr(), x.as_ptr());
    let (n8, n1) = (n / 8, n % 8);
    // SAFETY: the loop reads n values from x and writes n to out.
    unsafe {
        macro_rules! un {
            ($pre:literal, $op8:expr, $op1:literal) => {
                eltwise!(
                    n8,
                    n1,
                    o,
                    $pre,
                    "vldmia {a}!, {{s0-s7}}",
                    $op8,
                    "vldmia {a}!, {{s0}}",
                    $op1,
                    a = a
                )
            };
        }
        match op {
            Unary1::Neg => un!("", u8x!("vneg.f32"), "vneg.f32 s0, s0"),
            Unary1::Abs => un!("", u8x!("vabs.f32"), "vabs.f32 s0, s0"),
            Unary1::Square => un!(
                "",
                concat!(
                    "vmul.f32 s0, s0, s0\nvmul.f32 s1, s1, s1\nvmul.f32 s2, s2, s2\n",
                    "vmul.f32 s3, s3, s3\nvmul.f32 s4, s4, s4\nvmul.f32 s5, s5, s5\n",
                    "vmul.f32 s6, s6, s6\nvmul.f32 s7, s7, s7"
                ),
                "vmul.f32 s0, s0, s0"
            ),
            Unary1::Recip => un!(
                "vmov.f32 s16, #1.0",
                sv8!("vdiv.f32"),
                "vdiv.f32 s0, s16, s0"
            ),
        }
    }
    true
}

/// The square root by `vsqrt.f32` (correctly rounded, as `libm::sqrtf`), every NaN result
/// the canonical `f32::NAN` as `libm::sqrtf` returns it: the same bits.
#[inline(always)]
pub(super) fn sqrt(x: f32) -> f32 {
    let mut bits = x.to_bits();
    // SAFETY: register-only arithmetic.
    unsafe {
        asm!(
            "vmov s0, {b}",
            "vsqrt.f32 s0, s0",
            "vmov {b}, s0",
            b = inout(reg) bits,
            out("s0") _,
            options(nostack, nomem, pure),
        );
    }
    let v = f32::from_bits(bits);
    if v.is_nan() {
        f32::NAN
    } else {
        v
    }
}
