//! Element-wise kernels: unary maps, binary ops and `select` (ONNX `Where`) with numpy
//! broadcasting (rank <= 6), Expand.

use super::{check_len, Binary, Dims, Unary, MAX_RANK, SIZE_ERR};
use crate::Error;

/// One output row of a binary operation: `$out[k] = $f(a[k], b[k])`, where each of `$a` and
/// `$b` is the whole row or one value repeated. A macro rather than a function taking a
/// closure, so the formula is inlined into each loop (through a closure, `pow` stayed one
/// out-of-line call per element and did not vectorize).
macro_rules! row_loops {
    ($out:expr, $a:expr, $b:expr, $f:expr) => {
        match ($a, $b) {
            ([x], [v]) => $out.fill($f(*x, *v)),
            ([x], b) => {
                for (y, v) in $out.iter_mut().zip(b) {
                    *y = $f(*x, *v);
                }
            }
            (a, [v]) => {
                for (y, x) in $out.iter_mut().zip(a) {
                    *y = $f(*x, *v);
                }
            }
            (a, b) => {
                for ((y, x), v) in $out.iter_mut().zip(a).zip(b) {
                    *y = $f(*x, *v);
                }
            }
        }
    };
}

/// Evaluates `$body` (a function of the listed arguments) compiled for the widest vectors
/// the host has: AVX-512F when `$n` (the element count) is at least 64, else AVX2, on x86_64
/// hosts with `std` when the CPU has them; as plain code elsewhere. The body is the same
/// code at every width; the loops in it (and in the `#[inline(always)]` functions it calls)
/// vectorize for that width. No FMA is enabled, so the bits are the same at every width.
macro_rules! widest {
    ($n:expr; fn($($arg:ident: $ty:ty = $val:expr),* $(,)?) -> $ret:ty $body:block) => {{
        #[allow(clippy::too_many_arguments)]
        fn portable($($arg: $ty),*) -> $ret $body
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx512f")]
        fn avx512($($arg: $ty),*) -> $ret $body
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx2")]
        fn avx2($($arg: $ty),*) -> $ret $body
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        #[allow(clippy::too_many_arguments)]
        fn run(n: usize, $($arg: $ty),*) -> $ret {
            if n >= 64 && std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F (checked just above); the body is safe
                // code.
                unsafe { avx512($($arg),*) }
            } else if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above); the body is safe code.
                unsafe { avx2($($arg),*) }
            } else {
                portable($($arg),*)
            }
        }
        #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
        #[allow(clippy::too_many_arguments)]
        fn run(_: usize, $($arg: $ty),*) -> $ret {
            portable($($arg),*)
        }
        run($n, $($val),*)
    }};
}

/// [`wide`] for a function too large for LLVM to inline through a closure or a function
/// item (one call per element, no vectors): the loops call the `#[inline(always)]`
/// function `$f` directly.
macro_rules! wide_direct {
    ($x:expr, $out:expr, $f:path) => {
        widest!($x.len(); fn(x: &[f32] = $x, out: &mut [f32] = $out) -> () {
            for (y, v) in out.iter_mut().zip(x) {
                *y = $f(*v);
            }
        })
    };
}

/// Strides (in elements) of `src`, right-aligned to `out`, with 0 on broadcast axes.
fn bcast_strides(src: &Dims, out: &Dims) -> Result<[usize; MAX_RANK], Error> {
    let (r, sr) = (out.rank(), src.rank());
    if sr > r {
        return Err(SIZE_ERR);
    }
    let lead = r - sr;
    let mut st = [0usize; MAX_RANK];
    let mut acc = 1usize;
    let pairs = src.as_slice().iter().zip(out.as_slice().iter().skip(lead));
    for ((sd, od), slot) in pairs.zip(st.iter_mut().skip(lead)).rev() {
        *slot = if sd == od {
            acc
        } else if *sd == 1 {
            0
        } else {
            return Err(SIZE_ERR);
        };
        acc = acc.checked_mul(*sd).ok_or(SIZE_ERR)?;
    }
    Ok(st)
}

