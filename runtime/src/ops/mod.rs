//! CPU reference kernels (no_std, no allocation, deterministic).
//!
//! Every kernel has a fixed evaluation order that does not depend on the batch size, the
//! row's position, or the CPU:
//!
//! * [`dense`] / [`matmul`] / [`conv`] / [`conv_transpose`]: each output element is
//!   `fma(a1, w1, fma(a0, w0, init))...` with `k` ascending, `init` = bias or `0.0`: every
//!   multiply-add is fused, rounded once, and every target computes that same result
//!   (x86 `vfmadd`, Arm `vfma.f32`, a correctly rounded software `fmaf` on riscv32 and
//!   wasm32: `exact::mul_add`). Elsewhere products and sums are separate IEEE operations
//!   (Rust never contracts them). Rows are processed in blocks (of 4; of 2 in the assembly
//!   tiles of Arm hard-float cores) for speed, which changes only the order *between*
//!   output elements, never within one.
//! * element-wise ops apply one scalar function per element; transcendental functions come
//!   from `libm` or this module's own f32 formulas (bit-identical on every target; the
//!   square root is correctly rounded, so the FPU's `vsqrt.f32` gives `libm`'s bits). Comparisons produce an f32 mask (1.0 / 0.0)
//!   and [`select`] (ONNX `Where`) only copies one of its operands.
//! * layout ops ([`concat_part`], [`transpose`], [`slice()`], [`expand`], [`gather`]) only
//!   copy.
//!
//! Kernels take dense row-major slices plus concrete [`Dims`] and return
//! [`Error::Invalid`] (never panic) when lengths and dims disagree.

use crate::Error;

/// Arm cores with a single-precision FPU (hard-float ABI): the f32 Dense and Conv tiles in
/// assembly.
#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
mod arm;
mod conv;
/// Convolution as im2col + GEMM on hosts (same bits as the direct kernel).
#[cfg(feature = "std")]
mod conv_gemm;
mod dense;
mod elementwise;
mod erf;
mod exact;
#[cfg(feature = "weights-int8")]
mod int8;
#[cfg(all(feature = "weights-int8", any(flowrt_dsp, test)))]
mod int8_packed;
mod layout;
mod lut;
mod pow;
mod reduce;
mod resize;
/// `sin` / `cos` in f32 and integer arithmetic (no f64: the same code, and bits, everywhere).
pub mod trig;
mod weights;
/// x86_64 AVX-512 tiles of the f32 Dense (same bits as every other path).
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[clippy::msrv = "1.89"]
mod x86;

pub use conv::{conv, conv_transpose, pool, PoolKind, Window};
pub use dense::{dense, matmul};
pub use elementwise::{binary, binary_linked, expand, select, unary, unary_linked};
#[cfg(feature = "weights-int8")]
pub use int8::{conv_q8, dense_q8};
#[cfg(feature = "weights-int8")]
pub(crate) use int8::{dense_q8_codes, lut_codes_for};
pub use layout::{concat_part, gather, slice, transpose, GATHER_INDEX_ERR};
#[cfg(feature = "weights-int8")]
pub(crate) use lut::lut_codes;
pub use lut::{lut, LUT_ENTRIES};
#[cfg(feature = "weights-int8")]
pub use lut::{lut_table_has_nan, LUT_CODES_MIN_VALUES};
pub use reduce::{norm, reduce, softmax, ReduceKind};
pub use resize::{pad, resize, CoordMode, PadMode, ResizeMode};
pub use weights::{mini_scale, Weights, MINI_BASE_RANGE};
#[cfg(feature = "weights-int8")]
pub use weights::{Int8Weights, Scales};

/// Longest reduction of a full-integer Dense or Conv: `127 · 127 · 133000 < 2^31`, so its
/// `i32` sum cannot overflow (docs/frt-format.md, "Full-integer Dense and Conv").
pub const MAX_INT8_REDUCTION: usize = 133_000;

/// Highest rank the kernels support.
pub const MAX_RANK: usize = 6;

pub(crate) const SIZE_ERR: Error = Error::Invalid {
    what: "tensor sizes are inconsistent with their shapes",
};

/// Concrete dims of a tensor (rank <= [`MAX_RANK`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    rank: u8,
    d: [usize; MAX_RANK],
}

