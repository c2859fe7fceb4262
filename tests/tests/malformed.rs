//! Malformed `.frt` files and bad runtime inputs, on real exported fixtures: the reader and
//! the sampler return typed errors and never panic.
//!
//! Field offsets follow `docs/frt-format.md`. Most corruptions are made "well-formed" by
//! recomputing the CRC (`flowrt::format::file_checksum`, stored at offset 16), so that they
//! reach the structural validation instead of stopping at `ChecksumMismatch`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use flowrt::format::{file_checksum, section, AlignedBytes};
use flowrt::grid::Uniform;
use flowrt::solver::Method;
use flowrt::{Error, Model};
use flowrt_tests::{export_fixed, fixtures_dir, npy};

// ---------------------------------------------------------------------------------------------
// Fixtures and byte patching.

/// The `.frt` bytes of a committed fixture, exported now with fixed-size records (whose
/// fields these tests patch at the offsets docs/frt-format.md gives; version 3's compact
/// records are corrupted byte by byte in `runtime/tests/frt.rs`).
fn exported(model: &str, file: &str) -> Vec<u8> {
    export_fixed(&fixtures_dir().join(model).join(file))
        .as_slice()
        .to_vec()
}

/// moons_icfm (one `xt` input; Dense + Selu), torch.onnx TorchScript export.
fn moons() -> Vec<u8> {
    exported("moons_icfm", "model.ts.onnx")
}

/// checker_fm (`x` and `t` inputs; Dense, Reshape, Add, Silu), dynamo export with external data.
fn checker() -> Vec<u8> {
    exported("checker_fm", "model.dynamo.onnx")
}

fn get_u16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn get_u32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn get_u64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn put_u16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// Offset of the checksum field in the header.
const CRC_AT: usize = 16;

/// Recomputes the CRC of a whole file image and stores it at offset 16.
fn fix_crc(b: &mut [u8]) {
    let c = file_checksum(b);
    put_u32(b, CRC_AT, c);
}

/// Byte offset of section-table entry `i`.
fn entry_at(i: usize) -> usize {
    32 + 24 * i
}

/// (table index, offset, length) of the section of `kind`.
fn section_of(b: &[u8], kind: u16) -> (usize, usize, usize) {
    let count = get_u32(b, 20) as usize;
    (0..count)
        .map(|i| (i, entry_at(i)))
        .find(|&(_, e)| get_u16(b, e) == kind)
        .map(|(i, e)| (i, get_u64(b, e + 8) as usize, get_u64(b, e + 16) as usize))
        .unwrap_or_else(|| panic!("no section of kind {kind}"))
}

/// Where the records of an exported file are.
struct Layout {
    tensors: usize,
    n_tensors: usize,
    nodes: usize,
    n_nodes: usize,
    edges: usize,
    weights: (usize, usize),
    plan: usize,
    signature: usize,
    metadata: usize,
    names: usize,
}

impl Layout {
    fn of(b: &[u8]) -> Layout {
        let (_, tensors, _) = section_of(b, section::TENSORS);
        let (_, nodes, _) = section_of(b, section::NODES);
        let (_, w, wl) = section_of(b, section::WEIGHTS);
        let n_nodes = get_u32(b, nodes) as usize;
        Layout {
            tensors,
            n_tensors: get_u32(b, tensors) as usize,
            nodes,
            n_nodes,
            edges: nodes + 8 + 48 * n_nodes,
            weights: (w, wl),
            plan: section_of(b, section::PLAN).1,
            signature: section_of(b, section::SIGNATURE).1,
            metadata: section_of(b, section::METADATA).1,
            names: section_of(b, section::NAMES).1,
        }
    }

    /// Byte offset of tensor record `i`.
    fn tensor(&self, i: usize) -> usize {
        self.tensors + 8 + 64 * i
    }

    /// Byte offset of node record `j`.
    fn node(&self, j: usize) -> usize {
        self.nodes + 8 + 48 * j
    }

    /// Index of the first tensor of `kind` (0 input, 1 const, 2 intermediate, 3 output).
    fn first_tensor(&self, b: &[u8], kind: u8) -> usize {
        (0..self.n_tensors)
            .find(|&i| b[self.tensor(i)] == kind)
            .unwrap_or_else(|| panic!("no tensor of kind {kind}"))
    }

    /// Index of the first node with op code `op`.
    fn first_node(&self, b: &[u8], op: u16) -> usize {
        (0..self.n_nodes)
            .find(|&j| get_u16(b, self.node(j)) == op)
            .unwrap_or_else(|| panic!("no node with op {op:#06x}"))
    }

    /// Byte offset of plan entry `k`.
    fn plan_entry(&self, k: usize) -> usize {
        self.plan + 24 + 16 * k
    }
}

/// Loads bytes (copied to an aligned buffer) as a model; a panic fails the test with `label`.
fn load(bytes: &[u8], label: &str) -> Result<(), Error> {
    load_aligned(AlignedBytes::copy_from(bytes).as_slice(), label)
}

/// [`load`] without the copy.
fn load_aligned(bytes: &[u8], label: &str) -> Result<(), Error> {
    catch_unwind(AssertUnwindSafe(|| Model::from_bytes(bytes).map(|_| ())))
        .unwrap_or_else(|_| panic!("{label}: Model::from_bytes panicked"))
}

