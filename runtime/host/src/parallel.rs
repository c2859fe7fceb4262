//! The CPU executor on several threads: the rows of each network evaluation are split into
//! contiguous blocks, one per thread, each evaluated by its own [`CpuField`] in its own arena.
//!
//! The solver, its step-size control and every reduction over the batch stay on the calling
//! thread; only the network evaluation, in which each row is computed independently of the
//! others (flowrt's executor guarantees a row's bytes do not depend on the batch size or the
//! row's position), is split. So samples are byte-identical whatever the thread count.

use flowrt::exec::CpuField;
use flowrt::field::{ConditionalField, Conditioning};
use flowrt::{CpuOps, Model};

use crate::{HostError, Result};

/// Below this many multiply-adds per thread and evaluation, starting the threads costs more
/// than it saves (a few microseconds each): smaller evaluations run on the calling thread.
const MIN_MACS_PER_THREAD: u64 = 200_000;

/// The thread count `requested` means: itself, or for 0 (the default of `--threads`) the
/// machine's physical cores.
pub fn resolve_threads(requested: usize) -> usize {
    if requested == 0 {
        num_cpus::get_physical().max(1)
    } else {
        requested
    }
}

/// How many threads a CPU evaluation of `rows` rows of `model` should use, at most
/// [`resolve_threads`]`(requested)`: one per block of rows big enough to be worth a thread.
pub fn threads_for(model: &Model<'_>, rows: usize, requested: usize) -> usize {
    let requested = resolve_threads(requested);
    let macs = crate::select::macs_per_eval(model, rows);
    let worth = (macs / MIN_MACS_PER_THREAD).max(1);
    requested
        .min(rows.max(1))
        .min(usize::try_from(worth).unwrap_or(usize::MAX))
}

/// `rows` split into `parts` contiguous blocks whose sizes differ by at most one.
fn blocks(rows: usize, parts: usize) -> impl Iterator<Item = (usize, usize)> {
    let parts = parts.max(1);
    let (base, extra) = (rows / parts, rows % parts);
    (0..parts).scan(0usize, move |start, i| {
        let len = base + usize::from(i < extra);
        let block = (*start, *start + len);
        *start += len;
        Some(block)
    })
}

/// A [`ConditionalField`] that evaluates its rows on a pool of threads, one [`CpuField`]
/// per block of rows.
pub struct ParallelCpuField<'m, 'a> {
    fields: Vec<CpuField<'m, 'a>>,
    /// Each field's capacity in rows (the blocks of the full batch).
    capacity: Vec<usize>,
    /// State values per row.
    dim: usize,
    pool: rayon::ThreadPool,
}

impl<'m, 'a> ParallelCpuField<'m, 'a> {
    /// One field per arena; `arenas[i]` must hold [`Model::required_arena_bytes`] of the
    /// `i`-th of `arenas.len()` blocks of `rows` ([`ParallelCpuField::arena_sizes`]).
    ///
    /// Errors: the fields' own errors (an arena too small or misaligned), or a thread pool
    /// that cannot be started.
    pub fn new(model: &Model<'m>, rows: usize, arenas: Vec<&'a mut [u8]>) -> Result<Self> {
        let parts = arenas.len();
        let capacity: Vec<usize> = blocks(rows, parts).map(|(a, b)| b - a).collect();
        let fields = arenas
            .into_iter()
            .zip(&capacity)
            .map(|(arena, &n)| CpuField::new(model, n.max(1), arena))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(parts)
            .thread_name(|i| format!("flowrt-cpu-{i}"))
            .build()
            .map_err(|e| HostError::Unsupported(format!("starting {parts} CPU threads: {e}")))?;
        Ok(ParallelCpuField {
            fields,
            capacity,
            dim: model.state_dim(),
            pool,
        })
    }

    /// The arena bytes of each of `parts` blocks of `rows` rows of `model`.
    ///
    /// Errors: a size that overflows.
    pub fn arena_sizes(model: &Model<'_>, rows: usize, parts: usize) -> Result<Vec<usize>> {
        blocks(rows, parts)
            .map(|(a, b)| Ok(model.required_arena_bytes((b - a).max(1))?))
            .collect()
    }
}