/// Walks the output in rows: calls `f(out_offset, input_offsets, row_len,
/// input_inner_strides)` once per row, in order. Adjacent axes that every input walks
/// alike (contiguous over both, or broadcast over both) are merged first, so a row is as
/// long as the layouts allow (a `[N, C, H, W]` tensor times a `[C, 1, 1]` one runs in rows
/// of `H·W`, not `W`); the elements and their order are the same. The inner strides are 1
/// (contiguous) or 0 (broadcast).
fn walk<const N: usize>(
    out: &Dims,
    strides: &[[usize; MAX_RANK]; N],
    mut f: impl FnMut(usize, [usize; N], usize, [usize; N]) -> Result<(), Error>,
) -> Result<(), Error> {
    if out.elements() == Some(0) {
        return Ok(());
    }
    // Merge axes (size-1 axes are dropped: they move no offset).
    let mut dims = [1usize; MAX_RANK];
    let mut st = [[0usize; MAX_RANK]; N];
    let mut r = 0usize;
    for (ax, d) in out.as_slice().iter().copied().enumerate() {
        if d == 1 {
            continue;
        }
        let s_ax = |s: &[usize; MAX_RANK]| s.get(ax).copied().unwrap_or(0);
        let merge = r > 0
            && strides.iter().zip(&st).all(|(s, m)| {
                let prev = m.get(r - 1).copied().unwrap_or(0);
                s_ax(s).checked_mul(d) == Some(prev)
            });
        if merge {
            let slot = dims.get_mut(r - 1).ok_or(SIZE_ERR)?;
            *slot = slot.checked_mul(d).ok_or(SIZE_ERR)?;
            for (m, s) in st.iter_mut().zip(strides) {
                *m.get_mut(r - 1).ok_or(SIZE_ERR)? = s_ax(s);
            }
        } else {
            *dims.get_mut(r).ok_or(SIZE_ERR)? = d;
            for (m, s) in st.iter_mut().zip(strides) {
                *m.get_mut(r).ok_or(SIZE_ERR)? = s_ax(s);
            }
            r += 1;
        }
    }
    if r == 0 {
        return f(0, [0; N], 1, [0; N]);
    }
    let inner = dims.get(r - 1).copied().unwrap_or(1);
    let mut inner_strides = [0usize; N];
    for (s, m) in inner_strides.iter_mut().zip(&st) {
        *s = m.get(r - 1).copied().unwrap_or(0);
    }
    let mut idx = [0usize; MAX_RANK];
    let mut offs = [0usize; N];
    let mut o = 0usize;
    loop {
        f(o, offs, inner, inner_strides)?;
        o = o.wrapping_add(inner);
        // Advance the odometer over the outer axes (r - 2 down to 0).
        let mut ax = r - 1;
        loop {
            if ax == 0 {
                return Ok(());
            }
            ax -= 1;
            let d = dims.get(ax).copied().unwrap_or(1);
            let Some(i) = idx.get_mut(ax) else {
                return Err(SIZE_ERR);
            };
            *i += 1;
            let wrap = *i >= d;
            if wrap {
                *i = 0;
            }
            for (off, m) in offs.iter_mut().zip(&st) {
                let s = m.get(ax).copied().unwrap_or(0);
                *off = if wrap {
                    off.wrapping_add(s).wrapping_sub(s.wrapping_mul(d))
                } else {
                    off.wrapping_add(s)
                };
            }
            if !wrap {
                break;
            }
        }
    }
}

/// `out[i] = op(x[i])`.
pub fn unary(op: Unary, x: &[f32], out: &mut [f32]) -> Result<(), Error> {
    unary_linked(op, x, out, |_| true)
}

