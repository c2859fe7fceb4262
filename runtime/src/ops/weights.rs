//! Constant weights as a `.frt` stores them: f32, f16, bf16, or int8 with one f32 or
//! bfloat16 scale per channel (docs/frt-format.md, "Weight types").
//!
//! The kernels that take weights (Dense, Conv, ConvTranspose, Gather) read them through
//! [`Weights`] and dequantize on the fly, element by element: f16 and bf16 widen to f32
//! exactly; an int8 value `q` of channel `c` becomes `f32::from(q) * scale[c]` (one IEEE
//! multiplication). The kernels then run their f32 arithmetic in their fixed order, so a
//! kernel's result with stored weights is bit for bit its result with the dequantized f32
//! weights ([`Weights::dequantize`]), on every target.

#[cfg(feature = "weights-f16")]
use half::{bf16, f16};

/// The scale an 8-bit int8 scale byte `code` stands for under its tensor's exponent `base`
/// (format dtype 5, `crate::format::ScaleType::Mini`): the f32 with exponent field
/// `base - (code >> 4)` and the top four mantissa bits `code & 15`, i.e.
/// `2^(base - 127 - (code >> 4)) · (1 + (code & 15)/16)`. Exact; a normal f32 for every
/// `base` in [`MINI_BASE_RANGE`].
#[inline(always)]
pub fn mini_scale(base: u8, code: u8) -> f32 {
    let exponent = u32::from(base).wrapping_sub(u32::from(code >> 4)) & 0xFF;
    f32::from_bits((exponent << 23) | (u32::from(code & 15) << 19))
}

/// The tensor exponents an 8-bit-scaled int8 tensor may store (each scale then a normal,
/// finite f32).
pub const MINI_BASE_RANGE: core::ops::RangeInclusive<u8> = 16..=254;

/// A constant weight tensor in its stored type, borrowed from the model's bytes.
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// IEEE half-precision values.
    #[cfg(feature = "weights-f16")]
    F16(&'a [f16]),
    /// bfloat16 values.
    #[cfg(feature = "weights-f16")]
    Bf16(&'a [bf16]),
    /// int8 values with one scale per channel.
    #[cfg(feature = "weights-int8")]
    Int8(Int8Weights<'a>),
}

/// int8 weights: element `e` belongs to channel `(e / inner) % scales.len()` (the channel
/// axis has `scales.len()` entries and `inner` elements after it per step) and stands for
/// `f32::from(values[e]) * scale[channel]`.
#[derive(Debug, Clone, Copy)]
#[cfg(feature = "weights-int8")]
pub struct Int8Weights<'a> {
    /// The quantized values, row-major in the tensor's shape.
    pub values: &'a [i8],
    /// One scale per channel (finite, non-negative).
    pub scales: Scales<'a>,
    /// Elements per step of the channel axis (the product of the dims after it).
    pub inner: usize,
}

/// The per-channel scales of [`Int8Weights`], as stored.
#[derive(Debug, Clone, Copy)]
#[cfg(feature = "weights-int8")]
pub enum Scales<'a> {
    /// f32 scales (dtype 3).
    F32(&'a [f32]),
    /// bfloat16 scales as their bits (dtype 4): scale `c` is `f32::from_bits(bits << 16)`.
    Bf16(&'a [u16]),
    /// 8-bit scales (dtype 5): scale `c` is [`mini_scale`]`(base, codes[c])`.
    Mini {
        /// The tensor's exponent (16..=254 in a valid file).
        base: u8,
        /// One byte per channel.
        codes: &'a [u8],
    },
}

#[cfg(feature = "weights-int8")]
impl Scales<'_> {
    /// Number of channels.
    pub fn len(&self) -> usize {
        match self {
            Scales::F32(s) => s.len(),
            Scales::Bf16(s) => s.len(),
            Scales::Mini { codes, .. } => codes.len(),
        }
    }

    /// Whether there are no channels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Scale `c` as f32 (bfloat16 widens exactly).
    #[inline(always)]
    pub fn get(&self, c: usize) -> Option<f32> {
        match self {
            Scales::F32(s) => s.get(c).copied(),
            Scales::Bf16(s) => s.get(c).map(|b| f32::from_bits(u32::from(*b) << 16)),
            Scales::Mini { base, codes } => codes.get(c).map(|code| mini_scale(*base, *code)),
        }
    }

    /// Whether every scale is finite and non-negative (the reader's rule; 8-bit scales:
    /// a tensor exponent in 16..=254).
    pub fn all_valid(&self) -> bool {
        if let Scales::Mini { base, .. } = self {
            if !MINI_BASE_RANGE.contains(base) {
                return false;
            }
        }
        (0..self.len()).all(|c| self.get(c).is_some_and(|s| s.is_finite() && s >= 0.0))
    }
}

/// The widest run [`Weights::load_runs`] computes int8 scales once for (a Dense strip, a
/// convolution kernel's output channels).
#[cfg(feature = "weights-int8")]
const MAX_RUN: usize = 128;

#[cfg(feature = "weights-int8")]
impl Int8Weights<'_> {
    /// Dequantizes `out.len()` values from element `start` into `out`; `None` when they are
    /// not all inside the tensor.
    #[inline]
    fn load(&self, start: usize, out: &mut [f32]) -> Option<()> {
        match self.scales {
            Scales::F32(s) => self.load_with(start, out, s.len(), |c| s.get(c).copied()),
            Scales::Bf16(s) => self.load_with(start, out, s.len(), |c| {
                s.get(c).map(|b| f32::from_bits(u32::from(*b) << 16))
            }),
            Scales::Mini { base, codes } => self.load_with(start, out, codes.len(), |c| {
                codes.get(c).map(|code| mini_scale(base, *code))
            }),
        }
    }

    /// [`Weights::load_runs`] for int8 values whose runs all cover the same channels (the
    /// channel is the last axis and the runs are whole rows apart): their scales are
    /// computed once (up to [`MAX_RUN`] of them). `None` for any other layout (the caller
    /// then loads run by run) and for runs outside the tensor.
    #[inline(never)]
    fn load_runs_shared(
        &self,
        start: usize,
        stride: usize,
        width: usize,
        out: &mut [f32],
    ) -> Option<()> {
        let channels = self.scales.len();
        let mut buf = [0f32; MAX_RUN];
        let sc = buf.get_mut(..width)?;
        for (j, s) in sc.iter_mut().enumerate() {
            *s = self.scales.get(start.checked_add(j)? % channels)?;
        }
        for (r, row) in out.chunks_exact_mut(width).enumerate() {
            let at = start.checked_add(r.checked_mul(stride)?)?;
            let q = self.values.get(at..at.checked_add(width)?)?;
            for ((o, v), s) in row.iter_mut().zip(q).zip(sc.iter()) {
                *o = f32::from(*v) * *s;
            }
        }
        Some(())
    }

    /// Whether runs `stride` apart, `width` wide, all cover the same channels and fit
    /// [`Int8Weights::load_runs_shared`]'s scale buffer.
    fn shares_scales(&self, stride: usize, width: usize) -> bool {
        let channels = self.scales.len();
        self.inner == 1 && channels > 0 && stride.is_multiple_of(channels) && width <= MAX_RUN
    }

    /// [`Int8Weights::load`] with the scale of channel `c` from `scale(c)`.
    #[inline(always)]
    fn load_with(
        &self,
        start: usize,
        out: &mut [f32],
        channels: usize,
        scale: impl Fn(usize) -> Option<f32>,
    ) -> Option<()> {
        let end = start.checked_add(out.len())?;
        let q = self.values.get(start..end)?;
        if channels == 0 || self.inner == 0 {
            return None;
        }
        if self.inner == 1 {
            // The channel is the last axis: it steps with every element.
            let mut c = start % channels;
            for (o, v) in out.iter_mut().zip(q) {
                *o = f32::from(*v) * scale(c)?;
                c += 1;
                if c == channels {
                    c = 0;
                }
            }
        } else {
            for (e, (o, v)) in out.iter_mut().zip(q).enumerate() {
                let c = ((start + e) / self.inner) % channels;
                *o = f32::from(*v) * scale(c)?;
            }
        }
        Some(())
    }
}

