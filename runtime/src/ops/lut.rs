//! Activations by table lookup (`Lut`, the full-integer mode's activations) and the int8
//! quantizer they share with the full-integer Dense and Conv.
//!
//! A `Lut` node quantizes its input exactly as a full-integer Dense quantizes its own,
//! `q = clamp(round(x · (1 / scale)), -127, 127)` (ties away from zero), and reads
//! `table[q + 127]`. The table's 255 values are computed by the exporter (the function of
//! each quantized input) and stored in the file, so every target reads the same values: one
//! f32 multiplication, the quantizer and a load per element, whatever the function.

use super::weights::Weights;
use super::SIZE_ERR;
use crate::Error;

/// Values of a `Lut` table: one per int8 code `-127 ..= 127`.
pub const LUT_ENTRIES: usize = 255;

/// The f32 just below one half (`0x3EFF_FFFF`): added to `|y|` before truncating, it
/// rounds half away from zero (`quantize_fast`).
const BELOW_HALF: f32 = 0.499_999_97;

/// `|x|` by clearing the sign bit.
#[inline(always)]
fn abs(x: f32) -> f32 {
    f32::from_bits(x.to_bits() & 0x7FFF_FFFF)
}

/// `clamp(round(y), -127, 127)` with `round` ties away from zero and NaN to 0 — the value of
/// `int8::quantize_one` for `y = x · inv`, for every f32 `y` (checked for all 2³² of them):
/// `|y|` plus the f32 just below one half, truncated (Rust's cast saturates and maps NaN to
/// 0: one `VCVT` on the M4F), capped at 127, with the sign of `y`. The float addition rounds
/// to nearest, so a fraction of exactly one half reaches the next integer and anything
/// smaller does not.
#[cfg(feature = "weights-int8")]
#[inline(always)]
pub(crate) fn quantize_fast(y: f32) -> i32 {
    let t = ((abs(y) + BELOW_HALF) as i32).clamp(0, 127);
    if y.to_bits() >> 31 != 0 {
        -t
    } else {
        t
    }
}

/// The slot of `y = x · (1 / scale)` in a [`slot_table`]: `|q|` with the sign bit of `y` as
/// bit 7, `q` the int8 code of `y` (what [`quantize_fast`] computes before it negates).
#[inline(always)]
pub(crate) fn slot(y: f32) -> usize {
    let magnitude = ((abs(y) + BELOW_HALF) as i32).clamp(0, 127) as u32;
    ((magnitude | ((y.to_bits() >> 24) & 0x80)) & 0xFF) as usize
}

/// Writes into `t` a `Lut` table of [`LUT_ENTRIES`] values rearranged by sign for
/// [`slot`]: slot `|q|` for `q >= 0`, slot `128 + |q|` for `q <= 0` (both 0 and 128 hold
/// `q = 0`).
///
/// Errors: [`Error::Invalid`] when the table does not hold [`LUT_ENTRIES`] values.
fn slot_table(table: Weights<'_>, t: &mut [f32; 256]) -> Result<(), Error> {
    if table.len() != LUT_ENTRIES {
        return Err(SIZE_ERR);
    }
    let (pos, neg) = t.split_at_mut(128);
    // pos[k] = f(k); neg[0] = f(0), neg[k] = f(-k): the stored order reversed.
    table.load(127, pos).ok_or(SIZE_ERR)?;
    let (zero, rest) = neg.split_at_mut(1);
    table.load(0, rest).ok_or(SIZE_ERR)?;
    rest.reverse();
    zero.copy_from_slice(pos.get(..1).ok_or(SIZE_ERR)?);
    Ok(())
}