impl Dims {
    /// Dims from a slice (`None` when the rank is larger than [`MAX_RANK`]).
    pub fn new(dims: &[usize]) -> Option<Dims> {
        if dims.len() > MAX_RANK {
            return None;
        }
        let mut d = [1usize; MAX_RANK];
        for (s, v) in d.iter_mut().zip(dims) {
            *s = *v;
        }
        Some(Dims {
            rank: dims.len() as u8,
            d,
        })
    }

    pub(crate) fn from_parts(rank: usize, d: [usize; MAX_RANK]) -> Dims {
        Dims {
            rank: rank.min(MAX_RANK) as u8,
            d,
        }
    }

    /// Number of dims.
    pub fn rank(&self) -> usize {
        usize::from(self.rank)
    }

    /// The dims as a slice.
    pub fn as_slice(&self) -> &[usize] {
        self.d.get(..self.rank()).unwrap_or(&[])
    }

    /// Product of the dims (`None` on overflow); 1 for rank 0.
    #[cfg_attr(feature = "compact-code", inline(never))]
    pub fn elements(&self) -> Option<usize> {
        self.as_slice()
            .iter()
            .try_fold(1usize, |a, d| a.checked_mul(*d))
    }

    /// Product of dims `from..to`.
    pub(crate) fn product(&self, from: usize, to: usize) -> Option<usize> {
        self.as_slice()
            .get(from..to)?
            .iter()
            .try_fold(1usize, |a, d| a.checked_mul(*d))
    }

    /// Dim `i`.
    pub fn get(&self, i: usize) -> Option<usize> {
        self.as_slice().get(i).copied()
    }
}

/// Checks `buf.len()` against `dims`.
pub(crate) fn check_len(buf_len: usize, dims: &Dims) -> Result<(), Error> {
    if dims.elements() == Some(buf_len) {
        Ok(())
    } else {
        Err(SIZE_ERR)
    }
}

/// Element-wise binary operations (numpy broadcasting); file codes in parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binary {
    /// `a + b` (0)
    Add,
    /// `a - b` (1)
    Sub,
    /// `a * b` (2)
    Mul,
    /// `a / b` (3)
    Div,
    /// `a ^ b`, C's `powf` within 1 ulp (`ops::pow`) (4)
    Pow,
    /// `max(a, b)`, NaN if either is NaN (5)
    Max,
    /// `min(a, b)`, NaN if either is NaN (6)
    Min,
    /// `a > b` as 1.0 / 0.0 (7)
    Greater,
    /// `a < b` as 1.0 / 0.0 (8)
    Less,
    /// `a >= b` as 1.0 / 0.0 (9)
    GreaterOrEqual,
    /// `a <= b` as 1.0 / 0.0 (10)
    LessOrEqual,
    /// `a == b` as 1.0 / 0.0 (11)
    Equal,
}

impl Binary {
    /// Code within the binary op-code block.
    pub fn code(self) -> u16 {
        match self {
            Binary::Add => 0,
            Binary::Sub => 1,
            Binary::Mul => 2,
            Binary::Div => 3,
            Binary::Pow => 4,
            Binary::Max => 5,
            Binary::Min => 6,
            Binary::Greater => 7,
            Binary::Less => 8,
            Binary::GreaterOrEqual => 9,
            Binary::LessOrEqual => 10,
            Binary::Equal => 11,
        }
    }

    /// Inverse of [`Binary::code`].
    pub fn from_code(c: u16) -> Option<Binary> {
        Some(match c {
            0 => Binary::Add,
            1 => Binary::Sub,
            2 => Binary::Mul,
            3 => Binary::Div,
            4 => Binary::Pow,
            5 => Binary::Max,
            6 => Binary::Min,
            7 => Binary::Greater,
            8 => Binary::Less,
            9 => Binary::GreaterOrEqual,
            10 => Binary::LessOrEqual,
            11 => Binary::Equal,
            _ => return None,
        })
    }