/// [`unary`] for the operations `linked` accepts; the others return [`Error::NotLinked`].
/// `linked` is meant to be constant per operation (a compile-time selection,
/// [`crate::select`] in the executor): the kernels it rejects are then not compiled in.
pub fn unary_linked(
    op: Unary,
    x: &[f32],
    out: &mut [f32],
    linked: impl Fn(Unary) -> bool,
) -> Result<(), Error> {
    if x.len() != out.len() {
        return Err(SIZE_ERR);
    }
    // One monomorphized loop per op (the match is outside the loop).
    // An op with no attributes: its own loop over `Unary::apply` of the constant op.
    macro_rules! plain {
        ($($op:ident),*) => {
            match op {
                $(Unary::$op if linked(Unary::$op) => wide(x, out, |v| Unary::$op.apply(v)),)*
                _ => return Err(Error::NotLinked { what: op.name() }),
            }
        };
    }
    match op {
        Unary::Relu if linked(op) => wide(x, out, |v| Unary::Relu.apply(v)),
        Unary::LeakyRelu { alpha } if linked(op) => {
            wide(x, out, |v| Unary::LeakyRelu { alpha }.apply(v))
        }
        Unary::Neg if linked(op) => map_simple(x, out, |v| -v, Simple::Neg),
        Unary::Square if linked(op) => map_simple(x, out, |v| v * v, Simple::Square),
        Unary::Abs if linked(op) => map_simple(x, out, |v| Unary::Abs.apply(v), Simple::Abs),
        Unary::Recip if linked(op) => map_simple(x, out, |v| 1.0 / v, Simple::Recip),
        // The exp-based ops: monomorphic loops that vectorize.
        Unary::Elu { alpha } if linked(op) => wide(x, out, |v| super::elu(v, alpha)),
        Unary::Selu { alpha, gamma } if linked(op) => {
            wide(x, out, |v| gamma * super::elu(v, alpha))
        }
        Unary::Tanh if linked(op) => wide(x, out, super::tanh),
        Unary::Sigmoid if linked(op) => wide(x, out, super::sigmoid),
        Unary::Silu if linked(op) => wide(x, out, |v| v * super::sigmoid(v)),
        Unary::GeluTanh if linked(op) => wide(x, out, super::gelu_tanh),
        Unary::Erf if linked(op) => wide_direct!(x, out, super::erf::erf),
        Unary::GeluErf if linked(op) => wide_direct!(x, out, super::erf::gelu_erf),
        _ => plain!(Softplus, Sin, Cos, Exp, Log, Sqrt, Rsqrt, Floor, Ceil, Round, Sign),
    }
    Ok(())
}

/// The unary operations with one IEEE operation per element, which Arm hard-float cores run
/// in assembly loops (8 values per load and store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Simple {
    /// `-x`
    Neg,
    /// `|x|`
    Abs,
    /// `x * x`
    Square,
    /// `1 / x`
    Recip,
}

/// `out[i] = f(x[i])` where `f` is `simple`: the assembly loop on Arm hard-float cores.
#[inline(always)]
fn map_simple(x: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32, simple: Simple) {
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    if super::arm::unary(simple, out, x) {
        return;
    }
    let _ = simple;
    for (y, v) in out.iter_mut().zip(x) {
        *y = f(*v);
    }
}

/// The binary operations with one IEEE operation per element, which Arm hard-float cores
/// run in assembly loops (8 values per load and store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arith {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
}

/// `out[i] = f(a[i], b[i])`; the assembly loop on Arm hard-float cores when `arith` is `f`.
#[inline(always)]
fn zip_vv(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    f: &impl Fn(f32, f32) -> f32,
    arith: Option<Arith>,
) {
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    if let Some(op) = arith {
        if super::arm::binary_vv(op, out, a, b) {
            return;
        }
    }
    let _ = arith;
    for ((y, x), v) in out.iter_mut().zip(a).zip(b) {
        *y = f(*x, *v);
    }
}

