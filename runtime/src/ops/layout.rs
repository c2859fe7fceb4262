//! Layout kernels: Concat (one input at a time), Transpose, Slice. They only copy.

use super::weights::Weights;
use super::{check_len, Dims, MAX_RANK, SIZE_ERR};
use crate::Error;

/// Copies input `x` (dims `xd`) into `out` (dims `od`) at position `offset` along `axis`:
/// one call per Concat input, `offset` = sum of the previous inputs' `axis` dims.
pub fn concat_part(
    x: &[f32],
    xd: &Dims,
    out: &mut [f32],
    od: &Dims,
    axis: usize,
    offset: usize,
) -> Result<(), Error> {
    check_len(x.len(), xd)?;
    check_len(out.len(), od)?;
    let r = od.rank();
    if xd.rank() != r || axis >= r || out.is_empty() {
        return Err(SIZE_ERR);
    }
    let inner = od.product(axis + 1, r).ok_or(SIZE_ERR)?;
    let (xa, oa) = (xd.get(axis).ok_or(SIZE_ERR)?, od.get(axis).ok_or(SIZE_ERR)?);
    if offset.checked_add(xa).is_none_or(|e| e > oa) || inner == 0 || xa == 0 {
        return Err(SIZE_ERR);
    }
    let same_outside = (0..r).all(|i| i == axis || xd.get(i) == od.get(i));
    if !same_outside {
        return Err(SIZE_ERR);
    }
    let (o_chunk, x_chunk) = (oa * inner, xa * inner);
    let (start, end) = (offset * inner, (offset + xa) * inner);
    if out.len() / o_chunk != x.len() / x_chunk {
        return Err(SIZE_ERR);
    }
    for (oc, xc) in out.chunks_exact_mut(o_chunk).zip(x.chunks_exact(x_chunk)) {
        oc.get_mut(start..end).ok_or(SIZE_ERR)?.copy_from_slice(xc);
    }
    Ok(())
}

/// Transpose: output axis `i` is input axis `perm[i]`.
pub fn transpose(
    x: &[f32],
    xd: &Dims,
    perm: &[u8],
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    check_len(x.len(), xd)?;
    check_len(out.len(), od)?;
    let r = xd.rank();
    if perm.len() != r || od.rank() != r {
        return Err(SIZE_ERR);
    }
    // Contiguous strides of x, then permuted into output order.
    let mut xs = [0usize; MAX_RANK];
    let mut acc = 1usize;
    for (s, d) in xs.iter_mut().zip(xd.as_slice()).rev() {
        *s = acc;
        acc = acc.checked_mul(*d).ok_or(SIZE_ERR)?;
    }
    let mut st = [0usize; MAX_RANK];
    for (i, (s, p)) in st.iter_mut().zip(perm).enumerate() {
        let p = usize::from(*p);
        if xd.get(p) != od.get(i) {
            return Err(SIZE_ERR);
        }
        *s = xs.get(p).copied().ok_or(SIZE_ERR)?;
    }
    if out.is_empty() {
        return Ok(());
    }
    if r == 0 {
        out.copy_from_slice(x);
        return Ok(());
    }
    walk_strided(od, &st, |o, ox, len, s| {
        let row = out.get_mut(o..o + len).ok_or(SIZE_ERR)?;
        if s == 1 {
            row.copy_from_slice(x.get(ox..ox.wrapping_add(len)).ok_or(SIZE_ERR)?);
        } else {
            let src = x.get(ox..).ok_or(SIZE_ERR)?;
            let mut it = src.iter().step_by(s.max(1));
            for y in row.iter_mut() {
                *y = *it.next().ok_or(SIZE_ERR)?;
            }
        }
        Ok(())
    })
}

