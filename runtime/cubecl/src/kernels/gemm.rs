//! The GEMM behind `Dense` and `MatMul`: 64×64 output tiles, 16×16 threads of 4×4 outputs,
//! operands staged through shared memory 16 deep, with the bias and an activation fused
//! into the epilogue.

use cubecl::prelude::*;

use super::elementwise::{unary_apply, ACT_NONE};

/// Output rows / columns of one cube.
pub const TILE: u32 = 64;
/// Depth of one shared-memory stage.
const DEPTH: usize = 16;
/// Threads per cube side.
pub const THREADS: u32 = 16;

/// `out[z] = act(a[z] (m×k) · b[z] (k×n) + bias)` for every batch index `z` (`CUBE_POS_Z`).
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
) {
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
    let row0 = CUBE_POS_Y as usize * 64;
    let col0 = CUBE_POS_X as usize * 64;

    let mut sa = SharedMemory::<f32>::new(64 * DEPTH);
    let mut sb = SharedMemory::<f32>::new(DEPTH * 64);
    let mut acc = Array::<f32>::new(16usize);
    #[unroll]
    for i in 0..16usize {
        acc[i] = 0.0;
    }
    let tiles = k.div_ceil(DEPTH);
    for t in 0..tiles {
        let k0 = t * DEPTH;
        #[unroll]
        for j in 0..4usize {
            let e = tid + j * 256;
            // a tile: 64 rows × 16 depth
            let ar = e / DEPTH;
            let ac = e % DEPTH;
            let gr = row0 + ar;
            let gc = k0 + ac;
            let in_a = gr < m && gc < k;
            sa[e] = select(in_a, a[a_base + select(in_a, gr * k + gc, 0)], 0.0);
            // b tile: 16 depth × 64 columns
            let br = e / 64;
            let bc = e % 64;
            let grb = k0 + br;
            let gcb = col0 + bc;
            let in_b = grb < k && gcb < n;
            sb[e] = select(in_b, b[b_base + select(in_b, grb * n + gcb, 0)], 0.0);
        }
        sync_cube();
        #[unroll]
        for kk in 0..DEPTH {
            #[unroll]
            for i in 0..4usize {
                let av = sa[(ty + 16 * i) * DEPTH + kk];
                #[unroll]
                for j in 0..4usize {
                    acc[i * 4 + j] += av * sb[kk * 64 + tx + 16 * j];
                }
            }
        }
        sync_cube();
    }
    #[unroll]
    for i in 0..4usize {
        let r = row0 + ty + 16 * i;
        #[unroll]
        for j in 0..4usize {
            let c = col0 + tx + 16 * j;
            if r < m && c < n {
                let mut y = acc[i * 4 + j];
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