/// Calls `f(q, value)` for each code `q` in `-127 ..= 127` and its table value, in order,
/// through a 15-value stack buffer (a whole table would cost 1 KB of stack).
///
/// Errors: [`Error::Invalid`] when the table does not hold [`LUT_ENTRIES`] values.
#[cfg(feature = "weights-int8")]
fn each_entry(table: Weights<'_>, mut f: impl FnMut(i32, f32)) -> Result<(), Error> {
    const PART: usize = 15; // LUT_ENTRIES = 17 · 15
    if table.len() != LUT_ENTRIES {
        return Err(SIZE_ERR);
    }
    let mut buf = [0f32; PART];
    for part in 0..LUT_ENTRIES / PART {
        table.load(part * PART, &mut buf).ok_or(SIZE_ERR)?;
        for (i, v) in buf.iter().enumerate() {
            f((part * PART + i) as i32 - 127, *v);
        }
    }
    Ok(())
}

/// Whether a `Lut` table holds a NaN.
///
/// Errors: [`Error::Invalid`] when the table does not hold [`LUT_ENTRIES`] values.
#[cfg(feature = "weights-int8")]
pub fn lut_table_has_nan(table: Weights<'_>) -> Result<bool, Error> {
    let mut nan = false;
    each_entry(table, |_, v| nan |= v.is_nan())?;
    Ok(nan)
}

/// Input values (`rows · k`) from which a `Lut` and its full-integer reader pass codes
/// (`lut_codes`): building the code table costs about what quantizing 700 values does,
/// so fewer (one row of a 128-wide MLP on the Cortex-M4F) keep the f32 handoff.
#[cfg(feature = "weights-int8")]
pub const LUT_CODES_MIN_VALUES: usize = 1024;

/// The code table of a `Lut` whose only reader is a full-integer Dense (input 0): by
/// [`slot`], the Dense's int8 code of each table value. With it the `Lut` writes codes
/// instead of f32 values ([`lut_codes`]) and the Dense reads them as they are.
#[cfg(feature = "weights-int8")]
#[derive(Clone, Copy)]
pub(crate) struct LutCodes {
    /// `1 / scale` of the `Lut`.
    inv: f32,
    /// By [`slot`]: the reader's int8 code of the table value.
    codes: [i8; 256],
}

#[cfg(feature = "weights-int8")]
impl LutCodes {
    /// The codes of `table` (the `Lut`'s, at `scale`) under the reader's quantizer
    /// `quantize` (its code of one value); `None` when a table value is NaN (the reader
    /// turns a NaN into a NaN row, which a code cannot say).
    ///
    /// Errors: a table not of [`LUT_ENTRIES`] values, a `scale` that is not finite and
    /// positive.
    pub(crate) fn new(
        table: Weights<'_>,
        scale: f32,
        quantize: impl Fn(f32) -> i32,
    ) -> Result<Option<LutCodes>, Error> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::Invalid {
                what: "Lut scale must be finite and positive",
            });
        }
        let mut codes = [0i8; 256];
        let mut nan = false;
        each_entry(table, |q, v| {
            nan |= v.is_nan();
            // -127 ..= 127 (the quantizer clamps); slots as in `slot_table`.
            let c = quantize(v).clamp(-127, 127) as i8;
            let m = q.unsigned_abs() as usize;
            if q >= 0 {
                if let Some(d) = codes.get_mut(m) {
                    *d = c;
                }
            }
            if q <= 0 {
                if let Some(d) = codes.get_mut(128 + m) {
                    *d = c;
                }
            }
        })?;
        if nan {
            return Ok(None);
        }
        Ok(Some(LutCodes {
            inv: 1.0 / scale,
            codes,
        }))
    }

    /// `(y, code)` of one input value: `y = x · inv` (a running sum of them finds a NaN) and
    /// the reader's code of the `Lut`'s output.
    #[inline(always)]
    fn code(&self, x: f32) -> (f32, u8) {
        let y = x * self.inv;
        let c = self.codes.get(slot(y)).copied().unwrap_or(0);
        (y, c as u8)
    }
}