/// Odometer over all but the innermost output axis with one strided source.
fn walk_strided(
    od: &Dims,
    st: &[usize; MAX_RANK],
    mut f: impl FnMut(usize, usize, usize, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    let dims = od.as_slice();
    let r = dims.len();
    let inner = dims.last().copied().ok_or(SIZE_ERR)?;
    let inner_stride = st.get(r - 1).copied().ok_or(SIZE_ERR)?;
    let mut idx = [0usize; MAX_RANK];
    let (mut o, mut ox) = (0usize, 0usize);
    loop {
        f(o, ox, inner, inner_stride)?;
        o += inner;
        let mut ax = r - 1;
        loop {
            if ax == 0 {
                return Ok(());
            }
            ax -= 1;
            let d = dims.get(ax).copied().ok_or(SIZE_ERR)?;
            let s = st.get(ax).copied().ok_or(SIZE_ERR)?;
            let i = idx.get_mut(ax).ok_or(SIZE_ERR)?;
            *i += 1;
            if *i < d {
                ox = ox.wrapping_add(s);
                break;
            }
            *i = 0;
            ox = ox.wrapping_sub(s.wrapping_mul(d - 1));
        }
    }
}

/// Slice along `axis`: indices `start, start + step, ...` (`out`'s `axis` dim of them).
pub fn slice(
    x: &[f32],
    xd: &Dims,
    out: &mut [f32],
    od: &Dims,
    axis: usize,
    start: usize,
    step: usize,
) -> Result<(), Error> {
    check_len(x.len(), xd)?;
    check_len(out.len(), od)?;
    let r = xd.rank();
    if od.rank() != r || axis >= r || step == 0 || out.is_empty() {
        return Err(SIZE_ERR);
    }
    let inner = xd.product(axis + 1, r).ok_or(SIZE_ERR)?;
    let (d, len) = (xd.get(axis).ok_or(SIZE_ERR)?, od.get(axis).ok_or(SIZE_ERR)?);
    let last = (len - 1)
        .checked_mul(step)
        .and_then(|v| v.checked_add(start));
    let same_outside = (0..r).all(|i| i == axis || xd.get(i) == od.get(i));
    if inner == 0 || last.is_none_or(|l| l >= d) || !same_outside {
        return Err(SIZE_ERR);
    }
    for (oc, xc) in out
        .chunks_exact_mut(len * inner)
        .zip(x.chunks_exact(d * inner))
    {
        for (j, orow) in oc.chunks_exact_mut(inner).enumerate() {
            let src = (start + j * step) * inner;
            orow.copy_from_slice(xc.get(src..src + inner).ok_or(SIZE_ERR)?);
        }
    }
    Ok(())
}

/// The error of a [`gather`] index that is not an integer in `0..N`.
pub const GATHER_INDEX_ERR: Error = Error::BadArgument {
    what: "label out of range: a Gather index is not an integer in 0..N (N = table rows)",
};

/// Gather along axis 0 (embedding lookup): `out[i, ...] = table[idx[i], ...]`.
///
/// `table` has dims `td` (`[N, ...]`); `idx` holds any number of indices as f32 values
/// that must be exact integers in `0..N` — anything else (negative, `>= N`, fractional,
/// NaN, infinite) is [`GATHER_INDEX_ERR`], checked for every index before anything is
/// written. `out` has `idx.len() * row` elements, `row` = product of `td[1..]`. A table in
/// another stored type than f32 is dequantized row by row ([`Weights`]).
pub fn gather(table: Weights<'_>, td: &Dims, idx: &[f32], out: &mut [f32]) -> Result<(), Error> {
    check_len(table.len(), td)?;
    if td.rank() == 0 {
        return Err(SIZE_ERR);
    }
    let n = td.get(0).ok_or(SIZE_ERR)?;
    let row = td.product(1, td.rank()).ok_or(SIZE_ERR)?;
    if row == 0 || idx.len().checked_mul(row) != Some(out.len()) {
        return Err(SIZE_ERR);
    }
    let index = |v: f32| -> Result<usize, Error> {
        // `n as f32` may round up for huge tables; the `get` below still bounds the read.
        if v >= 0.0 && v < n as f32 && libm::truncf(v) == v {
            Ok(v as usize)
        } else {
            Err(GATHER_INDEX_ERR)
        }
    };
    for v in idx {
        if index(*v)? >= n {
            return Err(GATHER_INDEX_ERR);
        }
    }
    for (o, v) in out.chunks_exact_mut(row).zip(idx) {
        let start = index(*v)?.checked_mul(row).ok_or(SIZE_ERR)?;
        table.load(start, o).ok_or(GATHER_INDEX_ERR)?;
    }
    Ok(())
}
