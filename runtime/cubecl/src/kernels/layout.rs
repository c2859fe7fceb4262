//! Data-movement kernels: strided copies (Transpose, Slice, Expand, Concat parts, plain
//! copies), Gather, Pad, and the input assembly of the velocity field (`t` fills, `xt` rows).

use cubecl::prelude::*;

use super::elementwise::strided_offset;

/// `dst[dst_base + Σ i_k·dst_k] = src[src_base + Σ i_k·src_k]` over the view `dims`:
/// `meta = [rank, dims.., src strides.., dst strides.., src_base, dst_base]`; `count` is the
/// number of view elements.
#[cube(launch)]
pub fn strided_copy(src: &Array<f32>, dst: &mut Array<f32>, meta: &Array<u32>, count: u32) {
    let i = ABSOLUTE_POS;
    if i < count as usize {
        let rank = meta[0] as usize;
        let so = meta[1 + 3 * rank] as usize + strided_offset(meta, i, rank, 1, 1 + rank);
        let d_off = meta[2 + 3 * rank] as usize + strided_offset(meta, i, rank, 1, 1 + 2 * rank);
        dst[d_off] = src[so];
    }
}

/// `dst[dst_off + i] = src[src_off + i]` for `i < count`.
#[cube(launch)]
pub fn copy_range(src: &Array<f32>, dst: &mut Array<f32>, src_off: u32, dst_off: u32, count: u32) {
    let i = ABSOLUTE_POS;
    if i < count as usize {
        dst[dst_off as usize + i] = src[src_off as usize + i];
    }
}

/// `out[m, j] = table[idx[m], j]` (`inner` values per table row, `rows` table rows); an
/// index that is not an integer in `0..rows` gives `nan` (NaN, passed in: WGSL has no NaN
/// literal), caught by the solver's final finite check.
#[cube(launch)]
pub fn gather(
    table: &Array<f32>,
    idx: &Array<f32>,
    out: &mut Array<f32>,
    inner: u32,
    rows: u32,
    nan: f32,
) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let m = i / inner as usize;
        let j = i % inner as usize;
        let v = idx[m];
        let ok = v >= 0.0 && v < f32::cast_from(rows) && f32::floor(v) == v;
        let r = u32::cast_from(select(ok, v, 0.0)) as usize;
        let x = table[r * inner as usize + j];
        out[i] = select(ok, x, nan);
    }
}

/// `out[i] = value`.
#[cube(launch)]
pub fn fill(out: &mut Array<f32>, value: f32, count: u32) {
    let i = ABSOLUTE_POS;
    if i < count as usize {
        out[i] = value;
    }
}

/// `xt[r] = [x[r, 0..d], t]`.
#[cube(launch)]
pub fn assemble_xt(x: &Array<f32>, xt: &mut Array<f32>, d: u32, t: f32, count: u32) {
    let i = ABSOLUTE_POS;
    if i < count as usize {
        let w = d as usize + 1;
        let r = i / w;
        let j = i % w;
        let v = x[r * d as usize + select(j < d as usize, j, 0)];
        xt[i] = select(j < d as usize, v, t);
    }
}

/// Source index along one axis for a padded position `p` (`len` input elements), or
/// `len` when the position is constant padding. Modes: 0 constant, 1 reflect, 2 edge, 3 wrap.
#[cube]
fn pad_source(p: i32, len: i32, #[comptime] mode: u32) -> i32 {
    let mut s = p;
    if p < 0 || p >= len {
        if mode == 0 {
            s = len;
        } else if mode == 2 {
            s = select(p < 0, 0, len - 1);
        } else if mode == 3 {
            let q = p % len;
            s = select(q < 0, q + len, q);
        } else {
            let period = select(len > 1, 2 * (len - 1), 1);
            let mut q = p % period;
            q = select(q < 0, q + period, q);
            s = select(q < len, q, period - q);
            s = select(len > 1, s, 0);
        }
    }
    s
}

/// ONNX `Pad`: `meta = [rank, out dims.., in dims.., begin..]`.
#[cube(launch)]
pub fn pad(
    x: &Array<f32>,
    out: &mut Array<f32>,
    meta: &Array<u32>,
    value: f32,
    #[comptime] mode: u32,
) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let rank = meta[0] as usize;
        let mut rem = i;
        let mut off = 0usize;
        let mut stride = 1usize;
        let mut inside = true;
        for kk in 0..rank {
            let k = rank - 1 - kk;
            let d = meta[1 + k] as usize;
            let c = (rem % d) as i32;
            rem /= d;
            let len = meta[1 + rank + k] as i32;
            let s = pad_source(c - meta[1 + 2 * rank + k] as i32, len, mode);
            inside = inside && s < len;
            off += select(s < len, s, 0) as usize * stride;
            stride *= len as usize;
        }
        out[i] = select(inside, x[off], value);
    }
}
