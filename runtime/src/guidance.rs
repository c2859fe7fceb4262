//! Classifier-free guidance: `v = v_u + w·(v_c − v_u)`, evaluated as one doubled batch.
//!
//! [`CfgField`] wraps a [`ConditionalField`] of any backend (the CPU executor, ONNX Runtime,
//! the GPU; created for at least `2B` rows) and presents a plain [`VelocityField`] of `B` rows
//! to the solvers. Each evaluation copies the state into both halves of a `2B`-row buffer
//! ([`StateOps::duplicate`]) and evaluates it once
//! with the *doubled conditioning* — rows `0..B` conditional (the caller's labels / vectors),
//! rows `B..2B` unconditional (the null label or null conditioning vector) — then combines
//! `v = v_u + w·(v_c − v_u)` in f32, in that order (as the reference Python computes it).
//! Because flowrt's kernels are row-deterministic, this is bit-identical to evaluating the
//! two halves separately.
//!
//! A *guidance interval* `[a, b]` (in model time) applies guidance only for `a ≤ τ ≤ b`;
//! elsewhere only the conditional half is evaluated (`B` rows) and `v = v_c`. Embedded
//! guidance (a Flux-style `guidance` input) needs none of this: it is conditioning
//! ([`Conditioning::guidance`]) fed to a single batch.
//!
//! The field applies the model's [`TimeConvention`] itself, so the interval and the solver
//! grid are in model time. Nothing is allocated: the caller provides the doubled
//! conditioning and two `2B × D` scratch buffers ([`scratch_len`]); the combination is
//! [`StateOps::guide`].

use crate::error::expect_len;
use crate::field::{ConditionalField, Conditioning, StateOps, VelocityField};
use crate::time::TimeConvention;
use crate::Error;

/// Guidance settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    /// The scale `w` (0 = unconditional, 1 = conditional, > 1 = guided).
    pub scale: f32,
    /// Apply guidance only for model times in `[a, b]` (conditional velocity elsewhere).
    pub interval: Option<(f32, f32)>,
}

impl Guidance {
    /// Checks that the scale and interval are finite and `a <= b`.
    ///
    /// Errors: [`Error::BadSolverConfig`].
    pub fn validate(&self) -> Result<(), Error> {
        if !self.scale.is_finite() {
            return Err(Error::BadSolverConfig {
                what: "guidance scale must be finite",
            });
        }
        if let Some((a, b)) = self.interval {
            if !(a.is_finite() && b.is_finite() && a <= b) {
                return Err(Error::BadSolverConfig {
                    what: "guidance interval must be finite with a <= b",
                });
            }
        }
        Ok(())
    }

    /// `true` when guidance applies at model time `t`.
    pub fn active_at(&self, t: f32) -> bool {
        self.interval.is_none_or(|(a, b)| a <= t && t <= b)
    }
}

/// f32 elements of each of the two scratch buffers [`CfgField::new`] needs for `batch` rows
/// of `state_dim`: `2 · batch · state_dim`; `None` on overflow.
pub fn scratch_len(batch: usize, state_dim: usize) -> Option<usize> {
    batch.checked_mul(state_dim)?.checked_mul(2)
}

/// The first `rows` rows of a doubled conditioning (its conditional half).
fn first_rows<'c>(c: &Conditioning<'c>, rows: usize, cond_dim: usize) -> Conditioning<'c> {
    Conditioning {
        label: c.label.and_then(|l| l.get(..rows)),
        cond: c.cond.and_then(|v| v.get(..rows.saturating_mul(cond_dim))),
        guidance: c.guidance.and_then(|g| g.get(..rows)),
        step: c.step,
    }
}

/// Classifier-free guidance around a [`ConditionalField`] of any backend (see the module
/// docs).
pub struct CfgField<'f, 'c, S: StateOps + ?Sized, F: ?Sized> {
    inner: &'f mut F,
    conv: TimeConvention,
    guidance: Guidance,
    doubled: Conditioning<'c>,
    single: Conditioning<'c>,
    x2: &'f mut S::Buf,
    v2: &'f mut S::Buf,
    evaluations: usize,
}

impl<'f, 'c, S: StateOps + ?Sized, F: ConditionalField<S> + ?Sized> CfgField<'f, 'c, S, F> {
    /// Guidance for `batch` rows of `state_dim`. `doubled` holds `2·batch` rows of
    /// conditioning (conditional first, then unconditional; `cond_dim` values per row of
    /// `doubled.cond`); `x2` and `v2` hold exactly [`scratch_len`] elements each; `inner`
    /// must accept `2·batch` rows.
    ///
    /// Errors: [`Error::BadSolverConfig`] for invalid guidance; [`Error::ShapeMismatch`] for
    /// conditioning or scratch of the wrong size.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ops: &S,
        inner: &'f mut F,
        conv: TimeConvention,
        guidance: Guidance,
        batch: usize,
        state_dim: usize,
        cond_dim: usize,
        doubled: Conditioning<'c>,
        x2: &'f mut S::Buf,
        v2: &'f mut S::Buf,
    ) -> Result<Self, Error> {
        guidance.validate()?;
        let n2 = scratch_len(batch, state_dim).ok_or(Error::BadArgument {
            what: "batch size too large",
        })?;
        for (len, what) in [
            (ops.len(x2), "guidance state scratch"),
            (ops.len(v2), "guidance velocity scratch"),
        ] {
            expect_len(what, n2, len)?;
        }
        let rows2 = batch.saturating_mul(2);
        let check = |len: Option<usize>, per_row: usize, what: &'static str| match len {
            Some(l) if l != rows2.saturating_mul(per_row) => Err(Error::ShapeMismatch {
                what,
                expected: rows2.saturating_mul(per_row),
                found: l,
            }),
            _ => Ok(()),
        };
        check(
            doubled.label.map(<[i64]>::len),
            1,
            "doubled labels (2 x batch)",
        )?;
        check(
            doubled.cond.map(<[f32]>::len),
            cond_dim,
            "doubled cond (2 x batch x cond dim)",
        )?;
        check(
            doubled.guidance.map(<[f32]>::len),
            1,
            "doubled guidance (2 x batch)",
        )?;
        let single = first_rows(&doubled, batch, cond_dim);
        Ok(CfgField {
            inner,
            conv,
            guidance,
            doubled,
            single,
            x2,
            v2,
            evaluations: 0,
        })
    }

    /// Network evaluations so far (one per call: doubled or single batch).
    pub fn evaluations(&self) -> usize {
        self.evaluations
    }
}

impl<S: StateOps + ?Sized, F: ConditionalField<S> + ?Sized> VelocityField<S>
    for CfgField<'_, '_, S, F>
{
    fn eval(&mut self, ops: &mut S, t: f32, x: &S::Buf, v: &mut S::Buf) -> Result<(), Error> {
        let n = ops.len(x);
        if ops.len(v) != n || n.checked_mul(2) != Some(ops.len(self.x2)) {
            return Err(Error::ShapeMismatch {
                what: "guided state (batch x state dim)",
                expected: ops.len(self.x2) / 2,
                found: n,
            });
        }
        let tn = self.conv.network_time(t);
        self.evaluations += 1;
        if !self.guidance.active_at(t) {
            self.inner.eval_cond(ops, tn, x, &self.single, v)?;
        } else {
            ops.duplicate(self.x2, x);
            self.inner
                .eval_cond(ops, tn, self.x2, &self.doubled, self.v2)?;
            ops.guide(v, self.v2, self.guidance.scale);
        }
        if self.conv.negate_output {
            ops.scale(v, -1.0);
        }
        Ok(())
    }
}