/// Applies `patch` to a copy of `base`, recomputes the CRC, and loads it.
fn corrupt(base: &[u8], patch: impl FnOnce(&mut Vec<u8>)) -> Result<(), Error> {
    let mut b = base.to_vec();
    patch(&mut b);
    fix_crc(&mut b);
    load(&b, "corrupted file")
}

/// Asserts that each corruption (a row `label, pattern, |b| patch;`) of `$base` gives an
/// error matching its pattern.
macro_rules! rejects {
    ($base:expr; $($label:expr, $pat:pat $(if $guard:expr)?, |$b:ident| $patch:expr;)+) => {{
        $({
            let r = corrupt($base, |$b: &mut Vec<u8>| {
                $patch;
            });
            assert!(
                matches!(r, Err($pat) $(if $guard)?),
                "{}: expected {}, got {r:?}",
                $label,
                stringify!($pat)
            );
        })+
    }};
}

/// Rows that [`exercise_with`] samples.
const BATCH: usize = 3;

/// Loads `bytes` and calls `sample(model, grid, x, arena)` on [`BATCH`] rows, 2 steps and a
/// midpoint arena; gives up quietly where loading or sizing fails (or the arena is huge), and
/// fails the test with `label` if sampling panics.
fn exercise_with(
    bytes: &[u8],
    label: &str,
    sample: impl FnOnce(&Model<'_>, &Uniform, &mut [f32], &mut [u8]) -> Result<(), Error>,
) {
    let a = AlignedBytes::copy_from(bytes);
    let Ok(m) = Model::from_bytes(a.as_slice()) else {
        return;
    };
    let Ok(need) = flowrt::sampler::sample_arena_bytes(&m, Method::Midpoint, BATCH) else {
        return;
    };
    if need > 64 << 20 {
        return; // A flipped arena size; allocating it is not the point here.
    }
    let mut arena = AlignedBytes::zeroed(need);
    let mut x: Vec<f32> = (0..BATCH * m.state_dim())
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    let grid = Uniform::new(2, 0.0, 1.0).unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| {
        sample(&m, &grid, &mut x, arena.as_mut_slice())
    }));
    assert!(r.is_ok(), "{label}: sampling a model that loaded panicked");
}

/// Runs a model that loaded (e.g. after a benign bit flip) through the sampler; it may fail,
/// but must not panic.
fn exercise(bytes: &[u8], label: &str) {
    exercise_with(bytes, label, |m, grid, x, arena| {
        flowrt::sampler::sample(m, Method::Midpoint, grid, x, arena)
    });
}

// ---------------------------------------------------------------------------------------------
// The fixtures load; bytes after total_len are ignored.

#[test]
fn pristine_exports_load() {
    for b in [moons(), checker()] {
        load(&b, "pristine").expect("pristine export loads");
        let mut longer = b.clone();
        longer.extend_from_slice(&[0xAB; 77]);
        load(&longer, "trailing bytes").expect("bytes after total_len are ignored");
    }
}

// ---------------------------------------------------------------------------------------------
// Truncation.

#[test]
fn every_truncation_is_an_error() {
    for b in [moons(), checker()] {
        let a = AlignedBytes::copy_from(&b);
        for len in 0..b.len() {
            let r = Model::from_bytes(&a.as_slice()[..len]);
            assert!(
                matches!(r, Err(Error::Truncated { .. })),
                "prefix of {len} / {} bytes: {:?}",
                b.len(),
                r.err()
            );
        }
    }
}