impl<'a> Weights<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Weights::F32(w) => w.len(),
            #[cfg(feature = "weights-f16")]
            Weights::F16(w) => w.len(),
            #[cfg(feature = "weights-f16")]
            Weights::Bf16(w) => w.len(),
            #[cfg(feature = "weights-int8")]
            Weights::Int8(w) => w.values.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The f32 values when the weights are stored as f32.
    pub fn as_f32(&self) -> Option<&'a [f32]> {
        match *self {
            Weights::F32(w) => Some(w),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Short name of the stored type (`f32`, `f16`, `bf16`, `int8`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Weights::F32(_) => "f32",
            #[cfg(feature = "weights-f16")]
            Weights::F16(_) => "f16",
            #[cfg(feature = "weights-f16")]
            Weights::Bf16(_) => "bf16",
            #[cfg(feature = "weights-int8")]
            Weights::Int8(_) => "int8",
        }
    }

    /// Writes the dequantized values `start .. start + out.len()` into `out`; `None` when
    /// they are not all inside the tensor.
    #[inline]
    pub fn load(&self, start: usize, out: &mut [f32]) -> Option<()> {
        let end = start.checked_add(out.len())?;
        match self {
            Weights::F32(w) => out.copy_from_slice(w.get(start..end)?),
            #[cfg(feature = "weights-f16")]
            Weights::F16(w) => {
                for (o, v) in out.iter_mut().zip(w.get(start..end)?) {
                    *o = f16_to_f32(*v);
                }
            }
            #[cfg(feature = "weights-f16")]
            Weights::Bf16(w) => {
                for (o, v) in out.iter_mut().zip(w.get(start..end)?) {
                    *o = v.to_f32();
                }
            }
            #[cfg(feature = "weights-int8")]
            Weights::Int8(w) => w.load(start, out)?,
        }
        Some(())
    }

    /// Dequantizes `out.len() / width` runs of `width` values into `out`, one after the
    /// other, run `r` from element `start + r · stride` (a block of a row-major matrix with
    /// rows `stride` apart); `None` when one is not inside the tensor or `width` is 0. The
    /// values are those of [`Weights::load`]; int8 with per-column scales computes each
    /// column's scale once instead of once per value.
    pub fn load_runs(
        &self,
        start: usize,
        stride: usize,
        width: usize,
        out: &mut [f32],
    ) -> Option<()> {
        if width == 0 {
            return None;
        }
        #[cfg(feature = "weights-int8")]
        if let Weights::Int8(w) = self {
            if w.shares_scales(stride, width) {
                return w.load_runs_shared(start, stride, width, out);
            }
        }
        for (r, row) in out.chunks_exact_mut(width).enumerate() {
            self.load(start.checked_add(r.checked_mul(stride)?)?, row)?;
        }
        Some(())
    }

    /// The dequantized value of element `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<f32> {
        let mut v = [0f32];
        self.load(i, &mut v)?;
        Some(v[0])
    }

    /// All values dequantized to f32 (what the kernels compute with).
    #[cfg(feature = "alloc")]
    pub fn dequantize(&self) -> alloc::vec::Vec<f32> {
        let mut out = alloc::vec![0f32; self.len()];
        // Cannot fail: `out` has exactly `len()` elements.
        let _ = self.load(0, &mut out);
        out
    }
}