    /// ONNX-style name.
    pub fn name(self) -> &'static str {
        match self {
            Binary::Add => "Add",
            Binary::Sub => "Sub",
            Binary::Mul => "Mul",
            Binary::Div => "Div",
            Binary::Pow => "Pow",
            Binary::Max => "Max",
            Binary::Min => "Min",
            Binary::Greater => "Greater",
            Binary::Less => "Less",
            Binary::GreaterOrEqual => "GreaterOrEqual",
            Binary::LessOrEqual => "LessOrEqual",
            Binary::Equal => "Equal",
        }
    }

    /// Applies the operation to one pair of values (always inlined, as [`Unary::apply`]).
    #[inline(always)]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Pow => pow::pow(a, b),
            Binary::Max => max_nan(a, b),
            Binary::Min => min_nan(a, b),
            Binary::Greater => mask(a > b),
            Binary::Less => mask(a < b),
            Binary::GreaterOrEqual => mask(a >= b),
            Binary::LessOrEqual => mask(a <= b),
            Binary::Equal => mask(a == b),
        }
    }
}

/// A comparison result as an f32 mask: 1.0 true, 0.0 false (IEEE: any comparison with NaN
/// is false, and `-0.0 == 0.0`).
#[inline]
fn mask(c: bool) -> f32 {
    if c {
        1.0
    } else {
        0.0
    }
}

#[inline]
fn max_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a < b {
        b
    } else {
        a
    }
}

#[inline]
fn min_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if b < a {
        b
    } else {
        a
    }
}

