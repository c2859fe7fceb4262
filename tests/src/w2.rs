//! The exact 2-Wasserstein distance between two equally large point sets (uniform weights):
//! `W2 = sqrt(min over permutations s of mean_i |a_i - b_s(i)|^2)`, the optimal assignment
//! found by `lsap` (a port of scipy's `linear_sum_assignment`, shortest augmenting paths on
//! float64 costs, no scaling to integers). `docs/quantization.md` reports it between generated
//! samples and data; `tests/tests/w2.rs` checks it against scipy and POT.

/// Squared Euclidean cost matrix (row-major, `rows(a)` x `rows(b)`) in f64.
fn sq_costs(a: &[f32], b: &[f32], dim: usize) -> Vec<f64> {
    let mut c = Vec::with_capacity((a.len() / dim) * (b.len() / dim));
    for p in a.chunks_exact(dim) {
        for q in b.chunks_exact(dim) {
            c.push(
                p.iter()
                    .zip(q)
                    .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                    .sum(),
            );
        }
    }
    c
}

/// Exact W2 between the rows of `a` and `b` (`dim` values per row, the same number of rows).
///
/// Panics: different or zero row counts, lengths not a multiple of `dim`, non-finite values.
pub fn w2(a: &[f32], b: &[f32], dim: usize) -> f64 {
    assert!(
        dim > 0 && a.len().is_multiple_of(dim),
        "a: not whole rows of {dim}"
    );
    assert_eq!(a.len(), b.len(), "W2 needs equally many rows");
    let n = a.len() / dim;
    assert!(n > 0, "no rows");
    let cost = sq_costs(a, b, dim);
    let (rows, cols) = lsap::solve(n, n, &cost, false).expect("assignment (finite costs)");
    let total: f64 = rows.iter().zip(&cols).map(|(r, c)| cost[r * n + c]).sum();
    (total / n as f64).sqrt()
}
