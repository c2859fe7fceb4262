//! Static memory planner (feature `alloc`): liveness over node order, then greedy
//! first-fit by size (as in TFLite Micro's `GreedyMemoryPlanner`), separately for the two
//! arena regions.
//!
//! Every arena tensor (intermediate or output) either has a batch dim — its size is
//! `row_bytes * B` and it goes to the **per-row region**, planned in "bytes per batch row" —
//! or not — its size is constant and it goes to the **fixed region**, planned in bytes. A
//! tensor is live from the node that computes it through the last node that reads it (the
//! graph output: through the end). Tensors whose lifetimes intersect never share memory;
//! a node's output never shares memory with its inputs. Offsets are 16-byte aligned in
//! both regions (per-row offsets are multiplied by `B`, which keeps them aligned). The graph
//! arena for batch `B` is `fixed_bytes + per_row_bytes * B` (both multiples of 16): the
//! per-row region starts at `fixed_bytes`.

use alloc::vec;
use alloc::vec::Vec;

use crate::format::{Region, ALIGN};

/// One buffer to place: its size and the inclusive range of node indices it is live for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Size in the region's unit (bytes, or bytes per batch row).
    pub size: usize,
    /// First node index at which it is live (the producer).
    pub first: usize,
    /// Last node index at which it is live (the last consumer).
    pub last: usize,
}

impl Request {
    /// `true` when the two lifetimes intersect.
    pub fn overlaps(&self, other: &Request) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN).saturating_mul(ALIGN)
}

/// Greedy first-fit by decreasing size: each buffer goes to the lowest 16-aligned offset
/// that does not collide with an already placed buffer whose lifetime intersects its own.
/// Returns the offsets (in request order) and the region size (a multiple of 16).
pub fn first_fit(reqs: &[Request]) -> (Vec<usize>, usize) {
    let mut order: Vec<(usize, &Request)> = reqs.iter().enumerate().collect();
    // Largest first; ties by earlier start, then by index (deterministic).
    order.sort_by(|(ia, a), (ib, b)| {
        b.size
            .cmp(&a.size)
            .then(a.first.cmp(&b.first))
            .then(ia.cmp(ib))
    });
    let mut offsets = vec![0usize; reqs.len()];
    let mut placed: Vec<(usize, usize, Request)> = Vec::with_capacity(reqs.len());
    let mut total = 0usize;
    for (i, r) in order {
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|(_, _, p)| p.overlaps(r))
            .map(|(off, end, _)| (*off, *end))
            .collect();
        busy.sort_unstable();
        let mut cand = 0usize;
        for (start, end) in busy {
            if cand.saturating_add(r.size) <= start {
                break;
            }
            cand = cand.max(align(end));
        }
        let end = cand.saturating_add(r.size);
        if let Some(o) = offsets.get_mut(i) {
            *o = cand;
        }
        placed.push((cand, end, *r));
        total = total.max(end);
    }
    (offsets, align(total))
}

/// Where one arena tensor lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Fixed or per-row region.
    pub region: Region,
    /// Offset in the region's unit (bytes, or bytes per batch row), 16-aligned.
    pub offset: usize,
    /// Size in the region's unit.
    pub size: usize,
    /// Node index that computes the tensor.
    pub first: usize,
    /// Last node index that reads it (`nodes.len()` for the graph output).
    pub last: usize,
}

/// The memory plan of a whole model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Size of the fixed region in bytes (multiple of 16).
    pub fixed_bytes: usize,
    /// Size of the per-row region in bytes per batch row (multiple of 16).
    pub per_row_bytes: usize,
    /// One entry per tensor of the desc: `Some` for arena tensors (intermediate, output).
    pub slots: Vec<Option<Slot>>,
}

impl MemoryPlan {
    /// Graph arena bytes for batch `batch`: `fixed_bytes + per_row_bytes * batch`.
    pub fn graph_arena_bytes(&self, batch: usize) -> Option<usize> {
        self.per_row_bytes
            .checked_mul(batch)?
            .checked_add(self.fixed_bytes)
    }
}

