//! Convolution as a matrix product on hosts (feature `std`): the input windows are copied
//! into a panel (im2col, `K = C × KH × KW` values per output pixel, stored in tiles of 16
//! pixels as `[K][16]`) and multiplied by the channel-last kernel `[K][M]` (packed in blocks
//! of 6 channels) in register tiles of 6 output channels × 16 pixels.
//!
//! **Same bits as the direct kernel.** Each output element is still `bias` (or `+0.0`), then
//! `+ x·w` (one fused multiply-add) for `(c, ky, kx)` ascending. The only difference is that a padding tap adds
//! `0·w` instead of being skipped, and that changes nothing when `w` is finite and the
//! accumulator is never `−0.0`: `acc + (±0) = acc` for every other `acc`, and an IEEE sum
//! (round to nearest) is `−0.0` only when both operands are. So the accumulator, which
//! starts at a bias that is not `−0.0` or at `+0.0`, never becomes `−0.0`, and the panel
//! path applies only when the weights are finite and no bias is `−0.0` ([`conv`] returns
//! `None` otherwise, and the caller runs the direct kernel). `tests.rs` compares the two
//! bit for bit.
//!
//! The panel lives in a per-thread buffer (this is the one kernel that allocates, and only
//! with `std`); the no_std runtime keeps the direct kernel, whose memory is in the static
//! plan.

extern crate std;

use super::conv::{kernel_dims, ConvGeometry, Window};
use super::exact::mul_add;
use super::weights::{load_bias, Weights};
use super::{check_len, Dims, SIZE_ERR};
use crate::Error;
use alloc::vec::Vec;
use core::cell::RefCell;

/// Pixels per register tile (the panel's width is a multiple of it).
const TILE_PX: usize = 16;
/// Output channels per register tile (6 × 2 AVX2 accumulators + operands fill the 16
/// vector registers).
const TILE_CH: usize = 6;
/// Target panel size in f32 values (≈ 256 KB: stays in a core's L2 with the kernel's
/// column strip).
const PANEL_VALUES: usize = 64 * 1024;

/// A thread's reusable buffers.
#[derive(Default)]
struct Scratch {
    /// The im2col panel, in tiles of [`TILE_PX`] pixels: `[width / TILE_PX][K][TILE_PX]`.
    panel: Vec<f32>,
    /// The kernel in tiles of [`TILE_CH`] channels, `[⌈M / TILE_CH⌉][K][TILE_CH]`, the
    /// channels past `M` zero.
    packed: Vec<f32>,
    /// One image's input planes with the padding written out as zeros.
    padded: Vec<f32>,
    /// Each packed channel's starting value: its bias (or `+0.0`), `0.0` past `M`.
    init: Vec<f32>,
    /// For each panel row `k = (c, ky, kx)`, the offset of its tap in the padded planes
    /// relative to the window's corner: `c·HP·WP + ky·dh·WP + kx·dw`.
    taps: Vec<usize>,
}