/// Writes bias values `start .. start + out.len()` into `out` (dequantized), or zeros
/// without a bias; `None` when they are not all inside the bias.
#[inline(always)]
pub(crate) fn load_bias(bias: Option<Weights<'_>>, start: usize, out: &mut [f32]) -> Option<()> {
    match bias {
        // f32 first, as a plain branch, on hosts: through `Weights::load`'s match (a jump
        // table) the bias of a batch-1 Dense cost as much as a tenth of its multiply-adds
        // (firmware keeps the one path: code size).
        #[cfg(feature = "std")]
        Some(Weights::F32(b)) => {
            out.copy_from_slice(b.get(start..start.checked_add(out.len())?)?);
            Some(())
        }
        Some(b) => b.load(start, out),
        None => {
            out.fill(0.0);
            Some(())
        }
    }
}

/// A source of weight runs for the kernels' inner loops: a plain f32 slice (borrowed as is)
/// or stored [`Weights`] (dequantized into a caller's buffer). Kernels are generic over it,
/// so the f32 path compiles to the same code as before weights had types.
pub(crate) trait WeightRuns: Copy {
    /// Number of elements.
    fn total(&self) -> usize;
    /// `len` values from element `start` as f32, borrowed or dequantized into `buf` (at
    /// least `len` long); `None` when out of range.
    fn run<'b>(&'b self, start: usize, len: usize, buf: &'b mut [f32]) -> Option<&'b [f32]>;
    /// The values themselves when they are f32 (the kernels then walk them row by row
    /// without a copy or a per-run range check).
    #[inline(always)]
    fn as_f32_slice(&self) -> Option<&[f32]> {
        None
    }
}

impl WeightRuns for &[f32] {
    #[inline(always)]
    fn total(&self) -> usize {
        self.len()
    }

    #[inline(always)]
    fn run<'b>(&'b self, start: usize, len: usize, _: &'b mut [f32]) -> Option<&'b [f32]> {
        self.get(start..start.checked_add(len)?)
    }

    #[inline(always)]
    fn as_f32_slice(&self) -> Option<&[f32]> {
        Some(self)
    }
}

impl WeightRuns for Weights<'_> {
    #[inline(always)]
    fn total(&self) -> usize {
        self.len()
    }

    #[inline(always)]
    fn run<'b>(&'b self, start: usize, len: usize, buf: &'b mut [f32]) -> Option<&'b [f32]> {
        let out = buf.get_mut(..len)?;
        self.load(start, out)?;
        Some(out)
    }
}

/// `v` widened to f32 (exact): `half`'s conversion, which is software on cores without a
/// native one (about 25 Cortex-M4F instructions a value); on Arm cores with a hard-float FPU
/// the FPU's own `vcvtb.f32.f16` (FPv4 and later: the same exact widening, NaN quieted with
/// its payload kept, as `half` does).
#[cfg(feature = "weights-f16")]
#[inline(always)]
fn f16_to_f32(v: half::f16) -> f32 {
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    {
        let mut bits = u32::from(v.to_bits());
        // SAFETY: register-only FPU instructions of every hard-float Arm target this crate
        // builds for (FPv4-SP and later have the half-precision conversions); no memory,
        // stack or flags touched, s0 declared clobbered.
        unsafe {
            core::arch::asm!(
                "vmov s0, {b}",
                "vcvtb.f32.f16 s0, s0",
                "vmov {b}, s0",
                b = inout(reg) bits,
                out("s0") _,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        f32::from_bits(bits)
    }
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    {
        v.to_f32()
    }
}
