//! The seam every backend implements: state-vector operations ([`StateOps`]), the velocity
//! field ([`VelocityField`]), the conditional network every backend implements
//! ([`ConditionalField`]) and its conditioning ([`Conditioning`], checked by the same
//! [`Signature::check`] on every backend).
//!
//! The solvers in [`crate::solver`] are written once against these traits, so the same
//! stepping loop drives the CPU executor, ONNX Runtime and GPU backends.

use crate::error::expect_len;
use crate::format::{InputRole, Shape};
use crate::select::{self, has_role, All, Selection};
use crate::time::TimeConvention;
use crate::{Error, Model};

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

    /// Elements in `buf`.
    fn len(&self, buf: &Self::Buf) -> usize;

    /// `dst <- [src; src]`: `src` twice, one after the other (`dst` holds `2 · len(src)`
    /// elements): the doubled batch classifier-free guidance evaluates.
    fn duplicate(&mut self, dst: &mut Self::Buf, src: &Self::Buf);

    /// `dst <- u + w · (c − u)` elementwise in f32, in that order, where `c` is the first
    /// and `u` the second half of `src` (`src` holds `2 · len(dst)` elements): the
    /// classifier-free guidance combination of a doubled evaluation.
    fn guide(&mut self, dst: &mut Self::Buf, src: &Self::Buf, w: f32);
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

    fn len(&self, buf: &[f32]) -> usize {
        buf.len()
    }

    fn duplicate(&mut self, dst: &mut [f32], src: &[f32]) {
        let (a, b) = dst.split_at_mut(src.len().min(dst.len()));
        a.iter_mut().zip(src).for_each(|(d, s)| *d = *s);
        b.iter_mut().zip(src).for_each(|(d, s)| *d = *s);
    }

    fn guide(&mut self, dst: &mut [f32], src: &[f32], w: f32) {
        let (c, u) = src.split_at(dst.len().min(src.len()));
        for ((o, c), u) in dst.iter_mut().zip(c).zip(u) {
            *o = *u + w * (*c - *u);
        }
    }
}

/// A velocity network that takes per-call conditioning for any number of rows up to its
/// capacity: what every backend implements (the CPU executor, ONNX Runtime, the GPU). The
/// guidance, few-step and request-driven runs of this crate are written once against it.
pub trait ConditionalField<S: StateOps + ?Sized> {
    /// Writes the raw network output for `x` (`rows × D`) at network time `t` with the
    /// conditioning of those rows into `v`.
    ///
    /// Errors: the conditioning's [`Signature::check`] errors, sizes, or whatever the
    /// backend reports ([`Error::Backend`] when the backend keeps the cause itself).
    fn eval_cond(
        &mut self,
        ops: &mut S,
        t: f32,
        x: &S::Buf,
        cond: &Conditioning<'_>,
        v: &mut S::Buf,
    ) -> Result<(), Error>;
}

/// A [`ConditionalField`] with its conditioning fixed for every evaluation: a plain
/// [`VelocityField`] (what the samplers integrate).
pub struct Conditioned<'f, 'c, F: ?Sized> {
    /// The network.
    pub field: &'f mut F,
    /// The conditioning handed to [`ConditionalField::eval_cond`] on every evaluation.
    pub cond: Conditioning<'c>,
}

impl<S: StateOps + ?Sized, F: ConditionalField<S> + ?Sized> VelocityField<S>
    for Conditioned<'_, '_, F>
{
    fn eval(&mut self, ops: &mut S, t: f32, x: &S::Buf, v: &mut S::Buf) -> Result<(), Error> {
        self.field.eval_cond(ops, t, x, &self.cond, v)
    }
}

/// A velocity field seen through a [`TimeConvention`]: the solver's model time `τ` reaches the
/// network as `scale · τ`, and a negated output is turned back into `dx/dτ`. Every sampler
/// of flowrt wraps its network in this, so grids are always in model time.
pub struct ConventionField<'f, F: ?Sized> {
    inner: &'f mut F,
    conv: TimeConvention,
}

impl<'f, F: ?Sized> ConventionField<'f, F> {
    /// Wraps `inner` (the raw network) in `conv`.
    pub fn new(inner: &'f mut F, conv: TimeConvention) -> Self {
        ConventionField { inner, conv }
    }
}

impl<S: StateOps + ?Sized, F: VelocityField<S> + ?Sized> VelocityField<S>
    for ConventionField<'_, F>
{
    fn eval(&mut self, ops: &mut S, t: f32, x: &S::Buf, v: &mut S::Buf) -> Result<(), Error> {
        self.inner.eval(ops, self.conv.network_time(t), x, v)?;
        if self.conv.negate_output {
            ops.scale(v, -1.0);
        }
        Ok(())
    }
}