/// Element-wise unary operations with their ONNX attributes; file codes in parentheses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    /// `max(x, 0)` (0)
    Relu,
    /// `x if x >= 0 else alpha * x` (1)
    LeakyRelu {
        /// Slope for negative x.
        alpha: f32,
    },
    /// `x if x > 0 else alpha * (exp(x) - 1)` (2)
    Elu {
        /// Scale of the negative part.
        alpha: f32,
    },
    /// `gamma * (x if x > 0 else alpha * (exp(x) - 1))` (3)
    Selu {
        /// ONNX `alpha`.
        alpha: f32,
        /// ONNX `gamma`.
        gamma: f32,
    },
    /// `1 / (1 + exp(-x))` (4)
    Sigmoid,
    /// `tanh(x)` (5)
    Tanh,
    /// `ln(1 + exp(x))` (6)
    Softplus,
    /// `x * sigmoid(x)` (7)
    Silu,
    /// `0.5 x (1 + erf(x / sqrt 2))` (8)
    GeluErf,
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` (9)
    GeluTanh,
    /// `sin(x)` (10)
    Sin,
    /// `cos(x)` (11)
    Cos,
    /// `exp(x)` (12)
    Exp,
    /// `ln(x)` (13)
    Log,
    /// `sqrt(x)` (14)
    Sqrt,
    /// `-x` (15)
    Neg,
    /// `|x|` (16)
    Abs,
    /// `erf(x)` (17)
    Erf,
    /// `1 / x` (18)
    Recip,
    /// `x * x` (19)
    Square,
    /// `1 / sqrt(x)` (20)
    Rsqrt,
    /// `floor(x)` (21)
    Floor,
    /// `ceil(x)` (22)
    Ceil,
    /// round half to even, as ONNX `Round` (23)
    Round,
    /// `-1`, `0` or `1` (NaN stays NaN), as ONNX `Sign` (24)
    Sign,
}

impl Unary {
    /// Code within the unary op-code block.
    pub fn code(self) -> u16 {
        match self {
            Unary::Relu => 0,
            Unary::LeakyRelu { .. } => 1,
            Unary::Elu { .. } => 2,
            Unary::Selu { .. } => 3,
            Unary::Sigmoid => 4,
            Unary::Tanh => 5,
            Unary::Softplus => 6,
            Unary::Silu => 7,
            Unary::GeluErf => 8,
            Unary::GeluTanh => 9,
            Unary::Sin => 10,
            Unary::Cos => 11,
            Unary::Exp => 12,
            Unary::Log => 13,
            Unary::Sqrt => 14,
            Unary::Neg => 15,
            Unary::Abs => 16,
            Unary::Erf => 17,
            Unary::Recip => 18,
            Unary::Square => 19,
            Unary::Rsqrt => 20,
            Unary::Floor => 21,
            Unary::Ceil => 22,
            Unary::Round => 23,
            Unary::Sign => 24,
        }
    }

    /// Inverse of [`Unary::code`]; `p0`, `p1` are the attribute words (alpha, gamma).
    pub fn from_code(c: u16, p0: f32, p1: f32) -> Option<Unary> {
        Some(match c {
            0 => Unary::Relu,
            1 => Unary::LeakyRelu { alpha: p0 },
            2 => Unary::Elu { alpha: p0 },
            3 => Unary::Selu {
                alpha: p0,
                gamma: p1,
            },
            4 => Unary::Sigmoid,
            5 => Unary::Tanh,
            6 => Unary::Softplus,
            7 => Unary::Silu,
            8 => Unary::GeluErf,
            9 => Unary::GeluTanh,
            10 => Unary::Sin,
            11 => Unary::Cos,
            12 => Unary::Exp,
            13 => Unary::Log,
            14 => Unary::Sqrt,
            15 => Unary::Neg,
            16 => Unary::Abs,
            17 => Unary::Erf,
            18 => Unary::Recip,
            19 => Unary::Square,
            20 => Unary::Rsqrt,
            21 => Unary::Floor,
            22 => Unary::Ceil,
            23 => Unary::Round,
            24 => Unary::Sign,
            _ => return None,
        })
    }

    /// The attribute values stored in the file: `(alpha, gamma)`, zero when unused.
    pub fn params(self) -> (f32, f32) {
        match self {
            Unary::LeakyRelu { alpha } | Unary::Elu { alpha } => (alpha, 0.0),
            Unary::Selu { alpha, gamma } => (alpha, gamma),
            _ => (0.0, 0.0),
        }
    }

    /// Name for `inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Unary::Relu => "Relu",
            Unary::LeakyRelu { .. } => "LeakyRelu",
            Unary::Elu { .. } => "Elu",
            Unary::Selu { .. } => "Selu",
            Unary::Sigmoid => "Sigmoid",
            Unary::Tanh => "Tanh",
            Unary::Softplus => "Softplus",
            Unary::Silu => "Silu",
            Unary::GeluErf => "Gelu",
            Unary::GeluTanh => "GeluTanh",
            Unary::Sin => "Sin",
            Unary::Cos => "Cos",
            Unary::Exp => "Exp",
            Unary::Log => "Log",
            Unary::Sqrt => "Sqrt",
            Unary::Neg => "Neg",
            Unary::Abs => "Abs",
            Unary::Erf => "Erf",
            Unary::Recip => "Reciprocal",
            Unary::Square => "Square",
            Unary::Rsqrt => "Rsqrt",
            Unary::Floor => "Floor",
            Unary::Ceil => "Ceil",
            Unary::Round => "Round",
            Unary::Sign => "Sign",
        }
    }

    /// Applies the operation to one value (the exact per-element formula of the kernel).
    ///
    /// Always inlined: the kernels call it with a constant operation, which must fold to
    /// that one formula (an out-of-line copy would link every operation's, libm's sin,
    /// erf, ... included, into a firmware that selects a few).
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Unary::Relu => relu(x),
            Unary::LeakyRelu { alpha } => leaky_relu(x, alpha),
            Unary::Elu { alpha } => elu(x, alpha),
            Unary::Selu { alpha, gamma } => gamma * elu(x, alpha),
            Unary::Sigmoid => sigmoid(x),
            Unary::Tanh => tanh(x),
            Unary::Softplus => softplus(x),
            Unary::Silu => x * sigmoid(x),
            Unary::GeluErf => erf::gelu_erf(x),
            Unary::GeluTanh => gelu_tanh(x),
            Unary::Sin => trig::sin(x),
            Unary::Cos => trig::cos(x),
            Unary::Exp => exp(x),
            Unary::Log => log(x),
            Unary::Sqrt => sqrt(x),
            Unary::Neg => -x,
            Unary::Abs => abs(x),
            Unary::Erf => erf::erf(x),
            Unary::Recip => 1.0 / x,
            Unary::Square => x * x,
            Unary::Rsqrt => 1.0 / sqrt(x),
            Unary::Floor => libm::floorf(x),
            Unary::Ceil => libm::ceilf(x),
            Unary::Round => libm::rintf(x),
            Unary::Sign => sign(x),
        }
    }
}

/// `libm::sqrtf` (correctly rounded; NaN results are `f32::NAN`); on Arm hard-float cores
/// the FPU's `vsqrt.f32`, with the same bits.
#[inline(always)]
pub(crate) fn sqrt(x: f32) -> f32 {
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    return arm::sqrt(x);
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    libm::sqrtf(x)
}

/// ONNX `Sign`: -1, 0 (keeping the sign of zero is not required: returns +0) or 1; NaN
/// stays NaN.
#[inline]
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else if x == 0.0 {
        0.0
    } else {
        x
    }
}