/// `out[i] = f(a[i], s)` (`s_first == false`) or `f(s, a[i])`; the assembly loop on Arm
/// hard-float cores when `arith` is `f`.
#[inline(always)]
fn zip_vs(
    out: &mut [f32],
    a: &[f32],
    s: f32,
    s_first: bool,
    f: &impl Fn(f32, f32) -> f32,
    arith: Option<Arith>,
) {
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    if let Some(op) = arith {
        if super::arm::binary_vs(op, out, a, s, s_first) {
            return;
        }
    }
    let _ = arith;
    if s_first {
        for (y, v) in out.iter_mut().zip(a) {
            *y = f(s, *v);
        }
    } else {
        for (y, x) in out.iter_mut().zip(a) {
            *y = f(*x, s);
        }
    }
}

/// The loops of the unary operations whose formula is more than one IEEE operation (the
/// exp-based ones, log, sin, ...; branch-free ones vectorize), compiled for the host's
/// widest vectors ([`widest`]).
fn wide(x: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
    widest!(x.len(); fn(x: &[f32] = x, out: &mut [f32] = out, f: impl Fn(f32) -> f32 = f) -> () {
        for (y, v) in out.iter_mut().zip(x) {
            *y = f(*v);
        }
    })
}

/// Element-wise `out = op(a, b)` with numpy broadcasting of `a` and `b` to `od`.
pub fn binary(
    op: Binary,
    a: &[f32],
    ad: &Dims,
    b: &[f32],
    bd: &Dims,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    binary_linked(op, a, ad, b, bd, out, od, |_| true)
}

/// [`binary`] for the operations `linked` accepts; the others return [`Error::NotLinked`]
/// (see [`unary_linked`]).
#[allow(clippy::too_many_arguments)]
pub fn binary_linked(
    op: Binary,
    a: &[f32],
    ad: &Dims,
    b: &[f32],
    bd: &Dims,
    out: &mut [f32],
    od: &Dims,
    linked: impl Fn(Binary) -> bool,
) -> Result<(), Error> {
    #[cfg(feature = "compact-code")]
    if linked(op) {
        return compact::binary(op, a, ad, b, bd, out, od, &linked);
    }
    match op {
        Binary::Add if linked(op) => arith(a, ad, b, bd, out, od, |x, y| x + y, Arith::Add),
        Binary::Sub if linked(op) => arith(a, ad, b, bd, out, od, |x, y| x - y, Arith::Sub),
        Binary::Mul if linked(op) => arith(a, ad, b, bd, out, od, |x, y| x * y, Arith::Mul),
        Binary::Div if linked(op) => arith(a, ad, b, bd, out, od, |x, y| x / y, Arith::Div),
        Binary::Add | Binary::Sub | Binary::Mul | Binary::Div => {
            Err(Error::NotLinked { what: op.name() })
        }
        Binary::Pow if linked(op) => pow(a, ad, b, bd, out, od),
        // The rest: one loop over `Binary::apply`, whose unlinked operations are cut out.
        other if linked(other) => bin(
            a,
            ad,
            b,
            bd,
            out,
            od,
            |x, y| apply_linked(other, x, y, &linked),
            None,
        ),
        other => Err(Error::NotLinked { what: other.name() }),
    }
}

/// The element-wise binary kernel of feature `compact-code`: one function per linked operation
/// serves every broadcast case (the default kernel has seven): a row of the output is
/// `op(a, b)` with each of `a`, `b` contiguous or one value repeated. Each output element is the
/// same `op(a, b)` of the same two values, so the results are bit for bit those of [`bin`].
#[cfg(feature = "compact-code")]
mod compact {
    use super::{bcast_strides, check_len, walk, Binary, Dims, Error, SIZE_ERR};