std::thread_local! {
    /// This thread's buffers.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Resizes `v` to `len` values (contents unspecified), without aborting when memory is
/// short (`None` then).
fn sized(v: &mut Vec<f32>, len: usize) -> Option<&mut [f32]> {
    if v.len() < len {
        v.clear();
        v.try_reserve_exact(len).ok()?;
        v.resize(len, 0.0);
    }
    v.get_mut(..len)
}

/// [`super::conv`] as im2col + GEMM, with the same bits (see the module docs); `None` when
/// that equality is not guaranteed (a non-finite weight or a `−0.0` bias), for grouped
/// convolutions, and when the buffers cannot be allocated — the caller then runs the direct
/// kernel.
///
/// Errors: dims inconsistent with each other or the window ([`Error::Invalid`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn conv(
    x: &[f32],
    xd: &Dims,
    w: Weights<'_>,
    wd: &Dims,
    bias: Option<Weights<'_>>,
    groups: usize,
    win: &Window,
    out: &mut [f32],
    od: &Dims,
) -> Option<Result<(), Error>> {
    if groups != 1 {
        return None;
    }
    if let Err(e) = check_len(w.len(), wd) {
        return Some(Err(e));
    }
    let geo = match kernel_dims(wd)
        .and_then(|k| ConvGeometry::check(x, xd, k, wd, bias, groups, win, out, od))
    {
        Ok(g) => g,
        Err(e) => return Some(Err(e)),
    };
    let m = geo.m;
    SCRATCH.with(|s| {
        let mut s = s.try_borrow_mut().ok()?;
        let Scratch {
            panel,
            packed,
            padded,
            init,
            taps,
        } = &mut *s;
        let k = geo.c * geo.kh * geo.kw;
        let blocks = m.div_ceil(TILE_CH);
        let init = sized(init, blocks.checked_mul(TILE_CH)?)?;
        let (bias_init, rest) = init.split_at_mut(m);
        load_bias(bias, 0, bias_init)?;
        rest.fill(0.0);
        if init.iter().any(|v| v.to_bits() == (-0f32).to_bits()) {
            return None;
        }
        let packed = sized(packed, blocks.checked_mul(k)?.checked_mul(TILE_CH)?)?;
        pack_kernel(w, k, m, packed)?;
        if !packed.iter().all(|v| v.is_finite()) {
            return None;
        }
        let (hp, wp) = padded_dims(&geo, win)?;
        let plane = geo.oh * geo.ow;
        // Pixels per chunk: as many as fit the panel budget, at least one tile.
        let budget = (PANEL_VALUES / k.max(1)).max(TILE_PX);
        let chunk = if plane <= budget {
            plane * (budget / plane.max(1))
        } else {
            budget - budget % TILE_PX
        };
        let width = chunk.div_ceil(TILE_PX) * TILE_PX;
        let panel = sized(panel, k.checked_mul(width)?)?;
        let padded = sized(padded, geo.c.checked_mul(hp)?.checked_mul(wp)?)?;
        tap_offsets(&geo, win, hp, wp, taps)?;
        Some(run(
            x, &geo, packed, init, out, chunk, panel, padded, taps, win,
        ))
    })
}

/// Copies the kernel `w [K][M]` into `packed` (`[⌈M / TILE_CH⌉][K][TILE_CH]`, zeros past
/// channel `M`), so the tile loop reads it in order; f16, bf16 and int8 weights are
/// dequantized on the way (to the f32 values the direct kernel computes with).
fn pack_kernel(w: Weights<'_>, k: usize, m: usize, packed: &mut [f32]) -> Option<()> {
    for (b, block) in packed.chunks_exact_mut(k * TILE_CH).enumerate() {
        let oc0 = b * TILE_CH;
        let n = TILE_CH.min(m - oc0);
        for (kk, dst) in block.chunks_exact_mut(TILE_CH).enumerate() {
            let (used, rest) = dst.split_at_mut(n);
            w.load(kk * m + oc0, used)?;
            rest.fill(0.0);
        }
    }
    Some(())
}

/// Rows and columns of an input plane with its padding written out.
fn padded_dims(geo: &ConvGeometry, win: &Window) -> Option<(usize, usize)> {
    let (_, _, pt, pb) = win.get(0);
    let (_, _, pl, pr) = win.get(1);
    Some((
        geo.h.checked_add(pt)?.checked_add(pb)?,
        geo.wi.checked_add(pl)?.checked_add(pr)?,
    ))
}

/// The panel loop: chunks of `chunk` output pixels (whole images when an image is small,
/// else parts of one image), each copied into the panel and multiplied out.
#[allow(clippy::too_many_arguments)]
fn run(
    x: &[f32],
    geo: &ConvGeometry,
    packed: &[f32],
    init: &[f32],
    out: &mut [f32],
    chunk: usize,
    panel: &mut [f32],
    padded: &mut [f32],
    taps: &[usize],
    win: &Window,
) -> Result<(), Error> {
    let total = geo.n.checked_mul(geo.oh * geo.ow).ok_or(SIZE_ERR)?;
    let mut image = None;
    let mut q0 = 0;
    while q0 < total {
        let q1 = total.min(q0 + chunk);
        im2col(x, geo, win, taps, q0, q1, panel, padded, &mut image)?;
        multiply(geo, packed, init, panel, q0, q1, out)?;
        q0 = q1;
    }
    Ok(())
}