/// `|x|` by clearing the sign bit (what `fabsf` computes; inlined so loops vectorize).
#[inline(always)]
pub(crate) fn abs(x: f32) -> f32 {
    f32::from_bits(x.to_bits() & 0x7FFF_FFFF)
}

/// `|v|` with the sign of `s` (what `copysignf` computes; inlined so loops vectorize).
#[inline(always)]
pub(crate) fn copysign(v: f32, s: f32) -> f32 {
    f32::from_bits((v.to_bits() & 0x7FFF_FFFF) | (s.to_bits() & 0x8000_0000))
}

#[inline]
fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

#[inline]
fn leaky_relu(x: f32, alpha: f32) -> f32 {
    if x < 0.0 {
        alpha * x
    } else {
        x
    }
}

/// `e^y − 1` for `y <= 0`: for `|y| < 0.35` the degree-8 Taylor polynomial (full relative
/// accuracy near 0, truncation < 3e-10 relative), else `e^y − 1` from [`exp_nonpositive`]
/// (no cancellation there: `e^y <= 0.71`). NaN stays NaN. Branch-free where loops vectorize
/// ([`SCALAR_MATH`]).
#[inline(always)]
pub(crate) fn expm1_nonpositive(y: f32) -> f32 {
    expm1_nonpositive_as::<SCALAR_MATH>(y)
}

/// [`expm1_nonpositive`] with only the returned half evaluated (`LAZY`) or both halves and a
/// select: the same bits.
#[inline(always)]
pub(crate) fn expm1_nonpositive_as<const LAZY: bool>(y: f32) -> f32 {
    if LAZY {
        return if y > -0.35 {
            expm1_taylor(y)
        } else {
            exp_nonpositive(y) - 1.0
        };
    }
    let small = expm1_taylor(y);
    let large = exp_nonpositive(y) - 1.0;
    if y > -0.35 {
        small
    } else {
        large
    }
}

/// Whether the exp-based functions ([`expm1_nonpositive`], [`elu`], [`sigmoid`]) evaluate
/// only the half they return (a branch), instead of both halves and a select. Targets whose
/// loops vectorize keep the branch-free form; scalar cores (microcontrollers: a scalar FPU
/// or soft-float) skip the unused half. Both forms compute the same expression for the
/// half returned, so the bits are the same everywhere (`ops::tests` checks it).
pub(crate) const SCALAR_MATH: bool = !cfg!(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "wasm32"
));

/// The degree-8 Taylor polynomial of `e^y − 1` (for `|y| < 0.35`, [`expm1_nonpositive`]).
#[inline(always)]
fn expm1_taylor(y: f32) -> f32 {
    y * (1.0
        + y * (0.5
            + y * (1.0 / 6.0
                + y * (1.0 / 24.0
                    + y * (1.0 / 120.0
                        + y * (1.0 / 720.0 + y * (1.0 / 5040.0 + y * (1.0 / 40320.0))))))))
}

/// `x` for `x > 0`, else `alpha * expm1(x)` (expm1 keeps accuracy near 0); branch-free
/// where loops vectorize ([`SCALAR_MATH`]).
#[inline(always)]
pub(crate) fn elu(x: f32, alpha: f32) -> f32 {
    elu_as::<SCALAR_MATH>(x, alpha)
}

/// [`elu`] lazy or branch-free (see [`expm1_nonpositive_as`]).
#[inline(always)]
pub(crate) fn elu_as<const LAZY: bool>(x: f32, alpha: f32) -> f32 {
    if LAZY {
        return if x > 0.0 {
            x
        } else {
            alpha * expm1_nonpositive_as::<true>(x)
        };
    }
    let neg = if x > 0.0 { 0.0 } else { x };
    let e = alpha * expm1_nonpositive_as::<false>(neg);
    if x > 0.0 {
        x
    } else {
        e
    }
}

