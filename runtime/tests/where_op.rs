//! Comparison ops and `Where`: writer -> reader -> run round trips (the torch Softplus
//! threshold guard `Where(Greater(x, 20), x, Softplus(x))`), and malformed arity.
#![cfg(feature = "alloc")]

mod common;

use common::{f, Lcg, B};
use flowrt::exec::{self, CpuField};
use flowrt::format::{self, opcode, AlignedBytes};
use flowrt::ir::{BinaryOp, ModelDesc, Op, Role, UnaryOp};
use flowrt::ops::{Binary, Unary};
use flowrt::{CpuOps, Error, Model, VelocityField};

/// Uniform in [-40, 40), with exact threshold values mixed in.
fn x(g: &mut Lcg) -> f32 {
    match g.next_u64() % 8 {
        0 => 20.0,
        1 => -20.0,
        _ => ((g.next_u64() >> 29) as f32 / (1u64 << 24) as f32) * 80.0 - 40.0,
    }
}

fn xs(g: &mut Lcg, n: usize) -> Vec<f32> {
    (0..n).map(|_| x(g)).collect()
}

use flowrt::ir::ModelBuilder as G;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// x [B, 3]: `Where(Greater(x, 20), x, Softplus(x))` (exactly what torch's dynamo exporter
/// emits for `nn.Softplus()`), returned directly.
fn softplus_guard() -> ModelDesc {
    let mut m = G::default();
    let x = m.input(&[B, f(3)], Role::X);
    let c = m.constant(&[], vec![20.0]);
    let gt = m.node(Op::Binary(BinaryOp::Greater), &[x, c], &[B, f(3)]);
    let sp = m.node(Op::Unary(UnaryOp::Softplus), &[x], &[B, f(3)]);
    let o = m.node(Op::Where, &[gt, x, sp], &[B, f(3)]);
    m.finish(o)
}

fn softplus_ref(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        Unary::Softplus.apply(x)
    }
}

#[test]
fn softplus_guard_round_trips_and_runs_exactly() {
    let desc = softplus_guard();
    let bytes = flowrt::write::write(&desc).unwrap();
    let buf = AlignedBytes::copy_from(&bytes);
    let m = Model::from_bytes(&buf).unwrap();
    let ops: Vec<&str> = m.nodes().map(|n| n.op_name()).collect();
    assert_eq!(ops, ["Greater", "Softplus", "Where"]);
    assert_eq!(
        m.node(2).unwrap().inputs().collect::<Vec<_>>(),
        vec![2, 0, 3]
    );
    let mut g = Lcg(5);
    for batch in [1usize, 3, 8] {
        let x = xs(&mut g, batch * 3);
        let want: Vec<f32> = x.iter().map(|v| softplus_ref(*v)).collect();
        let mut out = vec![0.0; batch * 3];
        let mut arena = AlignedBytes::zeroed(m.graph_arena_bytes(batch).unwrap());
        exec::run(&m, batch, &[&x], &mut out, &mut arena).unwrap();
        assert_eq!(bits(&out), bits(&want), "batch {batch}");
        // Above the threshold the value is passed through bit for bit.
        for (o, v) in out.iter().zip(&x) {
            if *v > 20.0 {
                assert_eq!(o.to_bits(), v.to_bits());
            }
        }
        let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(batch).unwrap());
        let mut field = CpuField::new(&m, batch, &mut arena).unwrap();
        let mut v = vec![0.0; batch * 3];
        field.eval(&mut CpuOps, 0.5, &x, &mut v).unwrap();
        assert_eq!(bits(&v), bits(&want));
    }
}

