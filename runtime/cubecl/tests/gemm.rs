//! The GEMM kernel in both shapes (4×4 and 8×8 outputs per thread) against a plain f64 loop,
//! on sizes that are not multiples of any tile, with bias, a fused activation and a
//! broadcast batch (wgpu: lavapipe in CI).

use flowrt_cubecl::cubecl::prelude::*;
use flowrt_cubecl::cubecl::wgpu::WgpuRuntime;
use flowrt_cubecl::kernels::gemm;
use flowrt_cubecl::Gpu;

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            (((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) % 2001) as f32
                / 1000.0
                - 1.0
        })
        .collect()
}

#[test]
fn gemm_both_shapes_match_a_reference() {
    let gpu = Gpu::wgpu().expect("wgpu adapter (scripts/test.sh installs lavapipe)");
    let client = WgpuRuntime::client(&Default::default());
    // (m, n, k, batches of a; b is shared: broadcast)
    for (m, n, k, batches, per) in [
        (37, 19, 5, 1, 4u32),
        (130, 131, 17, 2, 8),
        (200, 129, 3, 1, 8),
    ] {
        let a = values(batches * m * k, 1);
        let b = values(k * n, 2);
        let bias = values(n, 3);
        let mut meta = vec![m as u32, n as u32, k as u32];
        if batches > 1 {
            meta.extend([1, batches as u32, (m * k) as u32, 0]);
        } else {
            meta.push(0);
        }
        let ha = gpu.upload(&a);
        let hb = gpu.upload(&b);
        let hbias = gpu.upload(&bias);
        let out = gpu.empty(batches * m * n);
        let hm = client.create_from_slice(u32::as_bytes(&meta));
        let t = gemm::tile(per) as usize;
        let grid = CubeCount::Static(n.div_ceil(t) as u32, m.div_ceil(t) as u32, batches as u32);
        unsafe {
            gemm::gemm::launch::<WgpuRuntime>(
                &client,
                grid,
                CubeDim::new_2d(gemm::THREADS, gemm::THREADS),
                ArrayArg::from_raw_parts(ha, a.len()),
                ArrayArg::from_raw_parts(hb, b.len()),
                ArrayArg::from_raw_parts(hbias, bias.len()),
                ArrayArg::from_raw_parts(out.clone(), batches * m * n),
                ArrayArg::from_raw_parts(hm, meta.len()),
                0.0,
                0.0,
                true,
                0, // relu
                per as usize,
            )
        };
        let got = gpu.read(&out, batches * m * n).unwrap();
        let mut worst = 0f64;
        for z in 0..batches {
            for r in 0..m {
                for c in 0..n {
                    let mut s = f64::from(bias[c]);
                    for kk in 0..k {
                        s += f64::from(a[z * m * k + r * k + kk]) * f64::from(b[kk * n + c]);
                    }
                    let want = s.max(0.0);
                    let g = f64::from(got[z * m * n + r * n + c]);
                    worst = worst.max((g - want).abs());
                }
            }
        }
        println!("gemm {m}x{n}x{k} x{batches}, {per}x{per} per thread: max abs error {worst:.2e}");
        assert!(worst < 1e-5, "{m}x{n}x{k} per {per}: {worst}");
    }
}