/// `e^y` for `y <= 0` in f32 only, branch-free (so loops over it vectorize) and with only
/// IEEE basic operations and integer bit manipulation, so every target computes the same
/// bits: `y = k ln2 + r` (Cody–Waite, `k` rounded by the `1.5·2^23` trick, `|r| <= ln2/2`),
/// `e^r` by its degree-7 Taylor polynomial (truncation < 5e-9), times `2^k` built in the
/// exponent bits. Accurate to about 1 ulp. Arguments below -87 are clamped to -87 (the
/// result, ~1.6e-38, stays normal; the exact value would be smaller still); NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_nonpositive(y: f32) -> f32 {
    let y = if y < -87.0 { -87.0 } else { y };
    let (p, ki) = exp_reduced(y);
    let scale = f32::from_bits((ki.wrapping_add(127) as u32).wrapping_shl(23));
    p * scale
}

/// ln 2 with 12 trailing zero bits (0x3F317200): `k * LN2_HI` is exact for `|k| < 2^12`.
const LN2_HI: f32 = 0.693_145_75;
/// ln 2 − [`LN2_HI`].
const LN2_LO: f32 = 1.428_606_8e-6;

/// The shared core of [`exp_nonpositive`] and [`exp`]: `e^y = p · 2^k` with `y = k ln2 + r`
/// (Cody–Waite, `k` rounded by the `1.5·2^23` trick, `|r| <= ln2/2`) and `p = e^r` by its
/// degree-7 Taylor polynomial. Returns `(p, k)`; `|y|` must be below 2^22.
#[inline(always)]
fn exp_reduced(y: f32) -> (f32, i32) {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let shifted = y * LOG2E + MAGIC;
    let k = shifted - MAGIC;
    let ki = (shifted.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = (y - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    (p, ki)
}

/// `e^x` for every `x`, branch-free (loops over it vectorize) and from IEEE basic operations
/// and integer bit manipulation only, so every target computes the same bits: the reduction
/// and polynomial of [`exp_nonpositive`], times `2^k` applied as two normal powers of two
/// `2^(k>>1) · 2^(k - k>>1)` so that results near `f32::MAX` and in the subnormal range round
/// once, as the exact value would. Within 1 ulp (libm's `expf`, used before: branching).
/// Overflows to `+inf` above ~88.72, is 0 below ~-103.97; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = if x < -104.0 { -104.0 } else { x };
    let x = if x > 89.0 { 89.0 } else { x };
    let (p, ki) = exp_reduced(x);
    exp_scale(p, ki)
}

/// `p · 2^k` for `p` near 1 and `|k| <= 254`, as two normal powers of two `2^(k>>1) ·
/// 2^(k - k>>1)`: results near `f32::MAX` and in the subnormal range round once, as the
/// exact value would.
#[inline(always)]
pub(crate) fn exp_scale(p: f32, k: i32) -> f32 {
    let k1 = k >> 1;
    let pow2 = |e: i32| f32::from_bits((e.wrapping_add(127) as u32).wrapping_shl(23));
    p * pow2(k1) * pow2(k.wrapping_sub(k1))
}

/// The natural logarithm, branch-free and from IEEE basic operations and integer bit
/// manipulation only (the same bits on every target): `x = 2^k (1 + f)` with `1 + f` in
/// [√2/2, √2) (subnormals scaled by 2^25 first), then `log(1 + f)` as
/// `f - (f²/2 - s (f²/2 + R))`, `s = f / (2 + f)`, with musl's minimax `R(s²)` (`logf.c`).
/// Within 1 ulp (libm's `logf`, used before: branching). `log(±0) = -inf`, `log(+inf) =
/// +inf`, negative arguments and NaN give NaN.
#[inline(always)]
pub(crate) fn log(x: f32) -> f32 {
    const LG1: f32 = f32::from_bits(0x3f2a_aaaa); // 0xaaaaaa.0p-24 ≈ 0.6666666
    const LG2: f32 = f32::from_bits(0x3ecc_ce13); // 0xccce13.0p-25 ≈ 0.4000097
    const LG3: f32 = f32::from_bits(0x3e91_e9ee); // 0x91e9ee.0p-25 ≈ 0.2849879
    const LG4: f32 = f32::from_bits(0x3e78_9e26); // 0xf89e26.0p-26 ≈ 0.2427908
    let sub = x < f32::MIN_POSITIVE;
    let xs = if sub { x * 33_554_432.0 } else { x }; // 2^25
    let k0: i32 = if sub { -25 - 0x7f } else { -0x7f };
    // 1 + f in [√2/2, √2): the musl re-bias (0x3f3504f3 is √2/2).
    let ix = (xs.to_bits() as i32).wrapping_add(0x3f80_0000 - 0x3f35_04f3);
    let k = (ix >> 23).wrapping_add(k0) as f32;
    let f = f32::from_bits(((ix & 0x007f_ffff) + 0x3f35_04f3) as u32) - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let r = z * (LG1 + w * LG3) + w * (LG2 + w * LG4);
    let hfsq = 0.5 * f * f;
    let y = s * (hfsq + r) + k * LN2_LO - hfsq + f + k * LN2_HI;
    let y = if x == 0.0 { f32::NEG_INFINITY } else { y };
    let y = if x == f32::INFINITY { x } else { y };
    if x >= 0.0 {
        y
    } else {
        f32::NAN
    }
}

/// `tanh(x) = sign(x) · (−e)/(2 + e)` with `e = expm1(−2|x|)` ([`expm1_nonpositive`]):
/// branch-free, full relative accuracy near 0, exactly ±1 for large |x|, `tanh(−0) = −0`,
/// NaN stays NaN.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let e = expm1_nonpositive(-2.0 * abs(x));
    copysign(-e / (2.0 + e), x)
}

