//! Convolution kernels: Conv, ConvTranspose and the pools (MaxPool, AveragePool), all NCHW.
//!
//! Rank 4 is `[N, C, H, W]`; rank 3 is `[N, C, L]`, handled as `H = 1`. Each output element
//! is accumulated in one fixed order — input channel, then kernel row, then kernel column,
//! all ascending, starting from the bias (or `0.0`) — whatever the batch size or the CPU.
//! Padding contributes nothing (it is skipped, not multiplied).

use super::exact::mul_add;
use super::weights::{load_bias, WeightRuns, Weights};
use super::{check_len, Dims, SIZE_ERR};
use crate::Error;

/// Window geometry shared by convolutions and pools; index 0 is the row axis (`H`, unit for
/// 1-D), index 1 the column axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// Stride per spatial axis (>= 1).
    pub stride: [u16; 2],
    /// Dilation per spatial axis (>= 1).
    pub dilation: [u16; 2],
    /// Padding before the first element per spatial axis.
    pub pad_begin: [u16; 2],
    /// Padding after the last element per spatial axis.
    pub pad_end: [u16; 2],
}

impl Window {
    /// Stride 1, dilation 1, no padding.
    pub const UNIT: Window = Window {
        stride: [1, 1],
        dilation: [1, 1],
        pad_begin: [0, 0],
        pad_end: [0, 0],
    };

    pub(super) fn get(&self, axis: usize) -> (usize, usize, usize, usize) {
        let pick = |v: [u16; 2]| usize::from(if axis == 0 { v[0] } else { v[1] });
        (
            pick(self.stride),
            pick(self.dilation),
            pick(self.pad_begin),
            pick(self.pad_end),
        )
    }

    /// Output length along `axis` for an input of `len` and a kernel of `k` (`None` when the
    /// window does not fit even once). `ceil` rounds the window count up (pools' `ceil_mode`).
    pub fn out_len(&self, axis: usize, len: usize, k: usize, ceil: bool) -> Option<usize> {
        let (s, d, pb, pe) = self.get(axis);
        if s == 0 || d == 0 || k == 0 {
            return None;
        }
        let span = d.checked_mul(k - 1)?.checked_add(1)?;
        let padded = len.checked_add(pb)?.checked_add(pe)?;
        let room = padded.checked_sub(span)?;
        let n = if ceil { room.div_ceil(s) } else { room / s };
        // ceil_mode: the last window must start inside the input or the leading pad.
        let n = if ceil && n > 0 && n * s >= len + pb {
            n - 1
        } else {
            n
        };
        n.checked_add(1)
    }

    /// Output length of a transposed convolution along `axis` (`None` when not positive).
    pub fn transposed_len(
        &self,
        axis: usize,
        len: usize,
        k: usize,
        out_pad: usize,
    ) -> Option<usize> {
        let (s, d, pb, pe) = self.get(axis);
        let full = s
            .checked_mul(len.checked_sub(1)?)?
            .checked_add(out_pad)?
            .checked_add(d.checked_mul(k.checked_sub(1)?)?)?
            .checked_add(1)?;
        full.checked_sub(pb.checked_add(pe)?).filter(|n| *n > 0)
    }

    pub(super) fn valid(&self) -> bool {
        self.stride.iter().chain(&self.dilation).all(|v| *v >= 1)
    }
}

/// `bias[oc]` (dequantized), or 0 without a bias.
fn bias_of(bias: Option<Weights<'_>>, oc: usize) -> Result<f32, Error> {
    let mut v = [0f32];
    load_bias(bias, oc, &mut v).ok_or(SIZE_ERR)?;
    Ok(v[0])
}

/// `(N, C, H, W)` of a rank-3 or rank-4 NCHW tensor.
pub(super) fn nchw(d: &Dims) -> Result<[usize; 4], Error> {
    let s = d.as_slice();
    match *s {
        [n, c, l] => Ok([n, c, 1, l]),
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(SIZE_ERR),
    }
}

/// Output channels accumulated together by [`conv`].
const CONV_TILE: usize = 16;
/// Output pixels (along a row) accumulated together by [`conv`].
const CONV_PIXELS: usize = 4;