/// Every comparison, and `Where` with all three operands broadcast differently (batched
/// condition `[B, 1]` against `[B, 3]` and a constant `[3]`).
#[test]
fn comparisons_and_broadcast_where_round_trip() {
    let cmps = [
        (BinaryOp::Greater, Binary::Greater, "Greater"),
        (BinaryOp::Less, Binary::Less, "Less"),
        (
            BinaryOp::GreaterOrEqual,
            Binary::GreaterOrEqual,
            "GreaterOrEqual",
        ),
        (BinaryOp::LessOrEqual, Binary::LessOrEqual, "LessOrEqual"),
        (BinaryOp::Equal, Binary::Equal, "Equal"),
    ];
    let mut g = Lcg(9);
    for (ir_op, op, name) in cmps {
        let mut m = G::default();
        let x = m.input(&[B, f(3)], Role::X);
        let t = m.input(&[B, f(1)], Role::T);
        let half = m.constant(&[f(1)], vec![0.5]);
        let thr = m.constant(&[f(3)], vec![-20.0, 0.0, 20.0]);
        let fill = m.constant(&[f(3)], vec![7.0, -0.0, f32::NAN]);
        // [B, 3] mask from x vs a per-column threshold.
        let mx = m.node(Op::Binary(ir_op), &[x, thr], &[B, f(3)]);
        let w = m.node(Op::Where, &[mx, x, fill], &[B, f(3)]);
        // [B, 1] mask from t, broadcast over the row; `b` is a constant [3].
        let mt = m.node(Op::Binary(ir_op), &[t, half], &[B, f(1)]);
        let o = m.node(Op::Where, &[mt, w, thr], &[B, f(3)]);
        let desc = m.finish(o);
        let bytes = flowrt::write::write(&desc).unwrap();
        let buf = AlignedBytes::copy_from(&bytes);
        let model = Model::from_bytes(&buf).unwrap();
        let ops: Vec<&str> = model.nodes().map(|n| n.op_name()).collect();
        assert_eq!(ops, [name, "Where", name, "Where"]);
        let thr_v = [-20.0f32, 0.0, 20.0];
        let fill_v = [7.0f32, -0.0, f32::NAN];
        for batch in [1usize, 4, 7] {
            let mut x = xs(&mut g, batch * 3);
            // Some exact ties with the thresholds.
            for (i, v) in x.iter_mut().enumerate().filter(|(i, _)| i % 4 == 0) {
                *v = thr_v[i % 3];
            }
            let t: Vec<f32> = (0..batch).map(|r| [0.25, 0.5, 0.75][r % 3]).collect();
            let mut out = vec![0.0; batch * 3];
            let mut arena = AlignedBytes::zeroed(model.graph_arena_bytes(batch).unwrap());
            exec::run(&model, batch, &[&x, &t], &mut out, &mut arena).unwrap();
            let mut want = Vec::new();
            for r in 0..batch {
                for c in 0..3 {
                    let xv = x[r * 3 + c];
                    let w = if op.apply(xv, thr_v[c]) == 1.0 {
                        xv
                    } else {
                        fill_v[c]
                    };
                    want.push(if op.apply(t[r], 0.5) == 1.0 {
                        w
                    } else {
                        thr_v[c]
                    });
                }
            }
            assert_eq!(bits(&out), bits(&want), "{name} batch {batch}");
        }
    }
}

