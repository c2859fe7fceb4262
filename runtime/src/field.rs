//! The two traits every backend implements: state-vector operations and the velocity field.
//!
//! The solvers in [`crate::solver`] are written once against these traits, so the same
//! stepping loop drives the CPU executor, ONNX Runtime and GPU backends.

use crate::Error;

/// Vector operations the stepping loop needs, over one kind of state storage.
///
/// A state buffer holds `batch * state_dim` f32 values (row-major, one row per sample).
pub trait StateOps {
    /// One state-sized buffer: `[f32]` on the CPU, a device buffer on a GPU backend.
    type Buf: ?Sized;

    /// `dst <- src`.
    fn copy(&mut self, dst: &mut Self::Buf, src: &Self::Buf);

    /// `dst <- base + sum_i coef_i * term_i`, accumulated left to right in the order given
    /// (`((base + c0*t0) + c1*t1) + ...`), so results are reproducible on every backend.
    fn lincomb(&mut self, dst: &mut Self::Buf, base: &Self::Buf, terms: &[(f32, &Self::Buf)]);

    /// `true` when every element is finite (no NaN / infinity).
    fn all_finite(&mut self, buf: &Self::Buf) -> bool;

    /// `buf <- c * buf` elementwise.
    fn scale(&mut self, buf: &mut Self::Buf, c: f32);

    /// The scaled RMS norm the adaptive solvers use:
    /// `sqrt(mean_i (e_i / (atol + rtol * max(|a_i|, |b_i|)))^2)` with
    /// `e = sum_j coef_j * term_j` (accumulated left to right in f32, like [`Self::lincomb`]
    /// without a base), the mean and the square root in f64. Returns NaN if any element is
    /// not finite.
    fn scaled_rms(
        &mut self,
        terms: &[(f32, &Self::Buf)],
        a: &Self::Buf,
        b: &Self::Buf,
        atol: f32,
        rtol: f32,
    ) -> f64;
}

/// A velocity field `v(x, t)` evaluated on a whole batch of states at one time.
pub trait VelocityField<S: StateOps + ?Sized> {
    /// Writes `v(x, t)` into `v`. `x` and `v` have the same size (batch × state dim).
    /// `t` follows the solver's convention (0 = noise, 1 = data).
    ///
    /// Errors: whatever the backend reports (e.g. [`Error::ArenaTooSmall`]).
    fn eval(&mut self, ops: &mut S, t: f32, x: &S::Buf, v: &mut S::Buf) -> Result<(), Error>;
}

/// [`StateOps`] on plain CPU slices, with a fixed left-to-right summation order.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuOps;

impl StateOps for CpuOps {
    type Buf = [f32];

    fn copy(&mut self, dst: &mut [f32], src: &[f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }

    fn lincomb(&mut self, dst: &mut [f32], base: &[f32], terms: &[(f32, &[f32])]) {
        for (i, (d, b)) in dst.iter_mut().zip(base).enumerate() {
            let mut acc = *b;
            for (c, t) in terms {
                if let Some(v) = t.get(i) {
                    acc += *c * *v;
                }
            }
            *d = acc;
        }
    }

    fn all_finite(&mut self, buf: &[f32]) -> bool {
        buf.iter().all(|v| v.is_finite())
    }

    fn scale(&mut self, buf: &mut [f32], c: f32) {
        buf.iter_mut().for_each(|v| *v *= c);
    }

    fn scaled_rms(
        &mut self,
        terms: &[(f32, &[f32])],
        a: &[f32],
        b: &[f32],
        atol: f32,
        rtol: f32,
    ) -> f64 {
        let mut sum = 0f64;
        for (i, (ai, bi)) in a.iter().zip(b).enumerate() {
            let mut e = 0f32;
            for (c, t) in terms {
                if let Some(v) = t.get(i) {
                    e += *c * *v;
                }
            }
            let scale = atol + rtol * ai.abs().max(bi.abs());
            let r = f64::from(e) / f64::from(scale);
            sum += r * r;
        }
        if a.is_empty() {
            return 0.0;
        }
        libm::sqrt(sum / a.len() as f64)
    }
}

/// A velocity network that takes per-call conditioning for any number of rows up to its
/// capacity (the CPU executor, ONNX Runtime).
pub trait ConditionalField {
    /// Writes the raw network output for `x` (`rows × D`) at network time `t` with the
    /// conditioning of those rows into `v`.
    ///
    /// Errors: whatever the backend reports (sizes, labels out of range, ...).
    fn eval_cond(
        &mut self,
        t: f32,
        x: &[f32],
        cond: &crate::exec::Conditioning<'_>,
        v: &mut [f32],
    ) -> Result<(), Error>;
}

/// A [`ConditionalField`] with its conditioning fixed for every evaluation: a plain
/// [`VelocityField`] (what the samplers integrate).
pub struct Conditioned<'f, 'c, F: ?Sized> {
    /// The network.
    pub field: &'f mut F,
    /// The conditioning handed to [`ConditionalField::eval_cond`] on every evaluation.
    pub cond: crate::exec::Conditioning<'c>,
}

impl<F: ConditionalField + ?Sized> VelocityField<CpuOps> for Conditioned<'_, '_, F> {
    fn eval(&mut self, _ops: &mut CpuOps, t: f32, x: &[f32], v: &mut [f32]) -> Result<(), Error> {
        self.field.eval_cond(t, x, &self.cond, v)
    }
}