/// Copies image `b`'s input planes into `padded` (`C × HP × WP`, the padding as zeros).
fn pad_image(
    x: &[f32],
    geo: &ConvGeometry,
    win: &Window,
    b: usize,
    padded: &mut [f32],
) -> Result<(), Error> {
    let (hp, wp) = padded_dims(geo, win).ok_or(SIZE_ERR)?;
    let (_, _, pt, _) = win.get(0);
    let (_, _, pl, _) = win.get(1);
    let plane_in = geo.h * geo.wi;
    padded.fill(0.0);
    let start = b * geo.c * plane_in;
    let xb = x.get(start..start + geo.c * plane_in).ok_or(SIZE_ERR)?;
    for (src, dst) in xb
        .chunks_exact(plane_in)
        .zip(padded.chunks_exact_mut(hp * wp))
    {
        for (r, s) in src.chunks_exact(geo.wi).enumerate() {
            let at = (pt + r) * wp + pl;
            dst.get_mut(at..at + geo.wi)
                .ok_or(SIZE_ERR)?
                .copy_from_slice(s);
        }
    }
    Ok(())
}

/// Fills `taps` with the offset of each panel row's tap (`k = (c, ky, kx)` ascending) in
/// the padded planes (`C × HP × WP`), relative to the window's top-left corner.
fn tap_offsets(
    geo: &ConvGeometry,
    win: &Window,
    hp: usize,
    wp: usize,
    taps: &mut Vec<usize>,
) -> Option<()> {
    let (_, dh, _, _) = win.get(0);
    let (_, dw, _, _) = win.get(1);
    taps.clear();
    taps.try_reserve_exact(geo.c.checked_mul(geo.kh)?.checked_mul(geo.kw)?)
        .ok()?;
    for c in 0..geo.c {
        for ky in 0..geo.kh {
            for kx in 0..geo.kw {
                taps.push(c * hp * wp + ky * dh * wp + kx * dw);
            }
        }
    }
    Some(())
}

/// Copies the windows of output pixels `q0..q1` (over the whole batch, row-major) into the
/// panel: pixel `q` is column `j = q − q0`, in tile `j / TILE_PX` (`[K][TILE_PX]` values
/// each) at `[k][j % TILE_PX]`; the columns of the last tile past `q1 − q0` are `0.0`.
/// The taps are read from the padded planes of the image at hand (`image`: which one
/// `padded` holds) at the offsets `taps` ([`tap_offsets`]).
#[allow(clippy::too_many_arguments)]
fn im2col(
    x: &[f32],
    geo: &ConvGeometry,
    win: &Window,
    taps: &[usize],
    q0: usize,
    q1: usize,
    panel: &mut [f32],
    padded: &mut [f32],
    image: &mut Option<usize>,
) -> Result<(), Error> {
    let (sh, _, _, _) = win.get(0);
    let (sw, _, _, _) = win.get(1);
    let (_, wp) = padded_dims(geo, win).ok_or(SIZE_ERR)?;
    let tile_len = taps.len() * TILE_PX;
    let plane_out = geo.oh * geo.ow;
    let used = q1 - q0;
    if !used.is_multiple_of(TILE_PX) {
        let last = panel
            .chunks_exact_mut(tile_len)
            .nth(used / TILE_PX)
            .ok_or(SIZE_ERR)?;
        for row in last.chunks_exact_mut(TILE_PX) {
            row.get_mut(used % TILE_PX..).ok_or(SIZE_ERR)?.fill(0.0);
        }
    }
    // Pieces of one output row of one image inside one tile: image `b`, row `oy`, columns
    // `ox0..ox0 + len`, panel columns `j..j + len`.
    let (mut b, p) = (q0 / plane_out, q0 % plane_out);
    let (mut oy, mut ox0) = (p / geo.ow, p % geo.ow);
    let mut j = 0;
    while j < used {
        if *image != Some(b) {
            pad_image(x, geo, win, b, padded)?;
            *image = Some(b);
        }
        let (t, at) = (j / TILE_PX, j % TILE_PX);
        let len = (geo.ow - ox0).min(used - j).min(TILE_PX - at);
        let tile = panel
            .get_mut(t * tile_len..(t + 1) * tile_len)
            .ok_or(SIZE_ERR)?;
        // The window corner of the piece's first pixel: the piece's taps for panel row `k`
        // are `padded[corner + taps[k] + i·sw]`, `i < len`.
        let corner = oy * sh * wp + ox0 * sw;
        let src = padded.get(corner..).ok_or(SIZE_ERR)?;
        match (len, sw) {
            (16, 1) => copy_piece::<16>(src, taps, at, tile),
            (8, 1) => copy_piece::<8>(src, taps, at, tile),
            (4, 1) => copy_piece::<4>(src, taps, at, tile),
            _ => copy_piece_strided(src, taps, sw, at, len, tile),
        }?;
        j += len;
        ox0 += len;
        if ox0 == geo.ow {
            ox0 = 0;
            oy += 1;
            if oy == geo.oh {
                oy = 0;
                b += 1;
            }
        }
    }
    Ok(())
}

