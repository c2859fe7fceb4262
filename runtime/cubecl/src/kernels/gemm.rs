//! The GEMM behind `Dense` and `MatMul`: 16×16 threads per cube, each accumulating a
//! `per × per` block of outputs (`per` = 4: 64×64 tiles staged 16 deep, for narrow
//! products; `per` = 8: 128×128 tiles staged 8 deep, twice the multiply-adds per
//! shared-memory load, for wide ones), the operands staged through shared memory, with the
//! bias and an activation fused into the epilogue. Every output element is summed over `k`
//! in ascending order.

use cubecl::prelude::*;

use super::elementwise::{unary_apply, ACT_NONE};

/// Threads per cube side.
pub const THREADS: u32 = 16;
/// Elements of each shared-memory stage (`tile × depth`, the same for both shapes).
const STAGE: usize = 1024;

/// Output rows / columns of one cube for a micro-tile of `per × per`.
pub const fn tile(per: u32) -> u32 {
    THREADS * per
}

/// `out[z] = act(a[z] (m×k) · b[z] (k×n) + bias)` for every batch index `z` (`CUBE_POS_Z`),
/// with `per × per` outputs per thread (4 or 8).
///
/// `meta = [m, n, k, batch rank r, out batch dims (r), a batch strides (r), b batch strides
/// (r)]` (strides in elements, 0 for a broadcast operand); `out` batches are contiguous.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    a: &Array<f32>,
    b: &Array<f32>,
    bias: &Array<f32>,
    out: &mut Array<f32>,
    meta: &Array<u32>,
    alpha: f32,
    gamma: f32,
    #[comptime] has_bias: bool,
    #[comptime] act: u32,
    #[comptime] per: usize,
) {
    let tile = comptime!(16 * per);
    let depth = comptime!(STAGE / (16 * per));
    let cells = comptime!(per * per);
    let m = meta[0] as usize;
    let n = meta[1] as usize;
    let k = meta[2] as usize;
    let rank = meta[3] as usize;
    let z = CUBE_POS_Z as usize;
    // Batch offsets of a and b from the batch index.
    let mut rem = z;
    let mut a_base = 0usize;
    let mut b_base = 0usize;
    for kk in 0..rank {
        let ax = rank - 1 - kk;
        let d = meta[4 + ax] as usize;
        let c = rem % d;
        rem /= d;
        a_base += c * meta[4 + rank + ax] as usize;
        b_base += c * meta[4 + 2 * rank + ax] as usize;
    }
    let out_base = z * m * n;

    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let tid = ty * 16 + tx;
    let row0 = CUBE_POS_Y as usize * tile;
    let col0 = CUBE_POS_X as usize * tile;

    let mut sa = SharedMemory::<f32>::new(STAGE);
    let mut sb = SharedMemory::<f32>::new(STAGE);
    let mut acc = Array::<f32>::new(cells);
    let mut bf = Array::<f32>::new(per);
    #[unroll]
    for i in 0..cells {
        acc[i] = 0.0;
    }
    let tiles = k.div_ceil(depth);
    for t in 0..tiles {
        let k0 = t * depth;
        #[unroll]
        for j in 0..4usize {
            let e = tid + j * 256;
            // a tile: `tile` rows × `depth`
            let ar = e / depth;
            let ac = e % depth;
            let gr = row0 + ar;
            let gc = k0 + ac;
            let in_a = gr < m && gc < k;
            sa[e] = select(in_a, a[a_base + select(in_a, gr * k + gc, 0)], 0.0);
            // b tile: `depth` × `tile` columns
            let br = e / tile;
            let bc = e % tile;
            let grb = k0 + br;
            let gcb = col0 + bc;
            let in_b = grb < k && gcb < n;
            sb[e] = select(in_b, b[b_base + select(in_b, grb * n + gcb, 0)], 0.0);
        }
        sync_cube();
        #[unroll]
        for kk in 0..depth {
            #[unroll]
            for j in 0..per {
                bf[j] = sb[kk * tile + tx + 16 * j];
            }
            #[unroll]
            for i in 0..per {
                let av = sa[(ty + 16 * i) * depth + kk];
                #[unroll]
                for j in 0..per {
                    acc[i * per + j] += av * bf[j];
                }
            }
        }
        sync_cube();
    }
    #[unroll]
    for i in 0..per {
        let r = row0 + ty + 16 * i;
        #[unroll]
        for j in 0..per {
            let c = col0 + tx + 16 * j;
            if r < m && c < n {
                let mut y = acc[i * per + j];
                if has_bias {
                    y += bias[c];
                }
                if act != ACT_NONE {
                    y = unary_apply(y, alpha, gamma, act);
                }
                out[out_base + r * n + c] = y;
            }
        }
    }
}
