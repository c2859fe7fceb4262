//! The GEMM behind `Dense` and `MatMul`: 16×16 threads per cube, each accumulating a
//! `per × per` block of outputs (`per` = 4: 64×64 tiles staged 16 deep, for narrow
//! products; `per` = 8: 128×128 tiles staged 8 deep, twice the multiply-adds per
//! shared-memory load, for wide ones), the operands staged through shared memory, with the
//! bias and an activation fused into the epilogue. Every output element is summed over `k`
//! in ascending order.

use cubecl::prelude::*;

use super::elementwise::{strided_offset, unary_apply};

/// Threads per cube side.
pub const THREADS: u32 = 16;
/// Elements of each shared-memory stage (`tile × depth`, the same for both shapes).
const STAGE: usize = 1024;

/// Output rows / columns of one cube for a micro-tile of `per × per`.
pub const fn tile(per: u32) -> u32 {
    THREADS * per
}

/// Element `e` of the `width`-column tile at `(row, col)` of the row-major `rows × cols`
/// matrix at `src[base..]`; 0 outside the matrix.
#[cube]
#[allow(clippy::too_many_arguments)]
fn tile_value(
    src: &Array<f32>,
    base: usize,
    e: usize,
    #[comptime] width: usize,
    row: usize,
    col: usize,
    rows: usize,
    cols: usize,
) -> f32 {
    let r = row + e / width;
    let c = col + e % width;
    let inside = r < rows && c < cols;
    select(inside, src[base + select(inside, r * cols + c, 0)], 0.0)
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
    let a_base = strided_offset(meta, z, rank, 4, 4 + rank);
    let b_base = strided_offset(meta, z, rank, 4, 4 + 2 * rank);
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
            // a tile: `tile` rows × `depth`; b tile: `depth` × `tile` columns
            sa[e] = tile_value(a, a_base, e, depth, row0, k0, m, k);
            sb[e] = tile_value(b, b_base, e, tile, k0, col0, k, n);
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
                out[out_base + r * n + c] = unary_apply(y, alpha, gamma, act);
            }
        }
    }
}