    #[allow(clippy::too_many_arguments)]
    pub(super) fn binary(
        op: Binary,
        a: &[f32],
        ad: &Dims,
        b: &[f32],
        bd: &Dims,
        out: &mut [f32],
        od: &Dims,
        linked: &impl Fn(Binary) -> bool,
    ) -> Result<(), Error> {
        check_len(a.len(), ad)?;
        check_len(b.len(), bd)?;
        check_len(out.len(), od)?;
        let sa = bcast_strides(ad, od)?;
        let sb = bcast_strides(bd, od)?;
        let n = out.len();
        // Each input whole or one value: the output is one row.
        if (a.len() == n || a.len() == 1) && (b.len() == n || b.len() == 1) {
            return row(op, out, (a, a.len() == n), (b, b.len() == n), linked);
        }
        walk(od, &[sa, sb], |o, [oa, ob], len, [ia, ib]| {
            let y = out.get_mut(o..o.wrapping_add(len)).ok_or(SIZE_ERR)?;
            // The inner strides are 1 (contiguous) or 0 (broadcast).
            fn part(x: &[f32], off: usize, inner: usize, len: usize) -> Result<&[f32], Error> {
                let take = if inner != 0 { len } else { 1 };
                x.get(off..off.wrapping_add(take)).ok_or(SIZE_ERR)
            }
            let x = part(a, oa, ia, len)?;
            let v = part(b, ob, ib, len)?;
            row(op, y, (x, ia != 0), (v, ib != 0), linked)
        })
    }

    /// `out[k] = op(a[k], b[k])`, where an input that is not `whole` is one value for all
    /// `k`.
    fn row(
        op: Binary,
        out: &mut [f32],
        (a, a_whole): (&[f32], bool),
        (b, b_whole): (&[f32], bool),
        linked: &impl Fn(Binary) -> bool,
    ) -> Result<(), Error> {
        if out.is_empty() {
            return Ok(());
        }
        // Each input: the whole run, or its one value (repeated).
        let n = out.len();
        let a = a.get(..if a_whole { n } else { 1 }).ok_or(SIZE_ERR)?;
        let b = b.get(..if b_whole { n } else { 1 }).ok_or(SIZE_ERR)?;
        // One function per operation (the closure is a constant operation's formula), one
        // pass over the output whatever repeats.
        fn each(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
            row_loops!(out, a, b, f)
        }
        macro_rules! ops {
            ($($op:ident),*) => {
                match op {
                    $(Binary::$op if linked(Binary::$op) => {
                        each(out, a, b, |x, y| Binary::$op.apply(x, y))
                    })*
                    _ => return Err(Error::NotLinked { what: op.name() }),
                }
            };
        }
        ops!(
            Add,
            Sub,
            Mul,
            Div,
            Pow,
            Max,
            Min,
            Greater,
            Less,
            GreaterOrEqual,
            LessOrEqual,
            Equal
        );
        Ok(())
    }
}

/// [`Binary::apply`] of the rarer operations, each kept only when `linked` (a constant
/// predicate) accepts it; NaN for the others (the caller checks `linked(op)` first).
#[inline(always)]
fn apply_linked(op: Binary, x: f32, y: f32, linked: &impl Fn(Binary) -> bool) -> f32 {
    macro_rules! keep {
        ($($op:ident),*) => {
            match op {
                $(Binary::$op if linked(Binary::$op) => Binary::$op.apply(x, y),)*
                _ => f32::NAN,
            }
        };
    }
    keep!(
        Pow,
        Max,
        Min,
        Greater,
        Less,
        GreaterOrEqual,
        LessOrEqual,
        Equal
    )
}

