//! Lowering: each graph op turned into its kernel launches and geometry words.

use cubecl::prelude::*;
use cubecl::server::Handle;
use flowrt::format::NodeOp;
use flowrt::ops::{Dims, PadMode};

use super::plan::Planner;
use super::{bad_graph, to_u32, unary_act, unsupported, Act, Kernel, Src, MAX_CUBES};
use crate::kernels::{gemm, image};
use crate::GpuError;

/// `d` as u32 words.
fn dims_u32(d: &Dims) -> Result<Vec<u32>, GpuError> {
    d.as_slice()
        .iter()
        .map(|v| u32::try_from(*v).map_err(|_| unsupported("a dimension over 2^32".into())))
        .collect()
}

/// Contiguous strides of `d`.
fn contiguous(d: &[usize]) -> Vec<usize> {
    let mut s = vec![0; d.len()];
    let mut acc = 1usize;
    for (st, v) in s.iter_mut().zip(d).rev() {
        *st = acc;
        acc *= *v;
    }
    s
}

/// numpy broadcast strides of `src` read at the positions of `out` (0 on broadcast axes).
fn bcast_strides(src: &Dims, out: &Dims) -> Result<Vec<u32>, GpuError> {
    let (r, sr) = (out.rank(), src.rank());
    let err = || {
        GpuError::Flowrt(flowrt::Error::Invalid {
            what: "operand shapes do not broadcast",
        })
    };
    if sr > r {
        return Err(err());
    }
    let lead = r - sr;
    let cs = contiguous(src.as_slice());
    let mut st = vec![0u32; r];
    for i in 0..sr {
        let (sd, od) = (src.as_slice()[i], out.as_slice()[lead + i]);
        st[lead + i] = if sd == od {
            to_u32(cs[i])?
        } else if sd == 1 {
            0
        } else {
            return Err(err());
        };
    }
    Ok(st)
}