/// `tile[k][at..at + L] = src[taps[k]..][..L]` for every panel row `k`: one piece of `L`
/// pixels of an output row at stride 1, copied as a fixed-size array (the pieces are 4–16
/// values in small models, too short for a `memcpy` call each).
#[inline(always)]
fn copy_piece<const L: usize>(
    src: &[f32],
    taps: &[usize],
    at: usize,
    tile: &mut [f32],
) -> Result<(), Error> {
    for (row, &off) in tile.chunks_exact_mut(TILE_PX).zip(taps) {
        let from = src.get(off..off + L).ok_or(SIZE_ERR)?;
        let to = row.get_mut(at..at + L).ok_or(SIZE_ERR)?;
        if let (Ok(to), Ok(from)) = (<&mut [f32; L]>::try_from(to), <&[f32; L]>::try_from(from)) {
            *to = *from;
        }
    }
    Ok(())
}

/// [`copy_piece`] for any length and stride: `tile[k][at + i] = src[taps[k] + i·sw]`.
fn copy_piece_strided(
    src: &[f32],
    taps: &[usize],
    sw: usize,
    at: usize,
    len: usize,
    tile: &mut [f32],
) -> Result<(), Error> {
    for (row, &off) in tile.chunks_exact_mut(TILE_PX).zip(taps) {
        let to = row.get_mut(at..at + len).ok_or(SIZE_ERR)?;
        let mut from = src.get(off..).ok_or(SIZE_ERR)?.iter().step_by(sw);
        for v in to {
            *v = *from.next().ok_or(SIZE_ERR)?;
        }
    }
    Ok(())
}