/// `out = f(a, b)` for one of [`Arith`] with broadcasting ([`bin`], whose contiguous runs
/// take the assembly loops on Arm hard-float cores), compiled for the host's widest vectors
/// ([`widest`]; one IEEE operation per element: the same bits at every width).
#[allow(clippy::too_many_arguments)]
fn arith(
    a: &[f32],
    ad: &Dims,
    b: &[f32],
    bd: &Dims,
    out: &mut [f32],
    od: &Dims,
    f: impl Fn(f32, f32) -> f32,
    op: Arith,
) -> Result<(), Error> {
    widest!(out.len(); fn(
        a: &[f32] = a,
        ad: &Dims = ad,
        b: &[f32] = b,
        bd: &Dims = bd,
        out: &mut [f32] = out,
        od: &Dims = od,
        f: impl Fn(f32, f32) -> f32 = f,
        op: Arith = op,
    ) -> Result<(), Error> {
        bin(a, ad, b, bd, out, od, f, Some(op))
    })
}

/// `Pow` with broadcasting ([`super::pow::pow`], branch-free): when each input is the whole
/// output or one value, the loops ([`row_loops`], calling `pow` directly so that it is inlined
/// and vectorizes) compiled for the host's widest vectors ([`widest`]); the other broadcasts
/// walk in rows ([`bin`]). The same checks and the same bits either way.
fn pow(
    a: &[f32],
    ad: &Dims,
    b: &[f32],
    bd: &Dims,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    use super::pow::pow;
    let n = out.len();
    let whole = |x: &[f32]| x.len() == n || x.len() == 1;
    if !(whole(a) && whole(b)) {
        return bin(a, ad, b, bd, out, od, pow, None);
    }
    check_len(a.len(), ad)?;
    check_len(b.len(), bd)?;
    check_len(n, od)?;
    bcast_strides(ad, od)?;
    bcast_strides(bd, od)?;
    widest!(n; fn(out: &mut [f32] = out, a: &[f32] = a, b: &[f32] = b) -> () {
        row_loops!(out, a, b, pow)
    });
    Ok(())
}

/// `out = f(a, b)` with broadcasting; `arith` names `f` when it is one of [`Arith`] (the
/// contiguous runs then take the assembly loops on Arm hard-float cores). Always inlined, so
/// that its loops take the target features of a caller compiled for wider vectors.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn bin(
    a: &[f32],
    ad: &Dims,
    b: &[f32],
    bd: &Dims,
    out: &mut [f32],
    od: &Dims,
    f: impl Fn(f32, f32) -> f32,
    arith: Option<Arith>,
) -> Result<(), Error> {
    check_len(a.len(), ad)?;
    check_len(b.len(), bd)?;
    check_len(out.len(), od)?;
    let sa = bcast_strides(ad, od)?;
    let sb = bcast_strides(bd, od)?;
    let n = out.len();
    // Fast paths (same element order and results as the general walk).
    if a.len() == n && b.len() == n {
        zip_vv(out, a, b, &f, arith);
        return Ok(());
    }
    if let ([bv], true) = (b, a.len() == n) {
        zip_vs(out, a, *bv, false, &f, arith);
        return Ok(());
    }
    if let ([av], true) = (a, b.len() == n) {
        zip_vs(out, b, *av, true, &f, arith);
        return Ok(());
    }
    walk(od, &[sa, sb], |o, [oa, ob], len, [ia, ib]| {
        let row = out.get_mut(o..o.wrapping_add(len)).ok_or(SIZE_ERR)?;
        match (ia != 0, ib != 0) {
            (true, true) => {
                let ar = a.get(oa..oa.wrapping_add(len)).ok_or(SIZE_ERR)?;
                let br = b.get(ob..ob.wrapping_add(len)).ok_or(SIZE_ERR)?;
                zip_vv(row, ar, br, &f, arith);
            }
            (true, false) => {
                let ar = a.get(oa..oa.wrapping_add(len)).ok_or(SIZE_ERR)?;
                let bv = *b.get(ob).ok_or(SIZE_ERR)?;
                zip_vs(row, ar, bv, false, &f, arith);
            }
            (false, true) => {
                let av = *a.get(oa).ok_or(SIZE_ERR)?;
                let br = b.get(ob..ob.wrapping_add(len)).ok_or(SIZE_ERR)?;
                zip_vs(row, br, av, true, &f, arith);
            }
            (false, false) => {
                let v = f(*a.get(oa).ok_or(SIZE_ERR)?, *b.get(ob).ok_or(SIZE_ERR)?);
                row.fill(v);
            }
        }
        Ok(())
    })
}