#[test]
fn writer_rejects_bad_where() {
    let node_of = |e: Error| match e {
        Error::InvalidNode { node, what } => (node, what),
        other => panic!("expected InvalidNode, got {other:?}"),
    };
    // Two inputs.
    let mut m = G::default();
    let x = m.input(&[B, f(3)], Role::X);
    let o = m.node(Op::Where, &[x, x], &[B, f(3)]);
    let (node, what) = node_of(flowrt::write::write(&m.finish(o)).unwrap_err());
    assert_eq!((node, what), (0, "wrong number of inputs for this op"));
    // Four inputs.
    let mut m = G::default();
    let x = m.input(&[B, f(3)], Role::X);
    let o = m.node(Op::Where, &[x, x, x, x], &[B, f(3)]);
    assert_eq!(
        node_of(flowrt::write::write(&m.finish(o)).unwrap_err()).0,
        0
    );
    // Operands that do not broadcast.
    let mut m = G::default();
    let x = m.input(&[B, f(3)], Role::X);
    let c = m.constant(&[f(2)], vec![1.0, 2.0]);
    let o = m.node(Op::Where, &[x, x, c], &[B, f(3)]);
    assert_eq!(
        node_of(flowrt::write::write(&m.finish(o)).unwrap_err()),
        (0, "inputs do not broadcast")
    );
    // Output shape that is not the broadcast shape.
    let mut m = G::default();
    let x = m.input(&[B, f(3)], Role::X);
    let c = m.constant(&[f(2), f(1), f(1)], vec![1.0, 2.0]);
    let w = m.node(Op::Where, &[c, x, x], &[B, f(3)]);
    let o = m.node(Op::Unary(UnaryOp::Relu), &[w], &[B, f(3)]);
    assert_eq!(
        node_of(flowrt::write::write(&m.finish(o)).unwrap_err()).0,
        0
    );
}

// Byte offsets in a written file with fixed records (see docs/frt-format.md).
const NODES_SECTION: u16 = 2;
const NODE_RECORD_LEN: usize = 48;

fn nodes_offset(file: &[u8]) -> usize {
    let n_sections = u32::from_le_bytes(file[20..24].try_into().unwrap()) as usize;
    (0..n_sections)
        .map(|i| 32 + 24 * i)
        .find(|e| u16::from_le_bytes(file[*e..*e + 2].try_into().unwrap()) == NODES_SECTION)
        .map(|e| u64::from_le_bytes(file[e + 8..e + 16].try_into().unwrap()) as usize)
        .unwrap()
}

/// Applies `edit` to node `i`'s record, fixes the checksum and loads the file.
fn load_edited(i: usize, edit: impl FnOnce(&mut [u8])) -> Result<(), Error> {
    let mut file =
        flowrt::write::write_with(&softplus_guard(), flowrt::write::Layout::Fixed).unwrap();
    let at = nodes_offset(&file) + 8 + NODE_RECORD_LEN * i;
    edit(&mut file[at..at + NODE_RECORD_LEN]);
    let crc = format::file_checksum(&file).to_le_bytes();
    file[16..20].copy_from_slice(&crc);
    let buf = AlignedBytes::copy_from(&file);
    Model::from_bytes(&buf).map(|_| ())
}

#[test]
fn reader_rejects_malformed_where_arity() {
    // Sanity: an unedited file loads.
    assert_eq!(load_edited(2, |_| {}), Ok(()));
    let set = |code: u16| move |r: &mut [u8]| r[0..2].copy_from_slice(&code.to_le_bytes());
    let arity = |e: Result<(), Error>| {
        matches!(
            e,
            Err(Error::InvalidNode {
                what: "wrong number of inputs for this op",
                ..
            })
        )
    };
    // Where (3 inputs) relabelled as Add (2 inputs).
    assert!(arity(load_edited(2, set(opcode::BINARY_BASE))));
    // Greater (2 inputs) relabelled as Where.
    assert!(arity(load_edited(0, set(opcode::WHERE))));
    // Softplus (1 input) relabelled as Where.
    assert!(arity(load_edited(1, set(opcode::WHERE))));
    // Where with its input count changed (the edge table no longer matches).
    let n_in = |n: u16| move |r: &mut [u8]| r[2..4].copy_from_slice(&n.to_le_bytes());
    assert!(matches!(
        load_edited(2, n_in(2)),
        Err(Error::InvalidNode { .. } | Error::Invalid { .. })
    ));
    // Where with a non-zero attribute word.
    assert!(matches!(
        load_edited(2, |r| r[16] = 1),
        Err(Error::InvalidNode { node: 2, .. })
    ));
    // Comparison relabelled as another comparison still loads (same arity and shapes).
    assert_eq!(
        load_edited(0, set(opcode::BINARY_BASE + Binary::Equal.code())),
        Ok(())
    );
}