/// Truncations whose header agrees (total_len = the new length, CRC recomputed): the section
/// table then points past the end, or the last sections no longer parse.
#[test]
fn truncation_with_consistent_header_is_an_error() {
    for b in [moons(), checker()] {
        let step = if b.len() > 100_000 { 7 } else { 1 };
        let lens = (32..b.len())
            .step_by(step)
            .chain(b.len().saturating_sub(64)..b.len());
        let mut cut = b.clone();
        for len in lens {
            let c = &mut cut[..len];
            put_u64(c, 8, len as u64);
            fix_crc(c);
            let r = load(c, "truncated with consistent header");
            assert!(
                r.is_err() && !matches!(r, Err(Error::ChecksumMismatch { .. })),
                "prefix of {len} / {} bytes with a consistent header: {r:?}",
                b.len()
            );
            cut[..32].copy_from_slice(&b[..32]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bit flips.

/// One flipped bit, checksum left alone: always an error, and the right one. Every byte of
/// moons_icfm; for the larger checker_fm every byte outside the weights and every 13th weight
/// byte (each check hashes the whole file).
#[test]
fn single_bit_flips_are_detected() {
    for (name, b) in [("moons_icfm", moons()), ("checker_fm", checker())] {
        let (w0, wl) = Layout::of(&b).weights;
        let stride = if name == "checker_fm" { 13 } else { 1 };
        let mut a = AlignedBytes::copy_from(&b);
        let positions = (0..b.len()).filter(|p| !(w0..w0 + wl).contains(p) || p % stride == 0);
        for pos in positions.chain(b.len() - 64..b.len()) {
            let bit = 1u8 << (pos % 8);
            a.as_mut_slice()[pos] ^= bit;
            let r = Model::from_bytes(a.as_slice()).map(|_| ());
            a.as_mut_slice()[pos] ^= bit;
            let ok = match pos {
                0..4 => matches!(r, Err(Error::BadMagic)),
                4..6 => matches!(r, Err(Error::UnsupportedVersion { .. })),
                // total_len: longer than the buffer, shorter than the header, or a CRC over
                // fewer bytes.
                8..16 => matches!(
                    r,
                    Err(Error::Truncated { .. }
                        | Error::Invalid { .. }
                        | Error::ChecksumMismatch { .. })
                ),
                _ => matches!(r, Err(Error::ChecksumMismatch { .. })),
            };
            assert!(ok, "{name}: bit {} of byte {pos}: {r:?}", pos % 8);
        }
        assert_eq!(a.as_slice(), &b[..]);
    }
}

/// Bits flipped with the CRC recomputed, so the validator sees them: never a panic, and a
/// file that still loads also samples without a panic. Every bit of every byte outside the
/// weights for moons_icfm (two bits per byte for the larger checker_fm), two bits of every
/// 61st weight byte. Most structural flips must be rejected.
#[test]
fn bit_flips_with_valid_checksum_never_panic() {
    for (name, b) in [("moons_icfm", moons()), ("checker_fm", checker())] {
        let l = Layout::of(&b);
        let (w0, wl) = l.weights;
        let mut a = AlignedBytes::copy_from(&b);
        let (mut structural, mut rejected) = (0usize, 0usize);
        for pos in (0..b.len()).filter(|p| !(CRC_AT..CRC_AT + 4).contains(p)) {
            let in_weights = (w0..w0 + wl).contains(&pos);
            if in_weights && pos % 61 != 0 {
                continue;
            }
            let bits: Vec<usize> = if in_weights || name == "checker_fm" {
                vec![pos % 8, (pos + 4) % 8]
            } else {
                (0..8).collect()
            };
            for bit in bits {
                let buf = a.as_mut_slice();
                buf[pos] ^= 1 << bit;
                fix_crc(buf);
                let label = format!("{name}: bit {bit} of byte {pos}");
                let r = load_aligned(a.as_slice(), &label);
                if r.is_ok() {
                    exercise(a.as_slice(), &label);
                }
                if !in_weights && pos < l.metadata {
                    structural += 1;
                    rejected += usize::from(r.is_err());
                }
                a.as_mut_slice()[pos] ^= 1 << bit;
            }
        }
        fix_crc(a.as_mut_slice());
        assert_eq!(a.as_slice(), &b[..]);
        let share = rejected as f64 / structural as f64;
        println!(
            "{name}: {rejected} of {structural} structural bit flips rejected ({:.1}%)",
            100.0 * share
        );
        assert!(
            share > 0.9,
            "{name}: only {rejected} of {structural} structural bit flips were rejected"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Header and section table.

#[test]
fn header_errors() {
    let b = moons();
    rejects!(&b;
        "version 4", Error::UnsupportedVersion { found: 4 }, |b| put_u16(b, 4, 4);
        "version 0", Error::UnsupportedVersion { found: 0 }, |b| put_u16(b, 4, 0);
        "version 0xFFFF", Error::UnsupportedVersion { found: 0xFFFF }, |b| put_u16(b, 4, 0xFFFF);
    );
    // The version is checked before the CRC.
    let mut v = b.clone();
    put_u16(&mut v, 4, 7);
    assert_eq!(
        load(&v, "version, stale CRC"),
        Err(Error::UnsupportedVersion { found: 7 })
    );

    rejects!(&b;
        "magic", Error::BadMagic, |b| b[..4] .copy_from_slice(b"ONNX");
        "lowercase magic", Error::BadMagic, |b| b[0] = b'f';
    );
    let mut m = b.clone();
    m[3] = 0;
    assert_eq!(load(&m, "magic, stale CRC"), Err(Error::BadMagic));
    assert_eq!(
        load(b"FLR", "3 bytes"),
        Err(Error::Truncated { what: "header" })
    );
    assert_eq!(load(b"", "empty"), Err(Error::Truncated { what: "header" }));

    rejects!(&b;
        "header flags", Error::Invalid { .. }, |b| put_u16(b, 6, 1);
        "header reserved", Error::Invalid { .. }, |b| b[27] = 1;
        "total_len 16", Error::Invalid { .. }, |b| put_u64(b, 8, 16);
        "total_len + 1", Error::Truncated { .. },
            |b| {
                let n = b.len() as u64;
                put_u64(b, 8, n + 1)
            };
        "total_len max", Error::Truncated { .. }, |b| put_u64(b, 8, u64::MAX);
    );
    let mut c = b.clone();
    c[CRC_AT] ^= 1;
    assert!(matches!(
        load(&c, "crc"),
        Err(Error::ChecksumMismatch { .. })
    ));
}

#[test]
fn section_table_errors() {
    let b = moons();
    let (ti, t_off, _) = section_of(&b, section::TENSORS);
    let (ni, _, _) = section_of(&b, section::NODES);
    let te = entry_at(ti);
    let ne = entry_at(ni);
    rejects!(&b;
        "section_count 65", Error::Invalid { .. }, |b| put_u32(b, 20, 65);
        "section_count max", Error::Invalid { .. }, |b| put_u32(b, 20, u32::MAX);
        "section_count 0", Error::Invalid { .. }, |b| put_u32(b, 20, 0);
        "section_count 64",
            Error::Truncated { .. } | Error::Invalid { .. } | Error::UnsupportedSection { .. },
            |b| put_u32(b, 20, 64);
        "misaligned section", Error::Invalid { .. }, |b| put_u64(b, te + 8, t_off as u64 + 1);
        "section over the header", Error::Invalid { .. }, |b| put_u64(b, te + 8, 0);
        "section past the end", Error::Truncated { .. } | Error::Invalid { .. },
            |b| put_u64(b, te + 8, !15u64);
        "section length max", Error::Truncated { .. } | Error::Invalid { .. },
            |b| put_u64(b, te + 16, u64::MAX);
        "section length + 1", Error::Truncated { .. } | Error::Invalid { .. },
            |b| {
                let l = get_u64(b, te + 16);
                put_u64(b, te + 16, l + 1)
            };
        "overlapping sections", Error::Invalid { .. }, |b| put_u64(b, ne + 8, t_off as u64);
        "unknown required kind", Error::UnsupportedSection { kind: 200 }, |b| put_u16(b, te, 200);
        "missing tensors section", Error::Invalid { .. },
            |b| {
                put_u16(b, te, 200);
                put_u16(b, te + 2, 0)
            };
        "duplicate kind", Error::Invalid { .. }, |b| put_u16(b, ne, section::TENSORS);
        "unknown section flag", Error::Invalid { .. }, |b| put_u16(b, te + 2, 0x8001);
        "section reserved", Error::Invalid { .. }, |b| put_u32(b, te + 4, 1);
    );
    // An unknown optional section is skipped: renaming METADATA to kind 300 without the
    // REQUIRED flag still loads.
    let (mi, _, _) = section_of(&b, section::METADATA);
    corrupt(&b, |b| put_u16(b, entry_at(mi), 300)).expect("unknown optional section is skipped");
}

// ---------------------------------------------------------------------------------------------
// Tensors.

#[test]
fn tensor_record_errors() {
    for b in [moons(), checker()] {
        let l = Layout::of(&b);
        let c = l.first_tensor(&b, 1);
        let i = l.first_tensor(&b, 0);
        let m = l.first_tensor(&b, 2);
        let (ct, it, mt) = (l.tensor(c), l.tensor(i), l.tensor(m));
        let (c32, i32_, m32) = (c as u32, i as u32, m as u32);
        let t = l.tensors;
        rejects!(&b;
            "tensor count + 1", Error::Invalid { .. }, |b| put_u32(b, t, l.n_tensors as u32 + 1);
            "tensor count max", Error::Invalid { .. }, |b| put_u32(b, t, u32::MAX);
            "tensors reserved", Error::Invalid { .. }, |b| put_u32(b, t + 4, 1);
            "tensor kind", Error::InvalidTensor { tensor, .. } if tensor == c32, |b| b[ct] = 7;
            "tensor dtype", Error::InvalidTensor { tensor, .. } if tensor == c32, |b| b[ct + 1] = 1;
            "tensor rank 7", Error::InvalidTensor { tensor, .. } if tensor == c32,
                |b| b[ct + 2] = 7;
            "input batch axis = rank", Error::InvalidTensor { tensor, .. } if tensor == i32_,
                |b| b[it + 3] = b[it + 2];
            "const with a batch dim", Error::InvalidTensor { tensor, .. } if tensor == c32,
                |b| {
                    b[ct + 3] = 0;
                    put_u32(b, ct + 8, 0)
                };
            "zero dim", Error::InvalidTensor { tensor, .. } if tensor == c32,
                |b| put_u32(b, ct + 8, 0);
            "dim beyond rank", Error::InvalidTensor { tensor, .. } if tensor == c32,
                |b| put_u32(b, ct + 8 + 4 * 5, 3);
            "const data misaligned", Error::InvalidTensor { tensor, .. } if tensor == c32,
                |b| {
                    let o = get_u64(b, ct + 40);
                    put_u64(b, ct + 40, o + 4)
                };
            "const data out of range", Error::InvalidTensor { tensor, .. } if tensor == c32,
                |b| put_u64(b, ct + 40, !15u64);
            "const data length", Error::InvalidTensor { tensor, .. } if tensor == c32,
                |b| {
                    let n = get_u64(b, ct + 48);
                    put_u64(b, ct + 48, n + 4)
                };
            "const with a producer", Error::InvalidTensor { tensor, .. } if tensor == c32,
                |b| put_u32(b, ct + 4, 0);
            "input with a slot", Error::InvalidTensor { tensor, .. } if tensor == i32_,
                |b| put_u32(b, it + 32, 0);
            "producer out of range", Error::InvalidTensor { tensor, .. } if tensor == m32,
                |b| put_u32(b, mt + 4, u32::MAX - 1);
            "slot out of range", Error::InvalidTensor { tensor, .. } if tensor == m32,
                |b| put_u32(b, mt + 32, 9999);
            "intermediate with data", Error::InvalidTensor { tensor, .. } if tensor == m32,
                |b| put_u64(b, mt + 48, 16);
            "tensor reserved", Error::InvalidTensor { tensor, .. } if tensor == c32,
                |b| b[ct + 60] = 1;
            "second output", Error::Invalid { .. } | Error::InvalidTensor { .. }, |b| b[mt] = 3;
            "computed tensor as input", Error::Invalid { .. } | Error::InvalidTensor { .. },
                |b| b[mt] = 0;
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes.

#[test]
fn node_record_errors() {
    for b in [moons(), checker()] {
        let l = Layout::of(&b);
        let (n0, n1) = (l.node(0), l.node(1));
        let dense = l.node(l.first_node(&b, 0x0001));
        let last_out = get_u32(&b, l.node(l.n_nodes - 1) + 8);
        let nodes = l.nodes;
        let edges = l.edges;
        rejects!(&b;
            "unknown op code", Error::InvalidNode { node: 0, .. }, |b| put_u16(b, n0, 0x7777);
            "unary op code past the table", Error::InvalidNode { node: 0, .. },
                |b| put_u16(b, n0, 0x02FF);
            "binary op code past the table", Error::InvalidNode { node: 0, .. },
                |b| put_u16(b, n0, 0x01FF);
            "op code 0", Error::InvalidNode { node: 0, .. }, |b| put_u16(b, n0, 0);
            // A known op with the wrong arity / shapes: Dense -> Relu, Dense -> Concat on axis 9.
            "dense as relu", Error::InvalidNode { .. }, |b| put_u16(b, dense, 0x0200);
            "dense as concat", Error::InvalidNode { .. },
                |b| {
                    put_u16(b, dense, 0x0010);
                    put_u32(b, dense + 16, 9)
                };
            "dense with attrs", Error::InvalidNode { .. }, |b| put_u32(b, dense + 16 + 28, 1);
            "n_inputs + 1", Error::InvalidNode { .. } | Error::Invalid { .. },
                |b| {
                    let n = get_u16(b, n0 + 2);
                    put_u16(b, n0 + 2, n + 1)
                };
            "n_inputs max", Error::InvalidNode { .. } | Error::Invalid { .. },
                |b| put_u16(b, n0 + 2, u16::MAX);
            "first_input", Error::InvalidNode { node: 1, .. },
                |b| {
                    let f = get_u32(b, n1 + 4);
                    put_u32(b, n1 + 4, f + 1)
                };
            "first_input max", Error::InvalidNode { node: 1, .. }, |b| put_u32(b, n1 + 4, u32::MAX);
            "output out of range", Error::InvalidTensor { .. } | Error::InvalidNode { .. },
                |b| put_u32(b, n0 + 8, u32::MAX);
            "node reserved", Error::InvalidNode { .. }, |b| put_u32(b, n0 + 12, 1);
            "edge count + 1", Error::Invalid { .. },
                |b| {
                    let e = get_u32(b, nodes + 4);
                    put_u32(b, nodes + 4, e + 1)
                };
            "node count max", Error::Invalid { .. }, |b| put_u32(b, nodes, u32::MAX);
            "input id out of range", Error::InvalidNode { node: 0, .. },
                |b| put_u32(b, edges, u32::MAX);
            "input id = tensor count", Error::InvalidNode { node: 0, .. },
                |b| put_u32(b, edges, l.n_tensors as u32);
            "input used before it is computed", Error::InvalidNode { node: 0, .. },
                |b| put_u32(b, edges, last_out);
        );
    }
    // Unary attributes must be finite: Selu's alpha = NaN / infinity.
    let b = moons();
    let l = Layout::of(&b);
    let selu = l.node(l.first_node(&b, 0x0203));
    rejects!(&b;
        "selu alpha NaN", Error::InvalidNode { .. }, |b| put_u32(b, selu + 16, f32::NAN.to_bits());
        "selu gamma inf", Error::InvalidNode { .. },
            |b| put_u32(b, selu + 20, f32::INFINITY.to_bits());
        "selu unused attr", Error::InvalidNode { .. }, |b| put_u32(b, selu + 24, 1);
    );
}

// ---------------------------------------------------------------------------------------------
// Plan, signature, metadata, names.

#[test]
fn plan_errors() {
    for b in [moons(), checker()] {
        let l = Layout::of(&b);
        let p = l.plan;
        let e0 = l.plan_entry(0);
        rejects!(&b;
            "fixed bytes not /16", Error::Invalid { .. },
                |b| {
                    let f = get_u64(b, p);
                    put_u64(b, p, f + 8)
                };
            "per-row bytes 0", Error::InvalidTensor { .. }, |b| put_u64(b, p + 8, 0);
            "fixed bytes max", Error::Invalid { .. }, |b| put_u64(b, p, u64::MAX);
            "plan count + 1", Error::Invalid { .. },
                |b| {
                    let n = get_u32(b, p + 16);
                    put_u32(b, p + 16, n + 1)
                };
            "plan reserved", Error::Invalid { .. }, |b| put_u32(b, p + 20, 1);
            "unknown region", Error::Invalid { .. }, |b| put_u32(b, e0 + 4, 7);
            "wrong region", Error::InvalidTensor { .. },
                |b| {
                    let r = get_u32(b, e0 + 4);
                    put_u32(b, e0 + 4, 1 - r)
                };
            "plan offset not /16", Error::InvalidTensor { .. },
                |b| {
                    let o = get_u64(b, e0 + 8);
                    put_u64(b, e0 + 8, o + 8)
                };
            "plan offset past the region", Error::InvalidTensor { .. },
                |b| {
                    let per_row = get_u64(b, p + 8).max(get_u64(b, p));
                    put_u64(b, e0 + 8, per_row)
                };
            "plan offset max", Error::InvalidTensor { .. } | Error::Invalid { .. },
                |b| put_u64(b, e0 + 8, !15u64);
            "plan tensor out of range", Error::InvalidTensor { .. }, |b| put_u32(b, e0, u32::MAX);
        );
    }
}

#[test]
fn signature_errors() {
    for b in [moons(), checker()] {
        let l = Layout::of(&b);
        let g = l.signature;
        let c = l.first_tensor(&b, 1) as u32;
        let input = get_u32(&b, g + 16);
        let role = get_u32(&b, g + 20);
        rejects!(&b;
            "no inputs", Error::Invalid { .. }, |b| put_u32(b, g, 0);
            "four inputs", Error::Invalid { .. }, |b| put_u32(b, g, 4);
            "input count max", Error::Invalid { .. }, |b| put_u32(b, g, u32::MAX);
            "state dim", Error::Invalid { .. }, |b| put_u32(b, g + 8, 3);
            "state dim 0", Error::Invalid { .. }, |b| put_u32(b, g + 8, 0);
            "signature reserved", Error::Invalid { .. }, |b| put_u32(b, g + 12, 1);
            "output is an input", Error::InvalidTensor { .. }, |b| put_u32(b, g + 4, input);
            "output out of range", Error::InvalidTensor { .. }, |b| put_u32(b, g + 4, u32::MAX);
            "unknown role", Error::Invalid { .. }, |b| put_u32(b, g + 20, 9);
            "input is a constant", Error::InvalidTensor { tensor, .. } if tensor == c,
                |b| put_u32(b, g + 16, c);
            "input out of range", Error::InvalidTensor { .. }, |b| put_u32(b, g + 16, u32::MAX);
        );
        // x <-> xt, or the state input relabelled as time.
        let other = if role == 2 { 0 } else { 2 };
        rejects!(&b;
            "x/xt swapped", Error::Invalid { .. } | Error::InvalidTensor { .. },
                |b| put_u32(b, g + 20, other);
            "state input as time", Error::Invalid { .. } | Error::InvalidTensor { .. },
                |b| put_u32(b, g + 20, 1);
        );
    }
    // Two inputs: duplicated role, duplicated tensor.
    let b = checker();
    let g = Layout::of(&b).signature;
    assert_eq!(get_u32(&b, g), 2);
    rejects!(&b;
        "duplicate role", Error::Invalid { .. },
            |b| {
                let r = get_u32(b, g + 20);
                put_u32(b, g + 28, r)
            };
        "duplicate tensor", Error::Invalid { .. },
            |b| {
                let t = get_u32(b, g + 16);
                put_u32(b, g + 24, t)
            };
    );
}

#[test]
fn metadata_and_names_errors() {
    let b = moons();
    let l = Layout::of(&b);
    let (md, names) = (l.metadata, l.names);
    assert!(get_u32(&b, md) > 0, "fixture has metadata");
    rejects!(&b;
        "metadata count + 1", Error::Truncated { .. },
            |b| {
                let n = get_u32(b, md);
                put_u32(b, md, n + 1)
            };
        "metadata count max", Error::Truncated { .. }, |b| put_u32(b, md, u32::MAX);
        "metadata key length", Error::Truncated { .. } | Error::Invalid { .. },
            |b| put_u32(b, md + 4, u32::MAX);
        "metadata not UTF-8", Error::Invalid { .. }, |b| b [md + 12] = 0xFF;
        "names tensor count", Error::Invalid { .. },
            |b| {
                let n = get_u32(b, names);
                put_u32(b, names, n + 1)
            };
        "names length", Error::Invalid { .. } | Error::Truncated { .. },
            |b| put_u32(b, names + 8, u32::MAX);
        "name not UTF-8", Error::Invalid { .. },
            |b| {
                let first_len = get_u32(b, names + 8);
                assert!(first_len > 0);
                b[names + 12] = 0xC0
            };
    );
}

// ---------------------------------------------------------------------------------------------
// Alignment and sampling inputs.

#[test]
fn misaligned_model_bytes() {
    let b = moons();
    for shift in 1..8 {
        let mut a = AlignedBytes::zeroed(b.len() + shift);
        a.as_mut_slice()[shift..].copy_from_slice(&b);
        let r = Model::from_bytes(&a.as_slice()[shift..]).map(|_| ());
        if shift % 4 == 0 {
            // 4-byte alignment is all the reader needs.
            assert_eq!(r, Ok(()), "offset {shift}");
        } else {
            assert_eq!(r, Err(Error::Misaligned), "offset {shift}");
        }
    }
}

#[test]
fn sampler_input_errors() {
    for b in [moons(), checker()] {
        let a = AlignedBytes::copy_from(&b);
        let m = Model::from_bytes(a.as_slice()).unwrap();
        let dim = m.state_dim();
        let grid = Uniform::new(4, 0.0, 1.0).unwrap();
        let fx = if m.input_count() == 1 {
            "moons_icfm"
        } else {
            "checker_fm"
        };
        let (noise, shape) = npy(&fixtures_dir().join(fx).join("noise.npy"));
        let batch = shape[0];
        assert_eq!(noise.len(), batch * dim);
        for method in [Method::Euler, Method::Rk4_38] {
            let need = flowrt::sampler::sample_arena_bytes(&m, method, batch).unwrap();
            let mut arena = AlignedBytes::zeroed(need + 16);

            // NaN / infinity anywhere in the noise.
            for (pos, bad) in [
                (0, f32::NAN),
                (noise.len() - 1, f32::NAN),
                (7, f32::INFINITY),
                (3, f32::NEG_INFINITY),
            ] {
                let mut x = noise.clone();
                x[pos] = bad;
                let r = flowrt::sampler::sample(
                    &m,
                    method,
                    &grid,
                    &mut x,
                    &mut arena.as_mut_slice()[..need],
                );
                assert!(
                    matches!(r, Err(Error::NonFiniteInput { .. })),
                    "{bad} at {pos}: {r:?}"
                );
            }

            // Arena one byte too small.
            let mut x = noise.clone();
            let r = flowrt::sampler::sample(
                &m,
                method,
                &grid,
                &mut x,
                &mut arena.as_mut_slice()[..need - 1],
            );
            assert_eq!(
                r,
                Err(Error::ArenaTooSmall {
                    needed: need,
                    given: need - 1
                })
            );
            let r = flowrt::sampler::sample(&m, method, &grid, &mut x, &mut []);
            assert_eq!(
                r,
                Err(Error::ArenaTooSmall {
                    needed: need,
                    given: 0
                })
            );

            // Misaligned arena.
            let r = flowrt::sampler::sample(
                &m,
                method,
                &grid,
                &mut x,
                &mut arena.as_mut_slice()[1..need + 1],
            );
            assert_eq!(r, Err(Error::Misaligned), "arena at offset 1");

            // State not a whole number of rows, or empty.
            let mut short = noise[..dim * 3 + 1].to_vec();
            let r = flowrt::sampler::sample(&m, method, &grid, &mut short, arena.as_mut_slice());
            assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
            let r = flowrt::sampler::sample(&m, method, &grid, &mut [], arena.as_mut_slice());
            assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");

            // Exactly the needed size works (the same buffer, after all those errors).
            let mut x = noise.clone();
            flowrt::sampler::sample(&m, method, &grid, &mut x, &mut arena.as_mut_slice()[..need])
                .unwrap();
            assert!(x.iter().all(|v| v.is_finite()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Conditioning roles (label, cond, guidance) and Gather, on the exported op case
// `label_cond_guidance` (x, t, y int64 -> Gather, cond [B, 4], guidance [B]).

/// The exported `label_cond_guidance` op case.
fn conditioned() -> Vec<u8> {
    exported("ops", "label_cond_guidance.onnx")
}

/// Byte offset of the signature entry with role `role`, and its tensor index.
fn sig_entry_of(b: &[u8], role: u32) -> (usize, usize) {
    let g = Layout::of(b).signature;
    (0..get_u32(b, g) as usize)
        .map(|k| g + 16 + 8 * k)
        .find(|&e| get_u32(b, e + 4) == role)
        .map(|e| (e, get_u32(b, e) as usize))
        .unwrap_or_else(|| panic!("no input with role {role}"))
}

/// Samples a model that loaded with conditioning for its roles; errors are fine, panics not.
fn exercise_cond(bytes: &[u8], label: &str) {
    exercise_with(bytes, label, |m, grid, x, arena| {
        let labels = [0i64, 1, 2];
        let cond = vec![0.5f32; BATCH * m.cond_dim().unwrap_or(0)];
        let guidance = [1.5f32; BATCH];
        let has = |r| m.input_by_role(r).is_some();
        let c = flowrt::field::Conditioning {
            label: has(flowrt::format::InputRole::Label).then_some(&labels[..]),
            cond: has(flowrt::format::InputRole::Cond).then_some(&cond[..]),
            guidance: has(flowrt::format::InputRole::Guidance).then_some(&guidance[..]),
            step: None,
        };
        flowrt::sampler::sample_cond(m, Method::Midpoint, grid, x, &c, arena)
    });
}

#[test]
fn conditioned_export_loads_and_samples() {
    let b = conditioned();
    let a = AlignedBytes::copy_from(&b);
    let m = Model::from_bytes(a.as_slice()).unwrap();
    assert_eq!(m.input_count(), 5);
    assert_eq!(m.label_classes(), Some(8));
    assert_eq!(m.cond_dim(), Some(4));
    assert!(m.nodes().any(|n| n.op_name() == "Gather"));
    let (_, y) = sig_entry_of(&b, 3);
    assert_eq!(m.tensor(y as u32).unwrap().shape.to_string(), "[B]");
    exercise_cond(&b, "pristine");
}

#[test]
fn conditioned_signature_errors() {
    let b = conditioned();
    let (label_e, label_t) = sig_entry_of(&b, 3);
    let (cond_e, cond_t) = sig_entry_of(&b, 4);
    let (guid_e, guid_t) = sig_entry_of(&b, 5);
    let l = Layout::of(&b);
    // Two label inputs (cond relabelled), two conds, two times, an unknown role 8, a data input, a step
    // input without its time section.
    rejects!(&b;
        "two labels", Error::Invalid { .. }, |b| put_u32(b, cond_e + 4, 3);
        "two conds", Error::Invalid { .. } | Error::InvalidTensor { .. },
            |b| put_u32(b, guid_e + 4, 4);
        "label as a second t", Error::Invalid { .. }, |b| put_u32(b, label_e + 4, 1);
        "role 8", Error::Invalid { what } if what.contains("role"), |b| put_u32(b, label_e + 4, 8);
        // Role 7 (data: a plain graph's operand) mixed with the roles of a velocity field.
        "data input in a velocity field", Error::Invalid { .. } | Error::InvalidTensor { .. },
            |b| put_u32(b, label_e + 4, 7);
        // Role 6 (step) without a second-time form in a TIME section.
        "role 6", Error::Invalid { what } if what.contains("second-time"),
            |b| put_u32(b, label_e + 4, 6);
    );
    // Shapes that do not fit the role: label [B, 2], cond [B], guidance [B, 2].
    let rank_dim = |b: &mut Vec<u8>, t: usize, rank: u8, d1: u32| {
        let r = l.tensor(t);
        b[r + 2] = rank;
        put_u32(b, r + 12, d1);
    };
    rejects!(&b;
        "label [B, 2]", Error::InvalidTensor { tensor, what }
            if tensor as usize == label_t && what.contains("label"),
            |b| rank_dim(b, label_t, 2, 2);
        "cond [B]", Error::InvalidTensor { tensor, what }
            if tensor as usize == cond_t && what.contains("cond"),
            |b| rank_dim(b, cond_t, 1, 0);
        "guidance [B, 2]", Error::InvalidTensor { tensor, what }
            if tensor as usize == guid_t && what.contains("guidance"),
            |b| rank_dim(b, guid_t, 2, 2);
        // A label without its batch dim: [1].
        "label [1]", Error::InvalidTensor { .. },
            |b| {
                let r = l.tensor(label_t);
                b[r + 3] = 0xFF;
                put_u32(b, r + 8, 1)
            };
    );
}

#[test]
fn gather_node_errors() {
    let b = conditioned();
    let l = Layout::of(&b);
    let j = l.first_node(&b, flowrt::format::opcode::GATHER);
    let n = l.node(j);
    assert_eq!(get_u16(&b, n + 2), 2, "Gather has two inputs");
    let first = get_u32(&b, n + 4) as usize;
    let (e0, e1) = (l.edges + 4 * first, l.edges + 4 * first + 4);
    rejects!(&b;
        "gather axis 1", Error::InvalidNode { node, .. } if node as usize == j,
            |b| put_u32(b, n + 16, 1);
        "gather unused attr", Error::InvalidNode { .. }, |b| put_u32(b, n + 16 + 28, 1);
        "unknown op next to gather", Error::InvalidNode { .. },
            |b| put_u16(b, n, flowrt::format::opcode::GATHER + 1);
        // table <-> idx swapped: the "table" now has the batch dim.
        "gather inputs swapped", Error::InvalidNode { .. },
            |b| {
                let (a, c) = (get_u32(b, e0), get_u32(b, e1));
                put_u32(b, e0, c);
                put_u32(b, e1, a)
            };
        // Three inputs: arity.
        "gather arity", Error::InvalidNode { .. }, |b| put_u16(b, n + 2, 3);
    );
}

#[test]
fn conditioned_bit_flips_never_panic() {
    let b = conditioned();
    let l = Layout::of(&b);
    let (w0, wl) = l.weights;
    let mut a = AlignedBytes::copy_from(&b);
    let mut loaded = 0usize;
    for pos in (0..l.metadata).filter(|p| !(CRC_AT..CRC_AT + 4).contains(p)) {
        if (w0..w0 + wl).contains(&pos) && pos % 17 != 0 {
            continue;
        }
        for bit in 0..8 {
            let buf = a.as_mut_slice();
            buf[pos] ^= 1 << bit;
            fix_crc(buf);
            let label = format!("label_cond_guidance: bit {bit} of byte {pos}");
            if load_aligned(a.as_slice(), &label).is_ok() {
                loaded += 1;
                exercise_cond(a.as_slice(), &label);
            }
            a.as_mut_slice()[pos] ^= 1 << bit;
        }
    }
    fix_crc(a.as_mut_slice());
    assert_eq!(a.as_slice(), &b[..]);
    println!("label_cond_guidance: {loaded} flipped files still loaded (and sampled)");
}
