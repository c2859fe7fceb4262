//! [`flowrt::StateOps`] on device buffers: the solver's copies, linear combinations, scaling,
//! finite checks and error norms as kernels (one launch each, four terms per launch), so the
//! runtime's stepping loops run on the device unchanged.

use cubecl::prelude::*;
use cubecl::server::Handle;
use flowrt::StateOps;

use crate::graph::{grid_1d, BLOCK};
use crate::kernels::{layout, state};
use crate::{Gpu, GpuError};

/// A state-sized device buffer: `len` f32 values. `clone` shares the device memory (it
/// copies the handle, not the values); [`StateOps::copy`] copies values.
#[derive(Debug, Clone)]
pub struct GpuBuf {
    pub(crate) handle: Handle,
    pub(crate) len: usize,
}

impl GpuBuf {
    /// Elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when the buffer holds no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// [`StateOps`] on a device: the client, plus the first device error seen (the trait's
/// methods cannot return one; [`GpuOps::take_error`] reports it, and a failed operation
/// makes the next finite check fail so no wrong result is returned silently).
pub struct GpuOps<R: Runtime> {
    /// The device.
    pub gpu: Gpu<R>,
    error: Option<GpuError>,
}

impl<R: Runtime> GpuOps<R> {
    /// State operations on `gpu`.
    pub fn new(gpu: Gpu<R>) -> Self {
        GpuOps { gpu, error: None }
    }

    /// A new buffer holding `data`.
    pub fn upload(&self, data: &[f32]) -> GpuBuf {
        GpuBuf {
            handle: self.gpu.upload(data),
            len: data.len(),
        }
    }

    /// A new (uninitialised) buffer of `len` values.
    pub fn buffer(&self, len: usize) -> GpuBuf {
        GpuBuf {
            handle: self.gpu.empty(len),
            len,
        }
    }

    /// Reads a buffer back.
    ///
    /// Errors: [`GpuError::Device`].
    pub fn read(&self, buf: &GpuBuf) -> Result<Vec<f32>, GpuError> {
        self.gpu.read(&buf.handle, buf.len)
    }

    /// The first device error seen by an operation, if any (cleared).
    pub fn take_error(&mut self) -> Option<GpuError> {
        self.error.take()
    }

    /// `true` when an operation has failed since the last [`GpuOps::take_error`].
    pub fn has_error(&self) -> bool {
        self.error.is_some()
    }

    /// Records an error (the first one wins).
    pub(crate) fn fail(&mut self, e: GpuError) {
        self.error.get_or_insert(e);
    }

    /// A 1-D grid for `n` threads, or a recorded error.
    pub(crate) fn grid(&mut self, n: usize) -> Option<CubeCount> {
        let g = grid_1d(n);
        if g.is_none() && n > 0 {
            self.fail(GpuError::Unsupported(format!("a launch of {n} threads")));
        }
        g
    }

    /// Launches a one-thread-per-value kernel over `n` values, counted:
    /// `f(client, grid, dim, count)`. Nothing is launched for `n` = 0, for a grid past the
    /// device's limits (recorded as an error) or for `n` over 2^32 (recorded when `over`
    /// names what is too large). Returns whether it launched.
    pub(crate) fn launch_1d(
        &mut self,
        n: usize,
        over: Option<&str>,
        f: impl FnOnce(&ComputeClient<R>, CubeCount, CubeDim, u32),
    ) -> bool {
        let Some(grid) = self.grid(n) else {
            return false;
        };
        let Ok(count) = u32::try_from(n) else {
            if let Some(what) = over {
                self.fail(GpuError::Unsupported(format!("{what} over 2^32 values")));
            }
            return false;
        };
        self.gpu.launches += 1;
        f(&self.gpu.client, grid, CubeDim::new_1d(BLOCK), count);
        true
    }

    /// `n` values of `h` as a kernel argument.
    pub(crate) fn arr(h: &Handle, n: usize) -> ArrayArg<R> {
        // SAFETY: every buffer passed here holds at least `n` values (checked by callers
        // against `GpuBuf::len`), and the kernels bound every access by `count`.
        unsafe { ArrayArg::from_raw_parts(h.clone(), n.max(1)) }
    }