impl<R: Runtime> Planner<'_, '_, R> {
    /// Appends the launches of one node: `ins` / `ind` its inputs and their dims, `out` / `od`
    /// the tensor it writes, `act` a fused activation.
    pub(super) fn lower(
        &mut self,
        op: &NodeOp,
        ins: &[(Src, usize)],
        ind: &[Dims],
        out: (Src, usize),
        od: &Dims,
        act: Act,
    ) -> Result<(), GpuError> {
        let in0 = || ins.first().copied().ok_or(bad_graph());
        let d0 = ind.first().ok_or(bad_graph())?;
        if matches!(op, NodeOp::Dense | NodeOp::Conv { .. }) && ins.len() == 4 {
            return Err(GpuError::Unsupported(
                "full-integer Dense / Conv (export --activations int8) runs on the CPU backend"
                    .into(),
            ));
        }
        match *op {
            NodeOp::Lut { .. } => {
                return Err(GpuError::Unsupported(
                    "table activations (export --activations int8) run on the CPU backend".into(),
                ))
            }
            NodeOp::Dense => {
                let wd = ind.get(1).ok_or(bad_graph())?;
                let (k, n) = (wd.get(0).ok_or(bad_graph())?, wd.get(1).ok_or(bad_graph())?);
                let m = in0()?.1.checked_div(k).unwrap_or(0);
                let meta = self.meta(&[to_u32(m)?, to_u32(n)?, to_u32(k)?, 0]);
                let (grid, per) = gemm_grid(m, n, 1)?;
                self.push(
                    Kernel::Gemm {
                        grid,
                        per,
                        has_bias: ins.len() == 3,
                        act,
                    },
                    ins.to_vec(),
                    out,
                    meta,
                );
            }
            NodeOp::MatMul => {
                let bd = ind.get(1).ok_or(bad_graph())?;
                let (ra, rb, ro) = (d0.rank(), bd.rank(), od.rank());
                let dims = |d: &Dims, i: usize| d.get(i).ok_or(bad_graph());
                let m = dims(d0, ra - 2)?;
                let k = dims(d0, ra - 1)?;
                let n = dims(bd, rb - 1)?;
                let lead = ro - 2;
                let mut w = vec![to_u32(m)?, to_u32(n)?, to_u32(k)?, to_u32(lead)?];
                let mut batches = 1usize;
                for i in 0..lead {
                    let d = dims(od, i)?;
                    batches *= d;
                    w.push(to_u32(d)?);
                }
                for (src, mat) in [(d0, m * k), (bd, k * n)] {
                    let off = ro - src.rank();
                    let mut st = vec![0u32; lead];
                    let mut acc = mat;
                    for i in (0..lead).rev() {
                        let sd = if i >= off { dims(src, i - off)? } else { 1 };
                        st[i] = if sd == dims(od, i)? { to_u32(acc)? } else { 0 };
                        acc *= sd;
                    }
                    w.extend(st);
                }
                let meta = self.meta(&w);
                let (grid, per) = gemm_grid(m, n, batches)?;
                self.push(
                    Kernel::Gemm {
                        grid,
                        per,
                        has_bias: false,
                        act,
                    },
                    ins.to_vec(),
                    out,
                    meta,
                );
            }
            NodeOp::Binary(b) => {
                let bd = ind.get(1).ok_or(bad_graph())?;
                let mut w = vec![to_u32(od.rank())?];
                w.extend(dims_u32(od)?);
                w.extend(bcast_strides(d0, od)?);
                w.extend(bcast_strides(bd, od)?);
                let meta = self.meta(&w);
                let direct_a = d0.as_slice() == od.as_slice();
                let direct_b = bd.as_slice() == od.as_slice();
                self.push(
                    Kernel::Binary {
                        op: u32::from(b.code()),
                        direct_a,
                        direct_b,
                        act,
                    },
                    ins.to_vec(),
                    out,
                    meta,
                );
            }
            NodeOp::Unary(u) => {
                let a = unary_act(u);
                self.push(
                    Kernel::Unary {
                        op: a.op,
                        alpha: a.alpha,
                        gamma: a.gamma,
                    },
                    vec![in0()?],
                    out,
                    None,
                );
            }
            NodeOp::Where => {
                let mut w = vec![to_u32(od.rank())?];
                w.extend(dims_u32(od)?);
                for d in ind.iter().take(3) {
                    w.extend(bcast_strides(d, od)?);
                }
                let meta = self.meta(&w);
                self.push(Kernel::Select, ins.to_vec(), out, meta);
            }
            // Widen: the constant was uploaded as f32 (dequantized on the host).
            NodeOp::Reshape | NodeOp::Widen => {
                let cs = [1usize];
                self.copy(in0()?, out, &[out.1], &cs, &cs, 0, 0)?;
            }
            NodeOp::Expand => {
                let st: Vec<usize> = bcast_strides(d0, od)?
                    .into_iter()
                    .map(|v| v as usize)
                    .collect();
                let dst = contiguous(od.as_slice());
                self.copy(in0()?, out, od.as_slice(), &st, &dst, 0, 0)?;
            }
            NodeOp::Transpose { .. } => {
                let perm = op.perm();
                let xs = contiguous(d0.as_slice());
                let st: Vec<usize> = perm
                    .iter()
                    .map(|p| xs.get(usize::from(*p)).copied().ok_or(bad_graph()))
                    .collect::<Result<_, _>>()?;
                let dst = contiguous(od.as_slice());
                self.copy(in0()?, out, od.as_slice(), &st, &dst, 0, 0)?;
            }
            NodeOp::Slice {
                axis, start, step, ..
            } => {
                let axis = axis as usize;
                let xs = contiguous(d0.as_slice());
                let mut st = xs.clone();
                let s_axis = st.get_mut(axis).ok_or(bad_graph())?;
                *s_axis *= step as usize;
                let base = xs[axis] * start as usize;
                let dst = contiguous(od.as_slice());
                self.copy(in0()?, out, od.as_slice(), &st, &dst, base, 0)?;
            }
            NodeOp::Concat { axis } => {
                let axis = axis as usize;
                let dst = contiguous(od.as_slice());
                let mut offset = 0usize;
                for (j, xd) in ind.iter().enumerate() {
                    let input = *ins.get(j).ok_or(bad_graph())?;
                    let xs = contiguous(xd.as_slice());
                    let base = offset * dst.get(axis).copied().ok_or(bad_graph())?;
                    self.copy(input, out, xd.as_slice(), &xs, &dst, 0, base)?;
                    offset += xd.get(axis).ok_or(bad_graph())?;
                }
            }
            NodeOp::Gather => {
                let rows = d0.get(0).ok_or(bad_graph())?;
                let inner = d0.as_slice().iter().skip(1).product::<usize>();
                self.push(
                    Kernel::Gather {
                        inner: to_u32(inner.max(1))?,
                        rows: to_u32(rows)?,
                    },
                    ins.to_vec(),
                    out,
                    None,
                );
            }
            NodeOp::Conv { groups, window } | NodeOp::ConvTranspose { groups, window, .. } => {
                // Kernel rows and columns: Conv's kernel is `[C/g, (KH,) KW, M]`,
                // ConvTranspose's `[M, C/g, (KH,) KW]`.
                let transposed = matches!(op, NodeOp::ConvTranspose { .. });
                let wd = ind.get(1).ok_or(bad_graph())?;
                let (kh, kw) = match (transposed, wd.as_slice()) {
                    (false, [_, kw, _]) | (true, [_, _, kw]) => (1, *kw),
                    (false, [_, kh, kw, _]) | (true, [_, _, kh, kw]) => (*kh, *kw),
                    _ => return Err(bad_graph()),
                };
                let meta = self.geometry(d0, od, (kh, kw), groups, &window)?;
                self.push(
                    Kernel::Conv {
                        has_bias: ins.len() == 3,
                        transposed,
                        act,
                    },
                    ins.to_vec(),
                    out,
                    meta,
                );
            }
            NodeOp::Pool {
                kind,
                kernel,
                window,
            } => {
                let k = (usize::from(kernel[0]), usize::from(kernel[1]));
                let meta = self.geometry(d0, od, k, 1, &window)?;
                self.push(Kernel::Pool { kind: kind.code() }, vec![in0()?], out, meta);
            }
            NodeOp::Reduce { kind, start, end } => {
                let (_, len, inner) = split3(d0, start.into(), end.into())?;
                self.push(
                    Kernel::Reduce {
                        kind: kind.code(),
                        len: to_u32(len)?,
                        inner: to_u32(inner)?,
                    },
                    vec![in0()?],
                    out,
                    None,
                );
            }
            NodeOp::Softmax { start, end, log } => {
                let (outer, len, inner) = split3(d0, start.into(), end.into())?;
                self.push(
                    Kernel::Softmax {
                        len: to_u32(len)?,
                        inner: to_u32(inner)?,
                        rows: to_u32(outer * inner)?,
                        log,
                    },
                    vec![in0()?],
                    out,
                    None,
                );
            }
            NodeOp::Norm { start, end, eps } => {
                let (outer, len, inner) = split3(d0, start.into(), end.into())?;
                self.push(
                    Kernel::Norm {
                        len: to_u32(len)?,
                        inner: to_u32(inner)?,
                        rows: to_u32(outer * inner)?,
                        eps,
                    },
                    vec![in0()?],
                    out,
                    None,
                );
            }
            NodeOp::Resize {
                mode,
                coord,
                scales,
            } => {
                let r = d0.rank();
                let g = |d: &Dims, i: usize| d.get(i).ok_or(bad_graph()).and_then(to_u32);
                let meta = self.meta(&[g(d0, r - 2)?, g(d0, r - 1)?, g(od, r - 2)?, g(od, r - 1)?]);
                self.push(
                    Kernel::Resize {
                        mode: mode.code(),
                        coord: coord.code(),
                        scales,
                    },
                    vec![in0()?],
                    out,
                    meta,
                );
            }
            NodeOp::Pad { mode, begin, .. } => {
                let r = d0.rank();
                let mut w = vec![to_u32(r)?];
                w.extend(dims_u32(od)?);
                w.extend(dims_u32(d0)?);
                w.extend(begin.iter().take(r).map(|b| u32::from(*b)));
                let meta = self.meta(&w);
                let value = match mode {
                    PadMode::Constant(v) => v,
                    _ => 0.0,
                };
                self.push(
                    Kernel::Pad {
                        mode: mode.code(),
                        value,
                    },
                    vec![in0()?],
                    out,
                    meta,
                );
            }
        }
        Ok(())
    }

