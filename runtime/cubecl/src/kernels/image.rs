//! Image kernels, NCHW (rank 3 runs as `H = 1`): Conv (channel-last kernel
//! `[C/g, KH, KW, M]`), ConvTranspose (`[M, C/g, KH, KW]`), pools and Resize. One thread per
//! output element, accumulated in the CPU executor's order (bias, then input channel, kernel
//! row, kernel column ascending).

// Kernel code takes `%` (the cubecl frontend has no `is_multiple_of`).
#![allow(clippy::manual_is_multiple_of)]

use cubecl::prelude::*;

use super::elementwise::unary_apply;

/// Geometry words shared by the image kernels (indices into `meta`).
pub mod geo {
    /// Batch.
    pub const N: usize = 0;
    /// Input channels.
    pub const C: usize = 1;
    /// Input rows.
    pub const H: usize = 2;
    /// Input columns.
    pub const W: usize = 3;
    /// Output channels.
    pub const M: usize = 4;
    /// Output rows.
    pub const OH: usize = 5;
    /// Output columns.
    pub const OW: usize = 6;
    /// Kernel rows.
    pub const KH: usize = 7;
    /// Kernel columns.
    pub const KW: usize = 8;
    /// Row stride.
    pub const SH: usize = 9;
    /// Column stride.
    pub const SW: usize = 10;
    /// Row dilation.
    pub const DH: usize = 11;
    /// Column dilation.
    pub const DW: usize = 12;
    /// Leading row padding.
    pub const PH: usize = 13;
    /// Leading column padding.
    pub const PW: usize = 14;
    /// Channel groups.
    pub const GROUPS: usize = 15;
    /// Trailing row padding (pools).
    pub const EH: usize = 16;
    /// Trailing column padding (pools).
    pub const EW: usize = 17;
    /// Number of words.
    pub const LEN: usize = 18;
}

/// ONNX `Conv`, or with `transposed` ONNX `ConvTranspose` as a gather over the input
/// positions that reach each output (see the module docs for the kernel layouts); `meta` per
/// [`geo`]; `act` is a fused activation (or
/// [`ACT_NONE`](super::elementwise::ACT_NONE)).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn conv(
    x: &Array<f32>,
    w: &Array<f32>,
    bias: &Array<f32>,
    out: &mut Array<f32>,
    meta: &Array<u32>,
    alpha: f32,
    gamma: f32,
    #[comptime] has_bias: bool,
    #[comptime] transposed: bool,
    #[comptime] act: u32,
) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let c = meta[1] as usize;
        let h = meta[2] as usize;
        let wi = meta[3] as usize;
        let m = meta[4] as usize;
        let oh = meta[5] as usize;
        let ow = meta[6] as usize;
        let kh = meta[7] as usize;
        let kw = meta[8] as usize;
        let sh = meta[9] as usize;
        let sw = meta[10] as usize;
        let dh = meta[11] as usize;
        let dw = meta[12] as usize;
        let ph = meta[13] as usize;
        let pw = meta[14] as usize;
        let groups = meta[15] as usize;
        let ox = i % ow;
        let oy = (i / ow) % oh;
        let oc = (i / (ow * oh)) % m;
        let b = i / (ow * oh * m);
        let cg = c / groups;
        let g = oc / (m / groups);
        let mut acc = 0.0f32;
        if has_bias {
            acc = bias[oc];
        }
        for ci in 0..cg {
            let plane = (b * c + g * cg + ci) * h * wi;
            if transposed {
                // oy = iy*sh + ky*dh - ph  =>  iy = (oy + ph - ky*dh) / sh
                let wbase = (oc * cg + ci) * kh * kw;
                for ky in 0..kh {
                    let num = oy + ph;
                    let kd = ky * dh;
                    if num >= kd && (num - kd) % sh == 0 && (num - kd) / sh < h {
                        let iy = (num - kd) / sh;
                        for kx in 0..kw {
                            let numx = ox + pw;
                            let kdx = kx * dw;
                            if numx >= kdx && (numx - kdx) % sw == 0 && (numx - kdx) / sw < wi {
                                let ix = (numx - kdx) / sw;
                                acc += x[plane + iy * wi + ix] * w[wbase + ky * kw + kx];
                            }
                        }
                    }
                }
            } else {
                for ky in 0..kh {
                    let yy = oy * sh + ky * dh;
                    if yy >= ph && yy - ph < h {
                        let row = plane + (yy - ph) * wi;
                        for kx in 0..kw {
                            let xx = ox * sw + kx * dw;
                            if xx >= pw && xx - pw < wi {
                                acc += x[row + xx - pw] * w[((ci * kh + ky) * kw + kx) * m + oc];
                            }
                        }
                    }
                }
            }
        }
        out[i] = unary_apply(acc, alpha, gamma, act);
    }
}

