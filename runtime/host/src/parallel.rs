//! The CPU executor on several threads: the rows of each network evaluation are split into
//! contiguous blocks, one per thread, each evaluated by its own [`CpuField`] in its own arena.
//! Each thread evaluates its block in chunks of rows whose activations fit in a core's L2
//! cache ([`chunk_rows`]): every op's output is still in cache when the next op reads it,
//! where a 4096-row batch streamed megabytes per op through the last-level cache.
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

/// The activation bytes of one chunk of rows ([`chunk_rows`]): within the L2 cache of
/// current cores (256 KB to 2 MB per core).
const CHUNK_BYTES: usize = 256 * 1024;

/// The fewest rows of a chunk: below this the per-op dispatch starts to show.
const MIN_CHUNK_ROWS: usize = 16;

/// Rows of `model` a [`CpuField`] evaluates at a time, at most `rows`: as many as keep the
/// arena's per-row bytes within 256 KB (the L2 cache of current cores), a multiple of 4
/// (the Dense row blocks), at least 16. A row's result does not depend on the rows evaluated with
/// it, so the chunking leaves every output byte as it is.
///
/// Errors: a size that overflows.
pub fn chunk_rows(model: &Model<'_>, rows: usize) -> Result<usize> {
    let per_row = model
        .required_arena_bytes(2)?
        .saturating_sub(model.required_arena_bytes(1)?)
        .max(1);
    let fit = (CHUNK_BYTES / per_row).max(MIN_CHUNK_ROWS);
    Ok((fit - fit % 4).min(rows.max(1)))
}

/// Evaluates `x` (`rows` rows of `dim`) on `field` in chunks of at most `chunk` rows,
/// writing each chunk's rows of `v`; per-row conditioning is sliced with the rows.
fn eval_in_chunks(
    field: &mut CpuField<'_, '_>,
    chunk: usize,
    dim: usize,
    t: f32,
    x: &[f32],
    cond: &Conditioning<'_>,
    v: &mut [f32],
) -> std::result::Result<(), flowrt::Error> {
    let rows = x.len().checked_div(dim).unwrap_or(0);
    if rows <= chunk || rows * dim != x.len() || !v.len().is_multiple_of(rows) {
        // One chunk, or lengths the field itself reports.
        return field.eval_cond(t, x, cond, v);
    }
    let v_row = v.len() / rows;
    let (mut x_rest, mut v_rest) = (x, v);
    let mut start = 0;
    while start < rows {
        let n = chunk.min(rows - start);
        let (xs, xr) = x_rest.split_at(n * dim);
        let (vs, vr) = std::mem::take(&mut v_rest).split_at_mut(n * v_row);
        (x_rest, v_rest) = (xr, vr);
        field.eval_cond(t, xs, &cond_rows(cond, start, start + n, rows), vs)?;
        start += n;
    }
    Ok(())
}

/// One [`CpuField`] evaluating every batch in chunks of [`chunk_rows`] rows (the
/// single-thread form of [`ParallelCpuField`]).
pub struct ChunkedCpuField<'m, 'a> {
    field: CpuField<'m, 'a>,
    /// Rows per chunk: the field's capacity.
    chunk: usize,
    /// State values per row.
    dim: usize,
}

impl ConditionalField<CpuOps> for ChunkedCpuField<'_, '_> {
    fn eval_cond(
        &mut self,
        _: &mut CpuOps,
        t: f32,
        x: &[f32],
        cond: &Conditioning<'_>,
        v: &mut [f32],
    ) -> std::result::Result<(), flowrt::Error> {
        eval_in_chunks(&mut self.field, self.chunk, self.dim, t, x, cond, v)
    }
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
/// per block of rows (each evaluating its block in chunks of [`chunk_rows`]).
pub struct ParallelCpuField<'m, 'a> {
    fields: Vec<CpuField<'m, 'a>>,
    /// The rows of each thread's block of the full batch.
    capacity: Vec<usize>,
    /// Rows per chunk (each field's capacity).
    chunk: usize,
    /// State values per row.
    dim: usize,
    pool: rayon::ThreadPool,
}

impl<'m, 'a> ParallelCpuField<'m, 'a> {
    /// One field per arena; each arena must hold [`Model::required_arena_bytes`] of
    /// [`chunk_rows`]`(model, rows)` rows ([`ParallelCpuField::arena_sizes`]).
    ///
    /// Errors: the fields' own errors (an arena too small or misaligned), or a thread pool
    /// that cannot be started.
    pub fn new(model: &Model<'m>, rows: usize, arenas: Vec<&'a mut [u8]>) -> Result<Self> {
        let parts = arenas.len();
        let capacity: Vec<usize> = blocks(rows, parts).map(|(a, b)| b - a).collect();
        let chunk = chunk_rows(model, capacity.iter().copied().max().unwrap_or(1))?;
        let fields = arenas
            .into_iter()
            .map(|arena| CpuField::new(model, chunk, arena))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(parts)
            .thread_name(|i| format!("flowrt-cpu-{i}"))
            .build()
            .map_err(|e| HostError::Unsupported(format!("starting {parts} CPU threads: {e}")))?;
        Ok(ParallelCpuField {
            fields,
            capacity,
            chunk,
            dim: model.state_dim(),
            pool,
        })
    }

    /// The arena bytes of each of `parts` threads' fields for batches of `rows` rows of
    /// `model`: one chunk ([`chunk_rows`]) of the largest block each.
    ///
    /// Errors: a size that overflows.
    pub fn arena_sizes(model: &Model<'_>, rows: usize, parts: usize) -> Result<Vec<usize>> {
        let largest = blocks(rows, parts).map(|(a, b)| b - a).max().unwrap_or(1);
        let bytes = model.required_arena_bytes(chunk_rows(model, largest)?)?;
        Ok(vec![bytes; parts.max(1)])
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
        let chunk = chunk_rows(model, rows)?;
        let mut arena = crate::run::arena(model.required_arena_bytes(chunk)?)?;
        let mut field = ChunkedCpuField {
            field: CpuField::new(model, chunk, arena.as_mut_slice())?,
            chunk,
            dim: model.state_dim(),
        };
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
        // for: the first field alone, in chunks.
        if parts == 1
            || rows != total
            || rows * self.dim != x.len()
            || !v.len().is_multiple_of(rows)
        {
            let _ = ops;
            return eval_in_chunks(first, self.chunk, self.dim, t, x, cond, v);
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
                let (chunk, dim) = (self.chunk, self.dim);
                s.spawn(move |_| *slot = eval_in_chunks(field, chunk, dim, t, xs, &c, vs));
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