/// ONNX `Conv`: `x [N, C, (H,) W]`, `w [C/groups, (KH,) KW, M]` (channel-last: the exporter
/// reorders ONNX's `[M, C/groups, KH, KW]` so the output channels of one tap are
/// contiguous; output channel `oc` belongs to group `oc / (M / groups)`), optional
/// `bias [M]` → `out [N, M, (OH,) OW]`.
///
/// Tiles of 4 output pixels × 16 output channels accumulate together (vectorized over the
/// channels, each weight row loaded once per tile), each element in the fixed order bias, then (input channel, kernel row,
/// kernel column) ascending. With feature `std` (hosts), ungrouped convolutions run as
/// im2col + a register-tiled matrix product instead (compiled for AVX2 and FMA or AVX-512F
/// where the CPU has them), which gives the same bits (`conv_gemm`'s docs say why). Every
/// multiply-add is fused (rounded once).
///
/// Errors: [`Error::Invalid`] when the dims are inconsistent with each other or the window.
#[allow(clippy::too_many_arguments)]
// Its own frame: inlined into the graph loop (a firmware with one call site), its 4.8 KB of
// stack buffers sat under every other node's (digits_unet int8: stack 8.1 -> 12.3 KB).
#[inline(never)]
pub fn conv(
    x: &[f32],
    xd: &Dims,
    w: Weights<'_>,
    wd: &Dims,
    bias: Option<Weights<'_>>,
    groups: usize,
    win: &Window,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    #[cfg(feature = "std")]
    if let Some(done) = super::conv_gemm::conv(x, xd, w, wd, bias, groups, win, out, od) {
        return done;
    }
    conv_direct(x, xd, w, wd, bias, groups, win, out, od)
}

/// [`conv`] by the direct kernel (the one the no_std runtime always runs; with `std` the
/// panel kernel takes over where it gives the same bits).
///
/// Errors: as [`conv`].
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_direct(
    x: &[f32],
    xd: &Dims,
    w: Weights<'_>,
    wd: &Dims,
    bias: Option<Weights<'_>>,
    groups: usize,
    win: &Window,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    let Some(w) = w.as_f32() else {
        #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
        if let Some(done) = super::arm::conv_typed(x, xd, w, wd, bias, groups, win, out, od) {
            return done;
        }
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if super::x86::has_avx2() {
            // SAFETY: `conv_avx2` only needs AVX2 and FMA, which the CPU has (checked just
            // above); its body is safe code.
            return unsafe { conv_avx2(x, xd, w, wd, bias, groups, win, out, od) };
        }
        return conv_impl(x, xd, w, wd, bias, groups, win, out, od);
    };
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    if let Some(done) = super::arm::conv(x, xd, w, wd, bias, groups, win, out, od) {
        return done;
    }
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if super::x86::has_avx2() {
        // SAFETY: `conv_avx2` only needs AVX2 and FMA, which the CPU has (checked just
        // above); its body is safe code.
        return unsafe { conv_avx2(x, xd, w, wd, bias, groups, win, out, od) };
    }
    conv_impl(x, xd, w, wd, bias, groups, win, out, od)
}

/// [`conv`] compiled for AVX2 and FMA, with f32 or stored (f16, bf16, int8) weights.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn conv_avx2<W: WeightRuns>(
    x: &[f32],
    xd: &Dims,
    w: W,
    wd: &Dims,
    bias: Option<Weights<'_>>,
    groups: usize,
    win: &Window,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    conv_impl(x, xd, w, wd, bias, groups, win, out, od)
}

/// The sizes of a convolution, checked against each other, the window and the buffers.
pub(super) struct ConvGeometry {
    /// Batch, input channels, input rows and columns.
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) wi: usize,
    /// Input channels per group, kernel rows and columns, output channels.
    pub(super) cg: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) m: usize,
    /// Output rows and columns.
    pub(super) oh: usize,
    pub(super) ow: usize,
}