    /// `dst <- src[src_off .. src_off + count]` at `dst_off`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy_range(
        &mut self,
        src: &Handle,
        src_len: usize,
        dst: &Handle,
        dst_len: usize,
        src_off: usize,
        dst_off: usize,
        count: usize,
    ) {
        let (Ok(so), Ok(d_o)) = (u32::try_from(src_off), u32::try_from(dst_off)) else {
            self.fail(GpuError::Unsupported("a buffer over 2^32 values".into()));
            return;
        };
        self.launch_1d(count, Some("a buffer"), |client, grid, dim, c| {
            layout::copy_range::launch::<R>(
                client,
                grid,
                dim,
                Self::arr(src, src_len),
                Self::arr(dst, dst_len),
                so,
                d_o,
                c,
            )
        });
    }

    /// `buf[..count] <- value`.
    pub(crate) fn fill(&mut self, buf: &Handle, count: usize, value: f32) {
        self.launch_1d(count, Some("a buffer"), |client, grid, dim, c| {
            layout::fill::launch::<R>(client, grid, dim, Self::arr(buf, count), value, c)
        });
    }

    /// Checks that `bufs` all hold `n` values; records an error otherwise.
    fn same_len(&mut self, n: usize, bufs: &[&GpuBuf]) -> bool {
        if bufs.iter().all(|b| b.len == n) {
            true
        } else {
            self.fail(GpuError::Flowrt(flowrt::Error::ShapeMismatch {
                what: "state buffers of one solver step",
                expected: n,
                found: bufs.iter().map(|b| b.len).find(|l| *l != n).unwrap_or(0),
            }));
            false
        }
    }

    /// Checks that `buf` holds `2 · n` values (a doubled guidance buffer); records an error
    /// naming `what` otherwise.
    fn doubled(&mut self, n: usize, buf: &GpuBuf, what: &'static str) -> bool {
        if buf.len == 2 * n {
            return true;
        }
        self.fail(GpuError::Flowrt(flowrt::Error::ShapeMismatch {
            what,
            expected: 2 * n,
            found: buf.len,
        }));
        false
    }

    /// `dst <- (base or dst) + Σ c_j t_j` for up to four terms, one launch.
    fn lincomb_chunk(&mut self, dst: &GpuBuf, base: Option<&GpuBuf>, terms: &[(f32, &GpuBuf)]) {
        let n = dst.len;
        // Unused term slots get a buffer that is not `dst` (never read: `n` masks them).
        let filler = base.or(terms.first().map(|t| t.1)).unwrap_or(dst);
        let t = |j: usize| terms.get(j).map_or(filler, |t| t.1);
        let c = |j: usize| terms.get(j).map_or(0.0, |t| t.0);
        let k = terms.len() as u32;
        // Without a base the kernel starts from `dst` and does not read `base`.
        let b = base.unwrap_or(filler);
        self.launch_1d(n, Some("a state"), |client, grid, dim, count| {
            state::lincomb4::launch::<R>(
                client,
                grid,
                dim,
                Self::arr(&b.handle, n),
                Self::arr(&t(0).handle, n),
                Self::arr(&t(1).handle, n),
                Self::arr(&t(2).handle, n),
                Self::arr(&t(3).handle, n),
                Self::arr(&dst.handle, n),
                c(0),
                c(1),
                c(2),
                c(3),
                count,
                k,
                base.is_some(),
            )
        });
    }

    /// `true` when the first `n` values of `h` are finite (one launch and a 4-byte read).
    pub(crate) fn finite(&mut self, h: &Handle, n: usize) -> bool {
        if self.error.is_some() {
            return false;
        }
        if n == 0 {
            return true;
        }
        let flag = self.gpu.client.create_from_slice(u32::as_bytes(&[0]));
        let launched = self.launch_1d(n, None, |client, grid, dim, count| {
            state::non_finite_flag::launch::<R>(
                client,
                grid,
                dim,
                Self::arr(h, n),
                Self::arr(&flag, 1),
                count,
            )
        });
        if !launched {
            return false;
        }
        match self.gpu.read_u32(&flag) {
            Ok(f) => f == 0,
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }
}

impl<R: Runtime> StateOps for GpuOps<R> {
    type Buf = GpuBuf;