/// Runs `f` with flowrt's CPU executor for up to `rows` rows per evaluation on
/// [`threads_for`]`(model, rows, threads)` threads: one [`CpuField`] when that is 1, else a
/// [`ParallelCpuField`]. The arenas live for the call.
///
/// Errors: an arena that cannot be allocated or a field that cannot be built (`f` is not
/// called then).
pub fn with_cpu_field<R>(
    model: &Model<'_>,
    rows: usize,
    threads: usize,
    f: impl FnOnce(&mut dyn ConditionalField<CpuOps>) -> R,
) -> Result<R> {
    let threads = threads_for(model, rows, threads);
    if threads <= 1 {
        let mut arena = crate::run::arena(model.required_arena_bytes(rows)?)?;
        let mut field = CpuField::new(model, rows, arena.as_mut_slice())?;
        return Ok(f(&mut field));
    }
    let mut arenas = ParallelCpuField::arena_sizes(model, rows, threads)?
        .into_iter()
        .map(crate::run::arena)
        .collect::<Result<Vec<_>>>()?;
    let slices = arenas.iter_mut().map(|a| a.as_mut_slice()).collect();
    let mut field = ParallelCpuField::new(model, rows, slices)?;
    Ok(f(&mut field))
}

/// The rows `a..b` of `cond` out of `total`: per-row inputs (as many values per row for
/// every row) are sliced, anything else (one value for all rows, the step) is shared.
fn cond_rows<'c>(cond: &Conditioning<'c>, a: usize, b: usize, total: usize) -> Conditioning<'c> {
    fn rows<T>(s: Option<&[T]>, a: usize, b: usize, total: usize) -> Option<&[T]> {
        let s = s?;
        let per = s.len() / total.max(1);
        if per == 0 || per * total != s.len() {
            return Some(s);
        }
        s.get(a * per..b * per)
    }
    Conditioning {
        label: rows(cond.label, a, b, total),
        cond: rows(cond.cond, a, b, total),
        guidance: rows(cond.guidance, a, b, total),
        step: cond.step,
    }
}

impl ConditionalField<CpuOps> for ParallelCpuField<'_, '_> {
    fn eval_cond(
        &mut self,
        ops: &mut CpuOps,
        t: f32,
        x: &[f32],
        cond: &Conditioning<'_>,
        v: &mut [f32],
    ) -> std::result::Result<(), flowrt::Error> {
        let total: usize = self.capacity.iter().sum();
        let rows = x.len().checked_div(self.dim).unwrap_or(0);
        let parts = self.fields.len();
        let [first, ..] = self.fields.as_mut_slice() else {
            return Err(flowrt::Error::BadArgument {
                what: "a parallel field without threads",
            });
        };
        // One block, or an evaluation of other rows than the batch the blocks were made
        // for: the first field alone (it reports rows beyond its capacity).
        if parts == 1
            || rows != total
            || rows * self.dim != x.len()
            || !v.len().is_multiple_of(rows)
        {
            return ConditionalField::eval_cond(first, ops, t, x, cond, v);
        }
        let v_row = v.len() / rows;
        let mut results: Vec<std::result::Result<(), flowrt::Error>> =
            (0..self.fields.len()).map(|_| Ok(())).collect();
        let (mut x_rest, mut v_rest) = (x, v);
        let mut start = 0usize;
        self.pool.scope(|s| {
            for ((field, &n), slot) in self
                .fields
                .iter_mut()
                .zip(&self.capacity)
                .zip(results.iter_mut())
            {
                let (xs, xr) = x_rest.split_at(n * self.dim);
                let (vs, vr) = std::mem::take(&mut v_rest).split_at_mut(n * v_row);
                (x_rest, v_rest) = (xr, vr);
                let c = cond_rows(cond, start, start + n, total);
                start += n;
                s.spawn(move |_| *slot = field.eval_cond(t, xs, &c, vs));
            }
        });
        results.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::blocks;

    #[test]
    fn blocks_cover_the_rows_in_order() {
        for rows in 0..40 {
            for parts in 1..9 {
                let b: Vec<_> = blocks(rows, parts).collect();
                assert_eq!(b.len(), parts);
                assert_eq!(b.first().map(|x| x.0), Some(0));
                assert_eq!(b.last().map(|x| x.1), Some(rows));
                assert!(b.windows(2).all(|w| w[0].1 == w[1].0));
                let sizes: Vec<_> = b.iter().map(|(a, e)| e - a).collect();
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            }
        }
    }
}