/// Stable logistic: `exp` only of `-|x|` ([`exp_nonpositive`]), the two halves selected
/// without a branch where loops vectorize ([`SCALAR_MATH`]).
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    sigmoid_as::<SCALAR_MATH>(x)
}

/// [`sigmoid`] lazy or branch-free (see [`expm1_nonpositive_as`]).
#[inline(always)]
pub(crate) fn sigmoid_as<const LAZY: bool>(x: f32) -> f32 {
    let e = exp_nonpositive(-abs(x));
    let d = 1.0 + e;
    if LAZY {
        return if x >= 0.0 { 1.0 / d } else { e / d };
    }
    // The numerator selected first: one division where vectors evaluate both halves (a
    // vector division costs as much as the rest of the formula), the same bits.
    let num = if x >= 0.0 { 1.0 } else { e };
    num / d
}

/// `max(x, 0) + log1p(e^-|x|)` from [`exp_nonpositive`] and [`log1p_unit`]: branch-free
/// (loops over it vectorize), the same bits on every target, within 2 ulp of the exact
/// value (libm's `log1pf(expf(..))`, used before: 1.6 ulp, branching, ~120 Cortex-M4F
/// instructions against ~50). No overflow; below -87 the result (< 1.7e-38) is 0.
#[inline(always)]
fn softplus(x: f32) -> f32 {
    let pos = if x > 0.0 { x } else { 0.0 };
    let e = exp_nonpositive(-abs(x));
    let e = if x < -87.0 { 0.0 } else { e };
    pos + log1p_unit(e)
}

/// `ln(1 + e)` for `e` in [0, 1] (NaN stays NaN), branch-free and from IEEE basic
/// operations only: `1 + e = 2^k (1 + f)` with `f` exact (`f = e`, or `(e - 1) / 2` when
/// `e >= 0.5`, Sterbenz), then fdlibm's `log1p(f) = f - (f²/2 - s (f²/2 + R(s²)))`,
/// `s = f / (2 + f)`, `R` the odd series of `2 atanh` to `s^11` (truncation < 1e-8
/// relative for `|s| <= 0.2`). Within 1 ulp on [0, 1]; exact to the last bit for tiny `e`.
#[inline(always)]
fn log1p_unit(e: f32) -> f32 {
    let big = e >= 0.5;
    let f = if big { (e - 1.0) * 0.5 } else { e };
    let k: f32 = if big { 1.0 } else { 0.0 };
    let s = f / (2.0 + f);
    let z = s * s;
    let r =
        z * (2.0 / 3.0 + z * (2.0 / 5.0 + z * (2.0 / 7.0 + z * (2.0 / 9.0 + z * (2.0 / 11.0)))));
    let hfsq = 0.5 * f * f;
    k * LN2_HI - ((hfsq - (s * (hfsq + r) + k * LN2_LO)) - f)
}

/// `0.5 x (1 + tanh(u))` with `u = sqrt(2/pi) (x + 0.044715 x^3)`, evaluated as the
/// identical `x * sigmoid(2u)` (no cancellation for negative x).
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    let u = C * (x + 0.044_715 * (x * x * x));
    x * sigmoid(2.0 * u)
}

#[cfg(all(test, feature = "weights-int8"))]
mod int8_tests;
#[cfg(test)]
mod tests;