/// ONNX `Where`: `out = cond != 0 ? a : b`, with `cond`, `a` and `b` broadcast (numpy) to
/// `od`. `cond` is an f32 mask (e.g. a comparison's output): any value other than `±0.0`
/// (NaN included) selects `a`. Values are copied bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn select(
    cond: &[f32],
    cd: &Dims,
    a: &[f32],
    ad: &Dims,
    b: &[f32],
    bd: &Dims,
    out: &mut [f32],
    od: &Dims,
) -> Result<(), Error> {
    #[inline]
    fn pick(c: f32, x: f32, y: f32) -> f32 {
        if c != 0.0 {
            x
        } else {
            y
        }
    }
    check_len(cond.len(), cd)?;
    check_len(a.len(), ad)?;
    check_len(b.len(), bd)?;
    check_len(out.len(), od)?;
    let sc = bcast_strides(cd, od)?;
    let sa = bcast_strides(ad, od)?;
    let sb = bcast_strides(bd, od)?;
    let n = out.len();
    // Fast path: no broadcasting (same element order and results as the general walk).
    if cond.len() == n && a.len() == n && b.len() == n {
        for (((y, c), x), v) in out.iter_mut().zip(cond).zip(a).zip(b) {
            *y = pick(*c, *x, *v);
        }
        return Ok(());
    }
    // One input's part of an output row: `len` contiguous values (inner stride != 0) or one
    // value repeated (inner stride 0). Index `k` of the row is `part[k * step]`.
    fn part(src: &[f32], off: usize, inner: usize, len: usize) -> Result<(&[f32], usize), Error> {
        let (take, step) = if inner != 0 { (len, 1) } else { (1, 0) };
        let s = src.get(off..off.wrapping_add(take)).ok_or(SIZE_ERR)?;
        Ok((s, step))
    }
    walk(od, &[sc, sa, sb], |o, [oc, oa, ob], len, [ic, ia, ib]| {
        let row = out.get_mut(o..o.wrapping_add(len)).ok_or(SIZE_ERR)?;
        let (cr, cs) = part(cond, oc, ic, len)?;
        let (ar, as_) = part(a, oa, ia, len)?;
        let (br, bs) = part(b, ob, ib, len)?;
        for (k, y) in row.iter_mut().enumerate() {
            let c = *cr.get(k * cs).ok_or(SIZE_ERR)?;
            let x = *ar.get(k * as_).ok_or(SIZE_ERR)?;
            let v = *br.get(k * bs).ok_or(SIZE_ERR)?;
            *y = pick(c, x, v);
        }
        Ok(())
    })
}

/// ONNX `Expand`: broadcast `x` (dims `xd`) to `od`.
pub fn expand(x: &[f32], xd: &Dims, out: &mut [f32], od: &Dims) -> Result<(), Error> {
    check_len(x.len(), xd)?;
    check_len(out.len(), od)?;
    let sx = bcast_strides(xd, od)?;
    if x.len() == out.len() {
        out.copy_from_slice(x);
        return Ok(());
    }
    walk(od, &[sx], |o, [ox], len, [ix]| {
        let row = out.get_mut(o..o.wrapping_add(len)).ok_or(SIZE_ERR)?;
        if ix != 0 {
            row.copy_from_slice(x.get(ox..ox.wrapping_add(len)).ok_or(SIZE_ERR)?);
        } else {
            row.fill(*x.get(ox).ok_or(SIZE_ERR)?);
        }
        Ok(())
    })
}