/// `out[b, oc, p] = init[oc] + Σ_k panel[k][q − q0] · w[k][oc]` for the pixels
/// `q = b·plane + p` in `q0..q1`, `k` ascending, in tiles of [`TILE_CH`] channels × [`TILE_PX`] pixels
/// (`packed`: the kernel as [`pack_kernel`] lays it out; `init`: one value per packed
/// channel).
#[allow(clippy::too_many_arguments)]
fn multiply(
    geo: &ConvGeometry,
    packed: &[f32],
    init: &[f32],
    panel: &[f32],
    q0: usize,
    q1: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    #[cfg(target_arch = "x86_64")]
    if super::x86::has_avx512() {
        // SAFETY: `multiply_avx512` only needs the AVX-512F instruction set, which the CPU
        // has (checked just above); its body is safe code.
        return unsafe { multiply_avx512(geo, packed, init, panel, q0, q1, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::x86::has_avx2() {
        // SAFETY: `multiply_avx2` only needs AVX2 and FMA, which the CPU has (checked just
        // above); its body is safe code.
        return unsafe { multiply_avx2(geo, packed, init, panel, q0, q1, out) };
    }
    multiply_tiles(geo, packed, init, panel, q0, q1, out)
}

/// [`multiply`] compiled for AVX2 and FMA (one `vfmadd` per multiply-add: the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments, clippy::redundant_closure)]
fn multiply_avx2(
    geo: &ConvGeometry,
    packed: &[f32],
    init: &[f32],
    panel: &[f32],
    q0: usize,
    q1: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    // A closure, not the function item `tile`: the closure inherits this function's AVX2
    // and FMA, whereas `tile` passed by name was compiled apart, without FMA, and every
    // multiply-add became a call to the software `fmaf` (the UNet's convolutions 80×
    // slower on an AVX2-only CPU).
    multiply_with(
        geo,
        packed,
        init,
        panel,
        q0,
        q1,
        out,
        |ptile, wblock, start| tile(ptile, wblock, start),
    )
}

/// [`multiply`] with AVX-512F tiles (`x86::conv_tile`, intrinsics): a tile row of 16 pixels
/// is one zmm register, so a reduction step is 6 fused multiply-adds instead of AVX2's 12
/// (the same bits). The generic tile loops compiled for AVX-512F ran 8× slower.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
fn multiply_avx512(
    geo: &ConvGeometry,
    packed: &[f32],
    init: &[f32],
    panel: &[f32],
    q0: usize,
    q1: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    const _: () = assert!(TILE_PX == super::x86::CONV_PX && TILE_CH == super::x86::CONV_CH);
    // The closure inherits this function's AVX-512F (so the call needs no `unsafe`).
    multiply_with(
        geo,
        packed,
        init,
        panel,
        q0,
        q1,
        out,
        |ptile, wblock, start| super::x86::conv_tile(ptile, wblock, start),
    )
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn multiply_tiles(
    geo: &ConvGeometry,
    packed: &[f32],
    init: &[f32],
    panel: &[f32],
    q0: usize,
    q1: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    multiply_with(geo, packed, init, panel, q0, q1, out, tile)
}

/// One register tile: `acc[r][p] = start[r] + Σ_k ptile[k][p] · wblock[k][r]`, `k` ascending.
#[inline(always)]
fn tile(
    ptile: &[f32],
    wblock: &[f32],
    start: &[f32; TILE_CH],
) -> Result<[[f32; TILE_PX]; TILE_CH], Error> {
    let mut acc = [[0f32; TILE_PX]; TILE_CH];
    for (row, v) in acc.iter_mut().zip(start) {
        *row = [*v; TILE_PX];
    }
    for (xs, ws) in ptile
        .chunks_exact(TILE_PX)
        .zip(wblock.chunks_exact(TILE_CH))
    {
        let (Ok(xs), Ok(ws)) = (
            <&[f32; TILE_PX]>::try_from(xs),
            <&[f32; TILE_CH]>::try_from(ws),
        ) else {
            return Err(SIZE_ERR);
        };
        for (row, wv) in acc.iter_mut().zip(ws) {
            for (a, xv) in row.iter_mut().zip(xs) {
                *a = mul_add(*xv, *wv, *a);
            }
        }
    }
    Ok(acc)
}

/// The tile loops of [`multiply`], each tile computed by `tile(panel tile, kernel block,
/// the block's init values)`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn multiply_with(
    geo: &ConvGeometry,
    packed: &[f32],
    init: &[f32],
    panel: &[f32],
    q0: usize,
    q1: usize,
    out: &mut [f32],
    tile: impl Fn(&[f32], &[f32], &[f32; TILE_CH]) -> Result<[[f32; TILE_PX]; TILE_CH], Error>,
) -> Result<(), Error> {
    let (m, k) = (geo.m, geo.c * geo.kh * geo.kw);
    let plane = geo.oh * geo.ow;
    let used = q1 - q0;
    let tiles = used.div_ceil(TILE_PX);
    for ((blk, wblock), start) in packed
        .chunks_exact(k * TILE_CH)
        .enumerate()
        .zip(init.chunks_exact(TILE_CH))
    {
        let oc0 = blk * TILE_CH;
        let rows = TILE_CH.min(m - oc0);
        let start = <&[f32; TILE_CH]>::try_from(start).map_err(|_| SIZE_ERR)?;
        for (t, ptile) in panel.chunks_exact(k * TILE_PX).take(tiles).enumerate() {
            let acc = tile(ptile, wblock, start)?;
            let n = TILE_PX.min(used - t * TILE_PX);
            store(&acc, rows, oc0, q0 + t * TILE_PX, n, plane, m, out)?;
        }
    }
    Ok(())
}

/// Writes the first `n` pixels of the first `rows` tile rows (channel `oc0 + r`) to
/// `out[b, oc, p]` for pixels `q0..q0 + n` (`q = b·plane + p`).
#[allow(clippy::too_many_arguments)]
fn store(
    acc: &[[f32; TILE_PX]; TILE_CH],
    rows: usize,
    oc0: usize,
    q0: usize,
    n: usize,
    plane: usize,
    m: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    // Runs of pixels inside one image.
    let mut j = 0;
    while j < n {
        let q = q0 + j;
        let (b, p) = (q / plane, q % plane);
        let len = (plane - p).min(n - j);
        for (r, row) in acc.iter().enumerate().take(rows) {
            let start = (b * m + oc0 + r) * plane + p;
            let dst = out.get_mut(start..start + len).ok_or(SIZE_ERR)?;
            dst.copy_from_slice(row.get(j..j + len).ok_or(SIZE_ERR)?);
        }
        j += len;
    }
    Ok(())
}