    /// The [`image::geo`] words of a convolution or pool.
    fn geometry(
        &self,
        xd: &Dims,
        od: &Dims,
        (kh, kw): (usize, usize),
        groups: u32,
        win: &flowrt::ops::Window,
    ) -> Result<Option<Handle>, GpuError> {
        let nchw = |d: &Dims| -> Result<[usize; 4], GpuError> {
            match *d.as_slice() {
                [n, c, l] => Ok([n, c, 1, l]),
                [n, c, h, w] => Ok([n, c, h, w]),
                _ => Err(bad_graph()),
            }
        };
        let [n, c, h, w] = nchw(xd)?;
        let [_, m, oh, ow] = nchw(od)?;
        // 1-D windows keep their column attributes in index 1.
        let words = [
            n,
            c,
            h,
            w,
            m,
            oh,
            ow,
            kh,
            kw,
            usize::from(win.stride[0]),
            usize::from(win.stride[1]),
            usize::from(win.dilation[0]),
            usize::from(win.dilation[1]),
            usize::from(win.pad_begin[0]),
            usize::from(win.pad_begin[1]),
            groups as usize,
            usize::from(win.pad_end[0]),
            usize::from(win.pad_end[1]),
        ];
        debug_assert_eq!(words.len(), image::geo::LEN);
        let w: Vec<u32> = words.iter().map(|v| to_u32(*v)).collect::<Result<_, _>>()?;
        Ok(self.meta(&w))
    }
}

/// `[outer, len, inner]` of `d` around the axis range `start..end`.
fn split3(d: &Dims, start: usize, end: usize) -> Result<(usize, usize, usize), GpuError> {
    let s = d.as_slice();
    if start >= end || end > s.len() {
        return Err(bad_graph());
    }
    Ok((
        s[..start].iter().product(),
        s[start..end].iter().product(),
        s[end..].iter().product(),
    ))
}

/// The GEMM shape and grid for `batches` products of `m × n`: 8×8 outputs per thread
/// (128×128 tiles) when both sides are at least 128, else 4×4 (64×64 tiles).
fn gemm_grid(m: usize, n: usize, batches: usize) -> Result<((u32, u32, u32), u32), GpuError> {
    let per = if m >= 128 && n >= 128 { 8 } else { 4 };
    let t = gemm::tile(per) as usize;
    let x = to_u32(n.div_ceil(t).max(1))?;
    let y = to_u32(m.div_ceil(t).max(1))?;
    let z = to_u32(batches.max(1))?;
    if x > MAX_CUBES || y > MAX_CUBES || z > MAX_CUBES {
        return Err(unsupported(format!(
            "a matrix product of {batches} x [{m} x {n}] exceeds the device's launch grid"
        )));
    }
    Ok(((x, y, z), per))
}