    fn copy(&mut self, dst: &mut GpuBuf, src: &GpuBuf) {
        if self.same_len(dst.len, &[src]) {
            let n = dst.len;
            self.copy_range(&src.handle, n, &dst.handle, n, 0, 0, n);
        }
    }

    fn lincomb(&mut self, dst: &mut GpuBuf, base: &GpuBuf, terms: &[(f32, &GpuBuf)]) {
        let mut all: Vec<&GpuBuf> = vec![base];
        all.extend(terms.iter().map(|t| t.1));
        if !self.same_len(dst.len, &all) {
            return;
        }
        let mut chunks = terms.chunks(4);
        let first = chunks.next().unwrap_or(&[]);
        self.lincomb_chunk(dst, Some(base), first);
        for c in chunks {
            self.lincomb_chunk(dst, None, c);
        }
    }

    fn all_finite(&mut self, buf: &GpuBuf) -> bool {
        let h = buf.handle.clone();
        self.finite(&h, buf.len)
    }

    fn scale(&mut self, buf: &mut GpuBuf, c: f32) {
        let n = buf.len;
        self.launch_1d(n, None, |client, grid, dim, count| {
            state::scale::launch::<R>(client, grid, dim, Self::arr(&buf.handle, n), c, count)
        });
    }

    fn len(&self, buf: &GpuBuf) -> usize {
        buf.len
    }

    fn duplicate(&mut self, dst: &mut GpuBuf, src: &GpuBuf) {
        let n = src.len;
        if !self.doubled(n, dst, "doubled guidance state (2 x batch x state dim)") {
            return;
        }
        self.copy_range(&src.handle, n, &dst.handle, 2 * n, 0, 0, n);
        self.copy_range(&src.handle, n, &dst.handle, 2 * n, 0, n, n);
    }

    fn guide(&mut self, dst: &mut GpuBuf, src: &GpuBuf, w: f32) {
        let n = dst.len;
        if !self.doubled(n, src, "doubled guidance velocity (2 x batch x state dim)") {
            return;
        }
        self.launch_1d(n, None, |client, grid, dim, half| {
            state::cfg_combine::launch::<R>(
                client,
                grid,
                dim,
                Self::arr(&src.handle, 2 * n),
                Self::arr(&dst.handle, n),
                w,
                half,
            )
        });
    }

    fn scaled_rms(
        &mut self,
        terms: &[(f32, &GpuBuf)],
        a: &GpuBuf,
        b: &GpuBuf,
        atol: f32,
        rtol: f32,
    ) -> f64 {
        let n = a.len;
        let mut all: Vec<&GpuBuf> = vec![b];
        all.extend(terms.iter().map(|t| t.1));
        if !self.same_len(n, &all) {
            return f64::NAN;
        }
        if n == 0 {
            return 0.0;
        }
        // e = 0 + Σ c_j t_j (left to right), then e / (atol + rtol max(|a|, |b|)).
        let e = self.buffer(n);
        self.fill(&e.handle, n, 0.0);
        for c in terms.chunks(4) {
            self.lincomb_chunk(&e, None, c);
        }
        let r = self.buffer(n);
        let launched = self.launch_1d(n, None, |client, grid, dim, count| {
            state::error_ratio::launch::<R>(
                client,
                grid,
                dim,
                Self::arr(&e.handle, n),
                Self::arr(&a.handle, n),
                Self::arr(&b.handle, n),
                Self::arr(&r.handle, n),
                atol,
                rtol,
                count,
            )
        });
        if !launched {
            return f64::NAN;
        }
        match self.read(&r) {
            Ok(v) => {
                let mut sum = 0f64;
                for x in &v {
                    if !x.is_finite() {
                        return f64::NAN;
                    }
                    sum += f64::from(*x) * f64::from(*x);
                }
                (sum / n as f64).sqrt()
            }
            Err(e) => {
                self.fail(e);
                f64::NAN
            }
        }
    }
}
