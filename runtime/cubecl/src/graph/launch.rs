//! Running a plan: one planned kernel launched with its buffers.

use cubecl::prelude::*;
use cubecl::server::Handle;

use super::{grid_1d, to_u32, unsupported, Kernel, Launch, BLOCK};
use crate::kernels::{elementwise, gemm, image, layout, reduce};
use crate::{Gpu, GpuError};

/// Launches one planned kernel.
pub(super) fn launch<R: Runtime>(
    gpu: &mut Gpu<R>,
    l: &Launch,
    ins: &[(Handle, usize)],
    (out, out_len): (Handle, usize),
) -> Result<(), GpuError> {
    let client = gpu.client.clone();
    let arr = |h: &Handle, n: usize| unsafe { ArrayArg::from_raw_parts(h.clone(), n.max(1)) };
    let input = |j: usize| -> Result<ArrayArg<R>, GpuError> {
        let (h, n) = ins
            .get(j)
            .ok_or(GpuError::Device("a launch lacks an input".into()))?;
        Ok(arr(h, *n))
    };
    let meta = || -> Result<ArrayArg<R>, GpuError> {
        let h = l
            .meta
            .as_ref()
            .ok_or(GpuError::Device("a launch lacks its geometry".into()))?;
        Ok(unsafe { ArrayArg::from_raw_parts(h.clone(), h.size_in_used() as usize / 4) })
    };
    let dim = CubeDim::new_1d(BLOCK);
    let elems = |n: usize| grid_1d(n).ok_or(unsupported(format!("a launch of {n} threads")));
    let o = arr(&out, out_len);
    // A weighted op (GEMM, convolution): input, weights, bias (without one, the weights
    // again: never read), output, geometry and the fused activation, then `$rest`.
    macro_rules! weighted {
        ($m:ident::$k:ident, $count:expr, $dim:expr, $has_bias:expr, $act:expr; $($rest:expr),*) => {{
            let bias = if $has_bias { input(2)? } else { input(1)? };
            $m::$k::launch::<R>(
                &client,
                $count,
                $dim,
                input(0)?,
                input(1)?,
                bias,
                o,
                meta()?,
                $act.alpha,
                $act.gamma,
                $has_bias,
                $($rest),*
            )
        }};
    }
    gpu.launches += 1;
    match l.kernel {
        Kernel::Unary { op, alpha, gamma } => elementwise::unary::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            o,
            alpha,
            gamma,
            op,
        ),
        Kernel::Binary {
            op,
            direct_a,
            direct_b,
            act,
        } => elementwise::binary::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            input(1)?,
            o,
            meta()?,
            act.alpha,
            act.gamma,
            op,
            direct_a,
            direct_b,
            act.op,
        ),
        Kernel::Select => elementwise::select3::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            input(1)?,
            input(2)?,
            o,
            meta()?,
        ),
        Kernel::Copy { count } => layout::strided_copy::launch::<R>(
            &client,
            elems(count)?,
            dim,
            input(0)?,
            o,
            meta()?,
            to_u32(count)?,
        ),
        Kernel::Gather { inner, rows } => layout::gather::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            input(1)?,
            o,
            inner,
            rows,
            f32::NAN,
        ),
        Kernel::Gemm {
            grid,
            per,
            has_bias,
            act,
        } => weighted!(
            gemm::gemm,
            CubeCount::Static(grid.0, grid.1, grid.2),
            CubeDim::new_2d(gemm::THREADS, gemm::THREADS),
            has_bias,
            act;
            act.op,
            per as usize
        ),
        Kernel::Conv {
            has_bias,
            transposed,
            act,
        } => weighted!(image::conv, elems(out_len)?, dim, has_bias, act; transposed, act.op),
        Kernel::Pool { kind } => image::pool::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            o,
            meta()?,
            f32::NEG_INFINITY,
            kind,
        ),
        Kernel::Reduce { kind, len, inner } => reduce::reduce::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            o,
            len,
            inner,
            f32::INFINITY,
            kind,
        ),
        Kernel::Softmax {
            len,
            inner,
            rows,
            log,
        } => reduce::softmax::launch::<R>(
            &client,
            elems(rows as usize)?,
            dim,
            input(0)?,
            o,
            len,
            inner,
            rows,
            f32::INFINITY,
            log,
        ),
        Kernel::Norm {
            len,
            inner,
            rows,
            eps,
        } => reduce::norm::launch::<R>(
            &client,
            elems(rows as usize)?,
            dim,
            input(0)?,
            o,
            len,
            inner,
            rows,
            len as f32,
            eps,
        ),
        Kernel::Resize {
            mode,
            coord,
            scales,
        } => image::resize::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            o,
            meta()?,
            scales[0],
            scales[1],
            mode,
            coord,
        ),
        Kernel::Pad { mode, value } => layout::pad::launch::<R>(
            &client,
            elems(out_len)?,
            dim,
            input(0)?,
            o,
            meta()?,
            value,
            mode,
        ),
    }
    Ok(())
}