/// Per-row conditioning inputs, borrowed for one evaluation. Lengths are per the batch of
/// that call.
///
/// A model with a `label`, `cond` or `guidance` input needs the matching field; a field
/// given for a role the model does not have is an error too (it would be silently unused).
#[derive(Debug, Clone, Copy, Default)]
pub struct Conditioning<'c> {
    /// Class index per row for the `label` role (`batch` values).
    pub label: Option<&'c [i64]>,
    /// Conditioning vectors for the `cond` role (`batch * cond_dim` values, row-major).
    pub cond: Option<&'c [f32]>,
    /// Embedded guidance scale for the `guidance` role: one value per row (`batch` values).
    pub guidance: Option<&'c [f32]>,
    /// The value of the `step` role (few-step models' second time input, the same for all
    /// rows); set by the few-step sampler ([`crate::fewstep`]) for each step.
    pub step: Option<f32>,
}

/// Largest label magnitude that is exact in f32 (`2^24`); used when the label does not feed
/// a `Gather` table directly, so [`Model::label_classes`] cannot bound it.
const MAX_EXACT_LABEL: i64 = 1 << 24;

/// The part of a model's signature its conditioning is checked against: small, owned and
/// `Copy`, so every backend keeps one ([`Signature::of`]) and checks with the same rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    /// Values per row of the state (`x`).
    pub state_dim: usize,
    /// The labels accepted, `low..high`, when the model has a `label` input.
    pub label: Option<(i64, i64)>,
    /// The `cond` input's shape, when the model has one.
    pub cond: Option<Shape>,
    /// The `guidance` input's shape, when the model has one.
    pub guidance: Option<Shape>,
    /// The model has a `step` input (a few-step model's second time).
    pub step: bool,
}

impl Signature {
    /// The signature of `model`.
    pub fn of(model: &Model<'_>) -> Signature {
        Signature::of_linked::<All>(model)
    }

    /// [`Signature::of`] for a build that feeds only the conditioning inputs `S` links
    /// ([`crate::select::Selection::ROLES`]): the others are left out (check the model with
    /// [`crate::select::check_roles`] first).
    pub fn of_linked<S: Selection + ?Sized>(model: &Model<'_>) -> Signature {
        let shape = |r: InputRole| {
            has_role::<S>(r)
                .then(|| model.input_by_role(r).map(|i| i.shape))
                .flatten()
        };
        Signature {
            state_dim: model.state_dim(),
            label: shape(InputRole::Label).map(|_| label_range(model)),
            cond: shape(InputRole::Cond),
            guidance: shape(InputRole::Guidance),
            step: shape(InputRole::Step).is_some(),
        }
    }

    /// Checks one evaluation as every backend does before running it: `x` holds a whole
    /// number of rows of the state, at least one and at most `max_rows`; `v` is as long as
    /// `x`; the conditioning fits those rows ([`Signature::check`]). Returns the rows.
    ///
    /// Errors: [`Error::ShapeMismatch`] for `x` or `v`, or those of [`Signature::check`].
    pub fn check_eval(
        &self,
        x_len: usize,
        v_len: usize,
        max_rows: usize,
        cond: &Conditioning<'_>,
    ) -> Result<usize, Error> {
        self.check_eval_linked::<All>(x_len, v_len, max_rows, cond)
    }

    /// [`Signature::check_eval`] with the checks of the conditioning inputs `S` links only
    /// ([`Signature::check_linked`]).
    pub fn check_eval_linked<S: Selection + ?Sized>(
        &self,
        x_len: usize,
        v_len: usize,
        max_rows: usize,
        cond: &Conditioning<'_>,
    ) -> Result<usize, Error> {
        let d = self.state_dim;
        let rows = x_len.checked_div(d).unwrap_or(0);
        if rows == 0 || rows > max_rows || rows.checked_mul(d) != Some(x_len) {
            return Err(Error::ShapeMismatch {
                what: "x (a whole number of rows, at most the field's batch)",
                expected: max_rows.saturating_mul(d),
                found: x_len,
            });
        }
        expect_len("v", x_len, v_len)?;
        self.check_linked::<S>(rows, cond)?;
        Ok(rows)
    }