impl ConvGeometry {
    /// `x [N, C, H, W]` (or rank 3), a kernel of `[C/g, KH, KW, M]` (whatever its layout,
    /// of rank `wd`'s) and `out [N, M, OH, OW]`, checked: lengths, ranks, groups, the bias
    /// length and the window's output size.
    ///
    /// Errors: anything inconsistent ([`Error::Invalid`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn check(
        x: &[f32],
        xd: &Dims,
        kernel: [usize; 4],
        wd: &Dims,
        bias: Option<Weights<'_>>,
        groups: usize,
        win: &Window,
        out: &[f32],
        od: &Dims,
    ) -> Result<ConvGeometry, Error> {
        check_len(x.len(), xd)?;
        check_len(out.len(), od)?;
        let [n, c, h, wi] = nchw(xd)?;
        let [cg, kh, kw, m] = kernel;
        let [on, om, oh, ow] = nchw(od)?;
        let ok = xd.rank() == wd.rank()
            && xd.rank() == od.rank()
            && win.valid()
            && groups >= 1
            && c % groups == 0
            && m % groups == 0
            && c / groups == cg
            && on == n
            && om == m
            && bias.is_none_or(|b| b.len() == m)
            && win.out_len(0, h, kh, false) == Some(oh)
            && win.out_len(1, wi, kw, false) == Some(ow);
        if !ok {
            return Err(SIZE_ERR);
        }
        Ok(ConvGeometry {
            n,
            c,
            h,
            wi,
            cg,
            kh,
            kw,
            m,
            oh,
            ow,
        })
    }

    /// Image `b`'s input planes (`C × H × W`) of `x` and output planes (`M × OH × OW`) of
    /// `out`.
    ///
    /// Errors: `b` past the batch ([`Error::Invalid`]).
    pub(super) fn image<'x, 'o>(
        &self,
        b: usize,
        x: &'x [f32],
        out: &'o mut [f32],
    ) -> Result<(&'x [f32], &'o mut [f32]), Error> {
        let (plane_in, plane_out) = (self.h * self.wi, self.oh * self.ow);
        let (cin, cout) = (self.c * plane_in, self.m * plane_out);
        let xb = x.get(b * cin..(b + 1) * cin).ok_or(SIZE_ERR)?;
        let ob = out.get_mut(b * cout..(b + 1) * cout).ok_or(SIZE_ERR)?;
        Ok((xb, ob))
    }
}