/// A `Lut` whose only reader is a full-integer Dense with `k` inputs, writing what that
/// Dense reads ([`LutCodes`]) into `out`'s bytes in place of f32 values: row `r` of `x`
/// (`k` values) becomes `k` int8 codes at byte `4·k·r` and, at byte `4·k·r + k`, 1 when
/// the row has a NaN (the Dense's row is then NaN, as the `Lut`'s NaN makes it), else 0.
/// The Dense gets, bit for bit, what it gets from [`lut`]'s f32 values.
///
/// Errors: [`Error::Invalid`] when `x` and `out` differ in length or are not rows of `k`.
#[cfg(feature = "weights-int8")]
pub(crate) fn lut_codes(x: &[f32], lut: &LutCodes, k: usize, out: &mut [f32]) -> Result<(), Error> {
    if x.len() != out.len() || k == 0 || !x.len().is_multiple_of(k) {
        return Err(SIZE_ERR);
    }
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
    for (xr, or) in x.chunks_exact(k).zip(bytes.chunks_exact_mut(4 * k)) {
        let (codes, rest) = or.split_at_mut(k);
        let mut sum = 0f32;
        let mut put = |c: &mut u8, v: f32| {
            let (y, q) = lut.code(v);
            sum += y;
            *c = q;
        };
        let mut quads = codes.chunks_exact_mut(4);
        let mut xs = xr.chunks_exact(4);
        for (c, v) in (&mut quads).zip(&mut xs) {
            if let ([c0, c1, c2, c3], [v0, v1, v2, v3]) = (c, v) {
                put(c0, *v0);
                put(c1, *v1);
                put(c2, *v2);
                put(c3, *v3);
            }
        }
        for (c, v) in quads.into_remainder().iter_mut().zip(xs.remainder()) {
            put(c, *v);
        }
        let nan = !sum.is_finite() && xr.iter().any(|v| v.is_nan());
        *rest.first_mut().ok_or(SIZE_ERR)? = u8::from(nan);
    }
    Ok(())
}

/// `out[i] = table[q + 127]` with `q` the int8 code of `x[i]` at `scale` (module docs); NaN
/// where `x[i]` is NaN (never a table value), `±∞` saturating like any value past the range.
///
/// The table is rearranged on the stack by sign (`slot_table`), so the slot is `|q|` with
/// the sign bit of `x · (1 / scale)` as bit 7 (`slot`). A NaN
/// is found by the running sum of the scaled values (as in the full-integer packing), which
/// is not finite when one is NaN or infinite; then the values are scanned once more.
///
/// Errors: [`Error::Invalid`] when `x` and `out` differ in length, the table does not hold
/// [`LUT_ENTRIES`] values, or `scale` is not finite and positive.
pub fn lut(x: &[f32], table: Weights<'_>, scale: f32, out: &mut [f32]) -> Result<(), Error> {
    if x.len() != out.len() || table.len() != LUT_ENTRIES {
        return Err(SIZE_ERR);
    }
    if !(scale.is_finite() && scale > 0.0) {
        return Err(Error::Invalid {
            what: "Lut scale must be finite and positive",
        });
    }
    let mut t = [0f32; 256];
    slot_table(table, &mut t)?;
    let inv = 1.0 / scale;
    let mut sum = 0f32;
    let lookup = |v: f32, sum: &mut f32| {
        let y = v * inv;
        *sum += y;
        // Masked to 8 bits: always in the table, so the check compiles away.
        t.get(slot(y)).copied().unwrap_or(f32::NAN)
    };
    let mut quads = out.chunks_exact_mut(4);
    let mut xs = x.chunks_exact(4);
    for (o, v) in (&mut quads).zip(&mut xs) {
        if let ([o0, o1, o2, o3], [v0, v1, v2, v3]) = (o, v) {
            *o0 = lookup(*v0, &mut sum);
            *o1 = lookup(*v1, &mut sum);
            *o2 = lookup(*v2, &mut sum);
            *o3 = lookup(*v3, &mut sum);
        }
    }
    for (o, v) in quads.into_remainder().iter_mut().zip(xs.remainder()) {
        *o = lookup(*v, &mut sum);
    }
    if !sum.is_finite() {
        for (o, v) in out.iter_mut().zip(x) {
            if v.is_nan() {
                *o = f32::NAN;
            }
        }
    }
    Ok(())
}