    /// Checks the conditioning of `rows` rows, as every backend does before evaluating:
    /// every role the model has is given and no other; `label` has `rows` values in range
    /// ([`label_range`]); `cond` has the `cond` input's elements for `rows`, all finite;
    /// `guidance` has `rows` finite values, all equal when the model takes one value for all
    /// rows; `step` is finite.
    ///
    /// Errors: [`Error::BadArgument`] (a missing or unused role, a label out of range, rows
    /// of guidance that differ), [`Error::ShapeMismatch`] (lengths),
    /// [`Error::NonFiniteInput`].
    pub fn check(&self, rows: usize, cond: &Conditioning<'_>) -> Result<(), Error> {
        self.check_linked::<All>(rows, cond)
    }

    /// [`Signature::check`] with the checks of the conditioning inputs `S` links only: a
    /// signature with another ([`Signature::of_linked`] leaves them out) is
    /// [`Error::NotLinked`].
    pub fn check_linked<S: Selection + ?Sized>(
        &self,
        rows: usize,
        cond: &Conditioning<'_>,
    ) -> Result<(), Error> {
        let linked = |has: bool, r: InputRole| {
            if has && !has_role::<S>(r) {
                Err(select::not_linked(select::role_input_name(r)))
            } else {
                Ok(())
            }
        };
        linked(self.label.is_some(), InputRole::Label)?;
        linked(self.cond.is_some(), InputRole::Cond)?;
        linked(self.guidance.is_some(), InputRole::Guidance)?;
        linked(self.step, InputRole::Step)?;
        const BIG: Error = Error::BadArgument {
            what: "batch size too large",
        };
        for (given, has, what) in [
            (
                cond.label.is_some(),
                self.label.is_some(),
                "a label was given, but the model has no label input",
            ),
            (
                cond.cond.is_some(),
                self.cond.is_some(),
                "a cond vector was given, but the model has no cond input",
            ),
            (
                cond.step.is_some(),
                self.step,
                "a step value was given, but the model has no step input",
            ),
            (
                cond.guidance.is_some(),
                self.guidance.is_some(),
                "a guidance value was given, but the model has no guidance input",
            ),
        ] {
            if given && !has {
                return Err(Error::BadArgument { what });
            }
        }
        if let Some((low, high)) = self.label.filter(|_| has_role::<S>(InputRole::Label)) {
            let labels = cond.label.ok_or(Error::BadArgument {
                what: "model needs a label input",
            })?;
            expect_len("label (one per row)", rows, labels.len())?;
            if labels.iter().any(|l| *l < low || *l >= high) {
                return Err(Error::BadArgument {
                    what: "label out of range (not in 0..label_classes)",
                });
            }
        }
        if let Some(shape) = self.cond.filter(|_| has_role::<S>(InputRole::Cond)) {
            let len = shape.elements(rows).ok_or(BIG)?;
            let c = cond.cond.ok_or(Error::BadArgument {
                what: "model needs a cond input",
            })?;
            expect_len("cond (rows * cond_dim values)", len, c.len())?;
            if !c.iter().all(|v| v.is_finite()) {
                return Err(Error::NonFiniteInput { what: "cond" });
            }
        }
        if let Some(shape) = self.guidance.filter(|_| has_role::<S>(InputRole::Guidance)) {
            let g = cond.guidance.ok_or(Error::BadArgument {
                what: "model needs a guidance input",
            })?;
            expect_len("guidance (one per row)", rows, g.len())?;
            if !g.iter().all(|v| v.is_finite()) {
                return Err(Error::NonFiniteInput { what: "guidance" });
            }
            if !shape.has_batch() {
                let first = g.first().copied().unwrap_or(0.0);
                if g.iter().any(|v| v.to_bits() != first.to_bits()) {
                    return Err(Error::BadArgument {
                        what: "guidance differs between rows, but the model's guidance \
                               input is one value for all rows",
                    });
                }
            }
        }
        if let Some(v) = cond.step.filter(|_| has_role::<S>(InputRole::Step)) {
            if !v.is_finite() {
                return Err(Error::NonFiniteInput {
                    what: "second time input",
                });
            }
        }
        Ok(())
    }
}

/// The labels `model` accepts, `low..high`: `0..`[`Model::label_classes`] when the label
/// feeds a `Gather` table directly, else every integer exact in f32 (`|label| <= 2^24`).
pub fn label_range(model: &Model<'_>) -> (i64, i64) {
    let (low, high) = match model.label_classes() {
        Some(n) => (0, i64::try_from(n).unwrap_or(i64::MAX)),
        None => (-MAX_EXACT_LABEL, MAX_EXACT_LABEL + 1),
    };
    (low, high.min(MAX_EXACT_LABEL + 1))
}