/// Max / average pooling (`kind`: 0 max, 1 average excluding padding, 2 including it).
#[cube(launch)]
pub fn pool(
    x: &Array<f32>,
    out: &mut Array<f32>,
    meta: &Array<u32>,
    neg_inf: f32,
    #[comptime] kind: u32,
) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let h = meta[2] as i32;
        let wi = meta[3] as i32;
        let oh = meta[5] as usize;
        let ow = meta[6] as usize;
        let kh = meta[7] as i32;
        let kw = meta[8] as i32;
        let sh = meta[9] as i32;
        let sw = meta[10] as i32;
        let dh = meta[11] as i32;
        let dw = meta[12] as i32;
        let ph = meta[13] as i32;
        let pw = meta[14] as i32;
        let eh = meta[16] as i32;
        let ew = meta[17] as i32;
        let ox = (i % ow) as i32;
        let oy = ((i / ow) % oh) as i32;
        let plane = (i / (ow * oh)) * (h * wi) as usize;
        let mut acc = 0.0f32;
        if kind == 0 {
            acc = neg_inf;
        }
        let mut inside = 0u32;
        let mut padded = 0u32;
        for ky in 0..kh {
            let y = oy * sh + ky * dh - ph;
            if y < h + eh {
                for kx in 0..kw {
                    let xx = ox * sw + kx * dw - pw;
                    if xx < wi + ew {
                        padded += 1;
                        if y >= 0 && xx >= 0 && y < h && xx < wi {
                            inside += 1;
                            let v = x[plane + (y * wi + xx) as usize];
                            if kind == 0 {
                                acc = select(v > acc, v, acc);
                            } else {
                                acc += v;
                            }
                        }
                    }
                }
            }
        }
        if kind == 1 {
            acc /= f32::cast_from(select(inside > 0, inside, 1));
        } else if kind == 2 {
            acc /= f32::cast_from(select(padded > 0, padded, 1));
        }
        out[i] = acc;
    }
}

/// Source coordinate of output index `o` (`coord`: 0 half_pixel, 1 pytorch_half_pixel,
/// 2 align_corners, 3 asymmetric).
#[cube]
fn resize_source(
    o: usize,
    scale: f32,
    in_len: usize,
    out_len: usize,
    #[comptime] coord: u32,
) -> f32 {
    let of = f32::cast_from(o as u32);
    let mut c = of / scale;
    if coord == 0 {
        c = (of + 0.5) / scale - 0.5;
    } else if coord == 1 {
        c = select(out_len > 1, (of + 0.5) / scale - 0.5, 0.0);
    } else if coord == 2 {
        let inl = f32::cast_from(in_len as u32);
        c = select(out_len > 1, of * (inl - 1.0) / (inl * scale - 1.0), 0.0);
    }
    c
}

/// Nearest index for a source coordinate (`mode`: 0 round prefer floor, 1 round prefer ceil,
/// 2 floor, 3 ceil), clamped to the input.
#[cube]
fn nearest_index(c: f32, last: f32, #[comptime] mode: u32) -> usize {
    let f = f32::floor(c);
    let mut r = f;
    if mode == 0 {
        r = select(c == f + 0.5, f, f32::round(c));
    } else if mode == 1 {
        r = f32::floor(c + 0.5);
    } else if mode == 3 {
        r = f32::ceil(c);
    }
    r = f32::clamp(r, 0.0, last);
    u32::cast_from(r) as usize
}

/// ONNX `Resize` of the last two axes (`mode` 0-3 nearest, 4 linear):
/// `meta = [h, w, oh, ow]`.
#[cube(launch)]
pub fn resize(
    x: &Array<f32>,
    out: &mut Array<f32>,
    meta: &Array<u32>,
    scale_h: f32,
    scale_w: f32,
    #[comptime] mode: u32,
    #[comptime] coord: u32,
) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let h = meta[0] as usize;
        let w = meta[1] as usize;
        let oh = meta[2] as usize;
        let ow = meta[3] as usize;
        let ox = i % ow;
        let oy = (i / ow) % oh;
        let plane = (i / (ow * oh)) * h * w;
        let cy = resize_source(oy, scale_h, h, oh, coord);
        let cx = resize_source(ox, scale_w, w, ow, coord);
        let lh = f32::cast_from((h - 1) as u32);
        let lw = f32::cast_from((w - 1) as u32);
        if mode == 4 {
            let cy = f32::clamp(cy, 0.0, lh);
            let cx = f32::clamp(cx, 0.0, lw);
            let fy = f32::floor(cy);
            let fx = f32::floor(cx);
            let y0 = u32::cast_from(fy) as usize;
            let x0 = u32::cast_from(fx) as usize;
            let y1 = select(y0 + 1 < h, y0 + 1, h - 1);
            let x1 = select(x0 + 1 < w, x0 + 1, w - 1);
            let ty = cy - fy;
            let tx = cx - fx;
            let a = x[plane + y0 * w + x0];
            let b = x[plane + y0 * w + x1];
            let c = x[plane + y1 * w + x0];
            let d = x[plane + y1 * w + x1];
            let top = a + (b - a) * tx;
            let bottom = c + (d - c) * tx;
            out[i] = top + (bottom - top) * ty;
        } else {
            let y = nearest_index(cy, lh, mode);
            let xx = nearest_index(cx, lw, mode);
            out[i] = x[plane + y * w + xx];
        }
    }
}