/// Plans arena tensors given per tensor `Some((region, size, first, last))`.
pub fn plan(tensors: &[Option<(Region, Request)>]) -> MemoryPlan {
    let mut slots: Vec<Option<Slot>> = vec![None; tensors.len()];
    let mut sizes = [0usize; 2];
    for (ri, region) in [Region::Fixed, Region::PerRow].into_iter().enumerate() {
        let idx: Vec<usize> = tensors
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_some_and(|(r, _)| r == region))
            .map(|(i, _)| i)
            .collect();
        let reqs: Vec<Request> = idx
            .iter()
            .filter_map(|i| tensors.get(*i).copied().flatten().map(|t| t.1))
            .collect();
        let (offsets, total) = first_fit(&reqs);
        for ((i, off), r) in idx.iter().zip(offsets).zip(&reqs) {
            if let Some(s) = slots.get_mut(*i) {
                *s = Some(Slot {
                    region,
                    offset: off,
                    size: r.size,
                    first: r.first,
                    last: r.last,
                });
            }
        }
        if let Some(s) = sizes.get_mut(ri) {
            *s = total;
        }
    }
    MemoryPlan {
        fixed_bytes: sizes[0],
        per_row_bytes: sizes[1],
        slots,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % n.max(1)
        }
    }

    fn assert_valid(reqs: &[Request], offsets: &[usize], total: usize) {
        assert_eq!(total % ALIGN, 0);
        for (i, (a, oa)) in reqs.iter().zip(offsets).enumerate() {
            assert_eq!(oa % ALIGN, 0, "offset of {i} not aligned");
            assert!(oa + a.size <= total);
            for (j, (b, ob)) in reqs.iter().zip(offsets).enumerate().skip(i + 1) {
                if a.overlaps(b) {
                    let disjoint = oa + a.size <= *ob || ob + b.size <= *oa;
                    assert!(
                        disjoint,
                        "live buffers {i} and {j} overlap: {a:?}@{oa} {b:?}@{ob}"
                    );
                }
            }
        }
    }

    #[test]
    fn first_fit_never_overlaps_live_buffers() {
        let mut g = Lcg(42);
        // 30 cases under Miri (scripts/miri.sh, ~10^5 times slower).
        for _case in 0..if cfg!(miri) { 30 } else { 300 } {
            let n = 1 + g.below(40);
            let reqs: Vec<Request> = (0..n)
                .map(|_| {
                    let first = g.below(30);
                    let last = first + g.below(10);
                    Request {
                        size: 1 + g.below(300),
                        first,
                        last,
                    }
                })
                .collect();
            let (offsets, total) = first_fit(&reqs);
            assert_valid(&reqs, &offsets, total);
            // Never worse than giving everything its own space.
            let sum: usize = reqs.iter().map(|r| align(r.size)).sum();
            assert!(total <= sum);
        }
    }

    #[test]
    fn first_fit_reuses_dead_memory() {
        // A chain a -> b -> c -> d: only neighbours are live together.
        let reqs: Vec<Request> = (0..4)
            .map(|i| Request {
                size: 64,
                first: i,
                last: i + 1,
            })
            .collect();
        let (offsets, total) = first_fit(&reqs);
        assert_valid(&reqs, &offsets, total);
        assert_eq!(total, 128);
    }

    #[test]
    fn plan_splits_regions_and_aligns() {
        let t = [
            Some((
                Region::Fixed,
                Request {
                    size: 20,
                    first: 0,
                    last: 1,
                },
            )),
            None,
            Some((
                Region::PerRow,
                Request {
                    size: 12,
                    first: 0,
                    last: 2,
                },
            )),
            Some((
                Region::PerRow,
                Request {
                    size: 36,
                    first: 1,
                    last: 2,
                },
            )),
            Some((
                Region::Fixed,
                Request {
                    size: 4,
                    first: 1,
                    last: 3,
                },
            )),
        ];
        let p = plan(&t);
        assert_eq!(p.fixed_bytes, 48);
        assert_eq!(p.per_row_bytes, 64);
        assert!(p.slots[1].is_none());
        assert_eq!(p.slots[2].unwrap().region, Region::PerRow);
        assert_eq!(p.graph_arena_bytes(3), Some(48 + 64 * 3));
    }
}