/// `(C/g, KH, KW, M)` of a channel-last conv kernel (rank 4, or rank 3 with `KH = 1`).
pub(super) fn kernel_dims(d: &Dims) -> Result<[usize; 4], Error> {
    match *d.as_slice() {
        [cg, kw, m] => Ok([cg, 1, kw, m]),
        [cg, kh, kw, m] => Ok([cg, kh, kw, m]),
        _ => Err(SIZE_ERR),
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn conv_impl<W: WeightRuns>(
    x: &[f32],
    xd: &Dims,
    w: W,
    wd: &Dims,
    bias: Option<Weights<'_>>,
    groups: usize,
    win: &Window,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    check_len(w.total(), wd)?;
    let geo = ConvGeometry::check(x, xd, kernel_dims(wd)?, wd, bias, groups, win, out, od)?;
    let ConvGeometry {
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
    let (sh, dh, ph, _) = win.get(0);
    let (sw, dw, pw, _) = win.get(1);
    let mg = m / groups;
    let plane_in = h * wi;
    let plane_out = oh * ow;
    for b in 0..n {
        let (xb, ob) = geo.image(b, x, out)?;
        for g in 0..groups {
            for c0 in (0..mg).step_by(CONV_TILE) {
                let oc0 = g * mg + c0;
                let cn = CONV_TILE.min(mg - c0);
                let mut init = [0f32; CONV_TILE];
                load_bias(bias, oc0, init.get_mut(..cn).ok_or(SIZE_ERR)?).ok_or(SIZE_ERR)?;
                for oy in 0..oh {
                    let mut ox = 0;
                    while ox < ow {
                        let np = CONV_PIXELS.min(ow - ox);
                        // acc[p][j]: output channel oc0 + j at pixel (oy, ox + p).
                        let mut acc = [init; CONV_PIXELS];
                        let mut w_buf = [0f32; CONV_TILE];
                        for ci in 0..cg {
                            let x_plane = xb
                                .get((g * cg + ci) * plane_in..(g * cg + ci + 1) * plane_in)
                                .ok_or(SIZE_ERR)?;
                            for ky in 0..kh {
                                let Some(iy) =
                                    (oy * sh + ky * dh).checked_sub(ph).filter(|v| *v < h)
                                else {
                                    continue;
                                };
                                let x_row = x_plane.get(iy * wi..(iy + 1) * wi).ok_or(SIZE_ERR)?;
                                for kx in 0..kw {
                                    let tap = ((ci * kh + ky) * kw + kx) * m + oc0;
                                    let w_row = w.run(tap, cn, &mut w_buf).ok_or(SIZE_ERR)?;
                                    for (p, a) in acc.iter_mut().enumerate().take(np) {
                                        let ix = ((ox + p) * sw + kx * dw).checked_sub(pw);
                                        let Some(xv) = ix.and_then(|i| x_row.get(i)) else {
                                            continue;
                                        };
                                        axpy(a, w_row, *xv);
                                    }
                                }
                            }
                        }
                        for (p, a) in acc.iter().enumerate().take(np) {
                            let pix = oy * ow + ox + p;
                            for (j, v) in a.iter().enumerate().take(cn) {
                                *ob.get_mut((oc0 + j) * plane_out + pix).ok_or(SIZE_ERR)? = *v;
                            }
                        }
                        ox += np;
                    }
                }
            }
        }
    }
    Ok(())
}

/// `acc[j] += x * w[j]` for the first `w.len()` channels (a full tile unrolls).
#[inline(always)]
fn axpy(acc: &mut [f32; CONV_TILE], w: &[f32], x: f32) {
    if let Ok(w) = <&[f32; CONV_TILE]>::try_from(w) {
        for (a, wv) in acc.iter_mut().zip(w) {
            *a = mul_add(x, *wv, *a);
        }
    } else {
        for (a, wv) in acc.iter_mut().zip(w) {
            *a = mul_add(x, *wv, *a);
        }
    }
}

/// ONNX `ConvTranspose`: `x [N, C, (H,) W]`, `w [M, C/groups, (KH,) KW]` (the layout of
/// [`conv`]'s kernel; ONNX stores `[C, M/groups, ..]`, the exporter reorders it), optional
/// `bias [M]` → `out [N, M, (OH,) OW]` with `OH = s (H - 1) + out_pad + d (KH - 1) + 1 -
/// pads`. Each output sums its contributions in (input channel, kernel row, kernel column)
/// order.
///
/// Errors: [`Error::Invalid`] when the dims are inconsistent.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose(
    x: &[f32],
    xd: &Dims,
    w: Weights<'_>,
    wd: &Dims,
    bias: Option<Weights<'_>>,
    groups: usize,
    win: &Window,
    out_pad: [u16; 2],
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if super::x86::has_avx2() {
        // SAFETY: `conv_transpose_avx2` only needs AVX2 and FMA, which the CPU has (checked
        // just above); its body is safe code.
        return unsafe { conv_transpose_avx2(x, xd, w, wd, bias, groups, win, out_pad, out, od) };
    }
    conv_transpose_impl(x, xd, w, wd, bias, groups, win, out_pad, out, od)
}

/// [`conv_transpose`] compiled for AVX2 and FMA.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn conv_transpose_avx2(
    x: &[f32],
    xd: &Dims,
    w: Weights<'_>,
    wd: &Dims,
    bias: Option<Weights<'_>>,
    groups: usize,
    win: &Window,
    out_pad: [u16; 2],
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    conv_transpose_impl(x, xd, w, wd, bias, groups, win, out_pad, out, od)
}

/// The body of [`conv_transpose`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn conv_transpose_impl(
    x: &[f32],
    xd: &Dims,
    w: Weights<'_>,
    wd: &Dims,
    bias: Option<Weights<'_>>,
    groups: usize,
    win: &Window,
    out_pad: [u16; 2],
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    check_len(x.len(), xd)?;
    check_len(w.len(), wd)?;
    check_len(out.len(), od)?;
    let [n, c, h, wi] = nchw(xd)?;
    let [wm, cg, kh, kw] = nchw(wd)?;
    let [on, m, oh, ow] = nchw(od)?;
    let ok = xd.rank() == wd.rank()
        && xd.rank() == od.rank()
        && win.valid()
        && groups >= 1
        && wm == m
        && m % groups == 0
        && cg * groups == c
        && on == n
        && bias.is_none_or(|b| b.len() == m)
        && win.transposed_len(0, h, kh, usize::from(out_pad[0])) == Some(oh)
        && win.transposed_len(1, wi, kw, usize::from(out_pad[1])) == Some(ow);
    if !ok {
        return Err(SIZE_ERR);
    }
    let (sh, dh, ph, _) = win.get(0);
    let (sw, dw, pw, _) = win.get(1);
    let mg = m / groups;
    let plane_in = h * wi;
    let plane_out = oh * ow;
    for b in 0..n {
        for oc in 0..m {
            let g = oc / mg;
            let o_plane = out
                .get_mut((b * m + oc) * plane_out..(b * m + oc + 1) * plane_out)
                .ok_or(SIZE_ERR)?;
            o_plane.fill(bias_of(bias, oc)?);
            for ci in 0..cg {
                let ic = g * cg + ci;
                let x_plane = x
                    .get((b * c + ic) * plane_in..(b * c + ic + 1) * plane_in)
                    .ok_or(SIZE_ERR)?;
                let w_base = (oc * cg + ci) * kh * kw;
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wv = w.get(w_base + ky * kw + kx).ok_or(SIZE_ERR)?;
                        for iy in 0..h {
                            // oy = iy*sh + ky*dh - ph must be in 0..oh.
                            let Some(oy) = (iy * sh + ky * dh).checked_sub(ph) else {
                                continue;
                            };
                            if oy >= oh {
                                continue;
                            }
                            let x_row = x_plane.get(iy * wi..(iy + 1) * wi).ok_or(SIZE_ERR)?;
                            let o_row = o_plane.get_mut(oy * ow..(oy + 1) * ow).ok_or(SIZE_ERR)?;
                            for (ix, xv) in x_row.iter().enumerate() {
                                let ox = (ix * sw + kx * dw).checked_sub(pw);
                                if let Some(o) = ox.and_then(|ox| o_row.get_mut(ox)) {
                                    *o = mul_add(*xv, wv, *o);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// What a pooling window computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolKind {
    /// Largest element of the window (padding ignored; NaN elements are skipped).
    Max,
    /// Mean of the window's elements inside the input (`count_include_pad = 0`).
    AverageExcludePad,
    /// Sum of the window's elements divided by the number of window positions inside the
    /// padded input (`count_include_pad = 1`).
    AverageIncludePad,
}

impl PoolKind {
    /// File code (max 0, average excluding pad 1, average including pad 2).
    pub fn code(self) -> u32 {
        match self {
            PoolKind::Max => 0,
            PoolKind::AverageExcludePad => 1,
            PoolKind::AverageIncludePad => 2,
        }
    }

    /// Inverse of [`PoolKind::code`].
    pub fn from_code(c: u32) -> Option<PoolKind> {
        Some(match c {
            0 => PoolKind::Max,
            1 => PoolKind::AverageExcludePad,
            2 => PoolKind::AverageIncludePad,
            _ => return None,
        })
    }
}

/// ONNX `MaxPool` / `AveragePool` over the spatial axes of `x [N, C, (H,) W]` with a
/// `kernel = [KH, KW]` window (KH = 1 for 1-D); the output dims decide `ceil_mode`.
///
/// Errors: [`Error::Invalid`] when the output dims do not match the window (floor or ceil).
pub fn pool(
    kind: PoolKind,
    x: &[f32],
    xd: &Dims,
    kernel: [usize; 2],
    win: &Window,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    check_len(x.len(), xd)?;
    check_len(out.len(), od)?;
    let [n, c, h, wi] = nchw(xd)?;
    let [on, oc, oh, ow] = nchw(od)?;
    let [kh, kw] = kernel;
    let fits = |axis: usize, len: usize, k: usize, o: usize| {
        win.out_len(axis, len, k, false) == Some(o) || win.out_len(axis, len, k, true) == Some(o)
    };
    if xd.rank() != od.rank()
        || !win.valid()
        || on != n
        || oc != c
        || !fits(0, h, kh, oh)
        || !fits(1, wi, kw, ow)
    {
        return Err(SIZE_ERR);
    }
    let (sh, dh, ph, eh) = win.get(0);
    let (sw, dw, pw, ew) = win.get(1);
    for (x_plane, o_plane) in x.chunks_exact(h * wi).zip(out.chunks_exact_mut(oh * ow)) {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = match kind {
                    PoolKind::Max => f32::NEG_INFINITY,
                    _ => 0.0,
                };
                let (mut inside, mut padded) = (0usize, 0usize);
                for ky in 0..kh {
                    let y = (oy * sh + ky * dh) as isize - ph as isize;
                    if y >= (h + eh) as isize {
                        continue;
                    }
                    for kx in 0..kw {
                        let xx = (ox * sw + kx * dw) as isize - pw as isize;
                        if xx >= (wi + ew) as isize {
                            continue;
                        }
                        padded += 1;
                        if y < 0 || xx < 0 || y >= h as isize || xx >= wi as isize {
                            continue;
                        }
                        inside += 1;
                        let v = *x_plane.get(y as usize * wi + xx as usize).ok_or(SIZE_ERR)?;
                        match kind {
                            PoolKind::Max => {
                                if v > acc {
                                    acc = v;
                                }
                            }
                            _ => acc += v,
                        }
                    }
                }
                *o_plane.get_mut(oy * ow + ox).ok_or(SIZE_ERR)? = match kind {
                    PoolKind::Max => acc,
                    PoolKind::AverageExcludePad => acc / inside.max(1) as f32,
                    PoolKind::AverageIncludePad => acc / padded.max(1) as f32,
                };
            }
        }
    }
    Ok(())
}
