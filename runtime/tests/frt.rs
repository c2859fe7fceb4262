//! `.frt` round trips, validation of malformed files, planner properties, determinism.
#![cfg(feature = "alloc")]

mod common;

use common::{f, Lcg, B};
use flowrt::exec::{self, CpuField};
use flowrt::format::{self, AlignedBytes, InputRole, TensorKind};
use flowrt::ir::{BinaryOp, ModelDesc, NodeDesc, Op, Role, UnaryOp};
use flowrt::ops::Unary;
use flowrt::{CpuOps, Error, Model, VelocityField};

use flowrt::ir::ModelBuilder as G;

fn load(bytes: &[u8]) -> AlignedBytes {
    AlignedBytes::copy_from(bytes)
}

/// x [B,3], t [B,1] -> concat -> dense(4->16)+b -> silu -> dense(16->3)+b.
fn mlp(g: &mut Lcg) -> (ModelDesc, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut m = G::default();
    let x = m.input(&[B, f(3)], Role::X);
    let t = m.input(&[B, f(1)], Role::T);
    let (w1, b1, w2, b2) = (g.vec(4 * 16), g.vec(16), g.vec(16 * 3), g.vec(3));
    let cw1 = m.constant(&[f(4), f(16)], w1.clone());
    let cb1 = m.constant(&[f(16)], b1.clone());
    let cw2 = m.constant(&[f(16), f(3)], w2.clone());
    let cb2 = m.constant(&[f(3)], b2.clone());
    let h0 = m.node(Op::Concat { axis: 1 }, &[x, t], &[B, f(4)]);
    let h1 = m.node(Op::Dense, &[h0, cw1, cb1], &[B, f(16)]);
    let h2 = m.node(Op::Unary(UnaryOp::Silu), &[h1], &[B, f(16)]);
    let o = m.node(Op::Dense, &[h2, cw2, cb2], &[B, f(3)]);
    let mut d = m.finish(o);
    d.metadata.push(("producer".into(), "flowrt-tests".into()));
    d.metadata.push(("note".into(), "héllo".into()));
    (d, w1, b1, w2, b2)
}

fn naive_dense(a: &[f32], w: &[f32], b: &[f32], k: usize, n: usize) -> Vec<f32> {
    let rows = a.len() / k;
    let mut out = vec![0.0; rows * n];
    for r in 0..rows {
        for c in 0..n {
            let mut acc = b[c];
            for kk in 0..k {
                acc = libm::fmaf(a[r * k + kk], w[kk * n + c], acc);
            }
            out[r * n + c] = acc;
        }
    }
    out
}

#[test]
fn mlp_round_trip_matches_naive_reference_bitwise() {
    let mut g = Lcg(1);
    let (desc, w1, b1, w2, b2) = mlp(&mut g);
    let bytes = flowrt::write::write(&desc).unwrap();
    let buf = load(&bytes);
    let m = Model::from_bytes(&buf).unwrap();
    assert_eq!(m.state_dim(), 3);
    assert_eq!(m.input_count(), 2);
    assert_eq!(m.param_count(), 4 * 16 + 16 + 16 * 3 + 3);
    assert!(m.weight_bytes() >= m.param_count() * 4);
    assert_eq!(m.output_shape().to_string(), "[B, 3]");
    let ops: Vec<&str> = m.nodes().map(|n| n.op_name()).collect();
    assert_eq!(ops, ["Concat", "Dense", "Silu", "Dense"]);
    assert_eq!(m.nodes().nth(1).unwrap().name, Some("n1"));
    assert_eq!(
        m.node(3).unwrap().inputs().collect::<Vec<_>>(),
        vec![8, 4, 5]
    );
    assert_eq!(m.tensor(0).unwrap().name, Some("t0"));
    assert_eq!(m.tensor(0).unwrap().kind, TensorKind::Input);
    assert_eq!(m.tensors().count(), desc.tensors.len());
    assert_eq!(
        m.metadata().collect::<Vec<_>>(),
        vec![("producer", "flowrt-tests"), ("note", "héllo")]
    );
    assert_eq!(m.metadata_value("note"), Some("héllo"));
    let ins: Vec<InputRole> = m.inputs().map(|i| i.role).collect();
    assert_eq!(ins, [InputRole::X, InputRole::T]);

    for batch in [1usize, 2, 5, 8] {
        let x = g.vec(batch * 3);
        let t = g.vec(batch);
        let mut out = vec![0.0; batch * 3];
        let mut arena = AlignedBytes::zeroed(m.graph_arena_bytes(batch).unwrap());
        exec::run(&m, batch, &[&x, &t], &mut out, &mut arena).unwrap();
        // Reference.
        let mut h0 = Vec::new();
        for r in 0..batch {
            h0.extend_from_slice(&x[r * 3..r * 3 + 3]);
            h0.push(t[r]);
        }
        let h1 = naive_dense(&h0, &w1, &b1, 4, 16);
        let h2: Vec<f32> = h1.iter().map(|v| Unary::Silu.apply(*v)).collect();
        let want = naive_dense(&h2, &w2, &b2, 16, 3);
        assert_eq!(bits(&out), bits(&want), "batch {batch}");

        // The velocity field feeds x and t by role and gives the same result.
        let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(batch).unwrap());
        let mut field = CpuField::new(&m, batch, &mut arena).unwrap();
        let mut v = vec![0.0; batch * 3];
        let tt = 0.375f32;
        field.eval(&mut CpuOps, tt, &x, &mut v).unwrap();
        let mut out2 = vec![0.0; batch * 3];
        let mut arena2 = AlignedBytes::zeroed(m.graph_arena_bytes(batch).unwrap());
        exec::run(&m, batch, &[&x, &vec![tt; batch]], &mut out2, &mut arena2).unwrap();
        assert_eq!(bits(&v), bits(&out2));
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `h` [B, k] -> dense(k -> hidden)+b -> `act` -> dense(hidden -> n): weights from `g`.
fn mlp_head(m: &mut G, g: &mut Lcg, h: u32, [k, hidden, n]: [u32; 3], act: UnaryOp) -> u32 {
    let w1 = m.constant(&[f(k), f(hidden)], g.vec((k * hidden) as usize));
    let b1 = m.constant(&[f(hidden)], g.vec(hidden as usize));
    let w2 = m.constant(&[f(hidden), f(n)], g.vec((hidden * n) as usize));
    let h = m.node(Op::Dense, &[h, w1, b1], &[B, f(hidden)]);
    let h = m.node(Op::Unary(act), &[h], &[B, f(hidden)]);
    m.node(Op::Dense, &[h, w2], &[B, f(n)])
}

/// xt [B, 3] (D = 2) -> dense -> gelu -> dense -> [B, 2].
fn xt_model(g: &mut Lcg) -> ModelDesc {
    let mut m = G::default();
    let xt = m.input(&[B, f(3)], Role::Xt);
    let o = mlp_head(&mut m, g, xt, [3, 8, 2], UnaryOp::GeluErf);
    m.finish(o)
}

#[test]
fn xt_model_assembles_rows_with_time() {
    let mut g = Lcg(2);
    let buf = common::load(&xt_model(&mut g));
    let m = Model::from_bytes(&buf).unwrap();
    assert_eq!(m.state_dim(), 2);
    let batch = 5;
    let x = g.vec(batch * 2);
    let t = 0.25f32;
    let need = m.required_arena_bytes(batch).unwrap();
    assert_eq!(
        need,
        m.graph_arena_bytes(batch).unwrap() + (batch * 3 * 4).div_ceil(16) * 16
    );
    let mut arena = AlignedBytes::zeroed(need);
    let mut field = CpuField::new(&m, batch, &mut arena).unwrap();
    assert_eq!(field.state_len(), 10);
    let mut v = vec![0.0; batch * 2];
    field.eval_into(t, &x, &mut v).unwrap();
    let xt: Vec<f32> = x.chunks(2).flat_map(|r| [r[0], r[1], t]).collect();
    let mut out = vec![0.0; batch * 2];
    let mut arena = AlignedBytes::zeroed(m.graph_arena_bytes(batch).unwrap());
    exec::run(&m, batch, &[&xt], &mut out, &mut arena).unwrap();
    assert_eq!(bits(&v), bits(&out));
    // Wrong lengths are reported, not panicked on.
    assert!(matches!(
        field_err(&m, batch, &x[1..]),
        Error::ShapeMismatch { .. }
    ));
}

/// The velocity of `m` at time `t` for the rows `x`, from a field made for exactly those rows.
fn velocity(m: &Model<'_>, t: f32, x: &[f32]) -> Vec<f32> {
    let batch = x.len() / m.state_dim();
    let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(batch).unwrap());
    let mut v = vec![0.0; x.len()];
    CpuField::new(m, batch, &mut arena)
        .unwrap()
        .eval_into(t, x, &mut v)
        .unwrap();
    v
}

fn field_err(m: &Model<'_>, batch: usize, x: &[f32]) -> Error {
    let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(batch).unwrap());
    let mut field = CpuField::new(m, batch, &mut arena).unwrap();
    let mut v = vec![0.0; batch * m.state_dim()];
    field.eval_into(0.5, x, &mut v).unwrap_err()
}

/// Exercises Mul with a scalar, Reshape, Transpose, MatMul, Slice, Expand, Add, Sin, fixed
/// region tensors (time embedding) and per-row tensors.
fn layout_model(g: &mut Lcg) -> ModelDesc {
    let mut m = G::default();
    let x = m.input(&[B, f(4)], Role::X);
    let t = m.input(&[], Role::T);
    let freq = m.constant(&[f(1), f(6)], g.vec(6));
    let c22 = m.constant(&[f(2), f(2)], g.vec(4));
    let wout = m.constant(&[f(10), f(4)], g.vec(40));
    let emb = m.node(Op::Binary(BinaryOp::Mul), &[t, freq], &[f(1), f(6)]); // fixed region
    let emb = m.node(Op::Unary(UnaryOp::Sin), &[emb], &[f(1), f(6)]);
    let a = m.node(Op::Binary(BinaryOp::Mul), &[x, t], &[B, f(4)]);
    let r = m.node(Op::Reshape, &[a], &[B, f(2), f(2)]);
    let tr = m.node(Op::transpose(&[0, 2, 1]).unwrap(), &[r], &[B, f(2), f(2)]);
    let mm = m.node(Op::MatMul, &[tr, c22], &[B, f(2), f(2)]);
    let s = m.node(
        Op::Slice {
            axis: 2,
            start: 1,
            end: 2,
            step: 1,
        },
        &[mm],
        &[B, f(2), f(1)],
    );
    let e = m.node(Op::Expand, &[s], &[B, f(2), f(2)]);
    let fl = m.node(Op::Reshape, &[e], &[B, f(4)]);
    let embb = m.node(Op::Expand, &[emb], &[B, f(6)]);
    let cat = m.node(Op::Concat { axis: 1 }, &[fl, embb], &[B, f(10)]);
    let d = m.node(Op::Dense, &[cat, wout], &[B, f(4)]);
    let tx = m.node(Op::transpose(&[1, 0]).unwrap(), &[x], &[f(4), B]);
    let txx = m.node(Op::transpose(&[1, 0]).unwrap(), &[tx], &[B, f(4)]);
    let mx = m.node(Op::Binary(BinaryOp::Max), &[d, txx], &[B, f(4)]);
    let o = m.node(Op::Binary(BinaryOp::Add), &[mx, x], &[B, f(4)]);
    m.finish(o)
}

fn layout_reference(desc: &ModelDesc, x: &[f32], t: f32) -> Vec<f32> {
    let data = |i: usize| desc.tensors[i].data.clone().unwrap();
    let (freq, c22, wout) = (data(2), data(3), data(4));
    let emb: Vec<f32> = freq.iter().map(|f| libm::sinf(t * f)).collect();
    let mut out = Vec::new();
    for row in x.chunks(4) {
        let a: Vec<f32> = row.iter().map(|v| v * t).collect();
        // r = [[a0, a1], [a2, a3]]; tr = r^T; mm = tr x c22.
        let tr = [[a[0], a[2]], [a[1], a[3]]];
        let mut mm = [[0.0f32; 2]; 2];
        for i in 0..2 {
            for j in 0..2 {
                let mut acc = 0.0f32;
                for k in 0..2 {
                    acc = libm::fmaf(tr[i][k], c22[k * 2 + j], acc);
                }
                mm[i][j] = acc;
            }
        }
        let fl = [mm[0][1], mm[0][1], mm[1][1], mm[1][1]];
        let cat: Vec<f32> = fl.iter().chain(emb.iter()).copied().collect();
        let zero = vec![0.0; 4];
        let mut d = naive_dense(&cat, &wout, &zero, 10, 4);
        // Dense without bias starts from 0.0 as well: same bits as with a zero bias.
        for (j, v) in d.iter_mut().enumerate() {
            *v = flowrt::ops::Binary::Max.apply(*v, row[j]) + row[j];
        }
        out.extend(d);
    }
    out
}

#[test]
fn layout_ops_round_trip_match_reference() {
    let mut g = Lcg(3);
    let desc = layout_model(&mut g);
    let buf = common::load(&desc);
    let m = Model::from_bytes(&buf).unwrap();
    assert!(m.fixed_arena_bytes() > 0 && m.per_row_arena_bytes() > 0);
    for batch in [1usize, 3, 8] {
        let x = g.vec(batch * 4);
        let t = 0.7f32;
        let v = velocity(&m, t, &x);
        assert_eq!(bits(&v), bits(&layout_reference(&desc, &x, t)));
    }
}

#[test]
fn rows_do_not_depend_on_batch_size_or_position() {
    let mut g = Lcg(4);
    for desc in [
        mlp(&mut g).0,
        layout_model(&mut g),
        xt_model(&mut g),
        wide_model(&mut g),
    ] {
        let buf = common::load(&desc);
        let m = Model::from_bytes(&buf).unwrap();
        let d = m.state_dim();
        let batch = 8;
        let x = g.vec(batch * d);
        let v = velocity(&m, 0.3, &x);
        for r in 0..batch {
            let v1 = velocity(&m, 0.3, &x[r * d..(r + 1) * d]);
            assert_eq!(bits(&v1), bits(&v[r * d..(r + 1) * d]), "row {r}");
        }
    }
}

/// A wider MLP (exercises the 4-row blocks and column tiles of Dense).
fn wide_model(g: &mut Lcg) -> ModelDesc {
    let mut m = G::default();
    let x = m.input(&[B, f(5)], Role::X);
    let t = m.input(&[B], Role::T);
    let t2 = m.node(Op::Reshape, &[t], &[B, f(1)]);
    let h = m.node(Op::Concat { axis: 1 }, &[x, t2], &[B, f(6)]);
    let o = mlp_head(&mut m, g, h, [6, 700, 5], UnaryOp::Tanh);
    m.finish(o)
}

// -------------------------------------------------------------------------------------------
// Planner.

fn check_plan(desc: &ModelDesc) {
    let p = flowrt::write::plan_model(desc).unwrap();
    let slots: Vec<_> = p
        .slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (i, s)))
        .collect();
    for (i, a) in &slots {
        assert_eq!(a.offset % 16, 0);
        let limit = if a.region == format::Region::Fixed {
            p.fixed_bytes
        } else {
            p.per_row_bytes
        };
        assert!(a.offset + a.size <= limit);
        for (j, b) in &slots {
            if i < j && a.region == b.region && a.first <= b.last && b.first <= a.last {
                assert!(
                    a.offset + a.size <= b.offset || b.offset + b.size <= a.offset,
                    "{i} and {j} overlap"
                );
            }
        }
    }
    // Arena formula.
    let buf = load(&flowrt::write::write(desc).unwrap());
    let m = Model::from_bytes(&buf).unwrap();
    for b in [1usize, 2, 7, 64] {
        assert_eq!(
            m.graph_arena_bytes(b).unwrap(),
            p.fixed_bytes + p.per_row_bytes * b
        );
        assert_eq!(
            m.required_arena_bytes(b).unwrap(),
            m.graph_arena_bytes(b).unwrap() + m.scratch_bytes(b).unwrap()
        );
    }
}

/// Random DAG: chains of unary / binary / dense nodes with skip connections.
fn random_model(g: &mut Lcg) -> ModelDesc {
    let mut m = G::default();
    let width = 1 + g.below(6) as u32;
    let x = m.input(&[B, f(width)], Role::X);
    let t = m.input(&[B, f(1)], Role::T);
    let mut live = vec![x];
    let mut fixed = vec![m.constant(&[f(width)], g.vec(width as usize))];
    for _ in 0..(3 + g.below(25)) {
        let pick = live[g.below(live.len())];
        let out = match g.below(6) {
            0 => m.node(Op::Unary(UnaryOp::Tanh), &[pick], &[B, f(width)]),
            1 => {
                let other = live[g.below(live.len())];
                m.node(Op::Binary(BinaryOp::Add), &[pick, other], &[B, f(width)])
            }
            2 => {
                let w = m.constant(&[f(width), f(width)], g.vec((width * width) as usize));
                m.node(Op::Dense, &[pick, w], &[B, f(width)])
            }
            3 => m.node(Op::Binary(BinaryOp::Mul), &[pick, t], &[B, f(width)]),
            4 => {
                let c = fixed[g.below(fixed.len())];
                let e = m.node(Op::Unary(UnaryOp::Cos), &[c], &[f(width)]);
                fixed.push(e);
                m.node(Op::Binary(BinaryOp::Sub), &[pick, e], &[B, f(width)])
            }
            _ => {
                let a = m.node(Op::Concat { axis: 1 }, &[pick, pick], &[B, f(2 * width)]);
                m.node(
                    Op::Slice {
                        axis: 1,
                        start: 1,
                        end: 2 * width,
                        step: 2,
                    },
                    &[a],
                    &[B, f(width)],
                )
            }
        };
        live.push(out);
    }
    let last = *live.last().unwrap();
    let o = m.node(Op::Binary(BinaryOp::Add), &[last, x], &[B, f(width)]);
    m.finish(o)
}

#[test]
fn planner_never_overlaps_live_tensors() {
    let mut g = Lcg(5);
    check_plan(&mlp(&mut g).0);
    check_plan(&layout_model(&mut g));
    check_plan(&xt_model(&mut g));
    for _ in 0..150 {
        let desc = random_model(&mut g);
        check_plan(&desc);
        // And the planned model runs and is row-independent.
        let buf = common::load(&desc);
        let m = Model::from_bytes(&buf).unwrap();
        let d = m.state_dim();
        let x = g.vec(3 * d);
        let v = velocity(&m, 0.5, &x);
        let v1 = velocity(&m, 0.5, &x[2 * d..]);
        assert_eq!(bits(&v1), bits(&v[2 * d..]));
    }
}

/// A field resolves most nodes once into steps (`exec::steps`, host builds); `exec::run`
/// decodes every node as it goes (the general path, what firmware runs). Both must give the
/// same bits, on models of every op the steps resolve (Dense, unary, binary with constants
/// and broadcasts, Concat, Reshape) mixed with ops they leave to the general path.
#[test]
fn field_steps_match_the_general_path() {
    let mut g = Lcg(6);
    let mut descs = vec![layout_model(&mut g), wide_model(&mut g), mlp(&mut g).0];
    descs.extend((0..100).map(|_| random_model(&mut g)));
    for desc in &descs {
        let buf = common::load(desc);
        let m = Model::from_bytes(&buf).unwrap();
        let d = m.state_dim();
        for batch in [1usize, 5] {
            let x = g.vec(batch * d);
            let t = 0.25f32;
            let v = velocity(&m, t, &x);
            let inputs: Vec<Vec<f32>> = m
                .inputs()
                .map(|info| match info.role {
                    InputRole::X => x.clone(),
                    InputRole::T => vec![t; info.shape.elements(batch).unwrap()],
                    r => panic!("unexpected input role {r:?}"),
                })
                .collect();
            let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
            let mut out = vec![0.0; batch * d];
            let mut arena = AlignedBytes::zeroed(m.graph_arena_bytes(batch).unwrap());
            exec::run(&m, batch, &refs, &mut out, &mut arena).unwrap();
            assert_eq!(bits(&v), bits(&out), "batch {batch}");
        }
    }
}

#[test]
fn arena_and_argument_errors() {
    let mut g = Lcg(6);
    let buf = load(&flowrt::write::write(&mlp(&mut g).0).unwrap());
    let m = Model::from_bytes(&buf).unwrap();
    let need = m.required_arena_bytes(4).unwrap();
    let mut arena = AlignedBytes::zeroed(need + 4);
    assert!(matches!(
        CpuField::new(&m, 4, &mut arena[..need - 1]).err(),
        Some(Error::ArenaTooSmall { needed, given }) if needed == need && given == need - 1
    ));
    assert_eq!(
        CpuField::new(&m, 4, &mut arena[1..]).err(),
        Some(Error::Misaligned)
    );
    assert!(matches!(
        CpuField::new(&m, 0, &mut arena).err(),
        Some(Error::BadArgument { .. })
    ));
    assert!(m.required_arena_bytes(usize::MAX).is_err());
    let x = vec![0.0; 12];
    let t = vec![0.0; 4];
    let mut out = vec![0.0; 12];
    let small = m.graph_arena_bytes(4).unwrap() - 16;
    assert!(matches!(
        exec::run(&m, 4, &[&x, &t], &mut out, &mut arena[..small]),
        Err(Error::ArenaTooSmall { .. })
    ));
    assert!(matches!(
        exec::run(&m, 4, &[&x], &mut out, &mut arena),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        exec::run(&m, 4, &[&x, &t[1..]], &mut out, &mut arena),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        exec::run(&m, 4, &[&x, &t], &mut out[1..], &mut arena),
        Err(Error::ShapeMismatch { .. })
    ));
    exec::run(&m, 4, &[&x, &t], &mut out, &mut arena).unwrap();
}

#[test]
fn aligned_buffers() {
    static EMBEDDED: &[u8] = flowrt::include_frt!("frt.rs");
    assert_eq!(EMBEDDED.as_ptr() as usize % 16, 0);
    assert!(EMBEDDED.starts_with(b"//! `.frt` round trips"));
    let a = AlignedBytes::copy_from(&[1, 2, 3]);
    assert_eq!(a.as_ptr() as usize % 16, 0);
    assert_eq!(&a[..], &[1, 2, 3]);
    let mut g = Lcg(7);
    let bytes = flowrt::write::write(&mlp(&mut g).0).unwrap();
    let buf = load(&bytes);
    assert_eq!(Model::from_bytes(&buf[..]).map(|_| ()), Ok(()));
    // Misaligned start (copy shifted by one byte).
    let mut shifted = AlignedBytes::zeroed(bytes.len() + 1);
    shifted[1..].copy_from_slice(&bytes);
    assert_eq!(
        Model::from_bytes(&shifted[1..]).err(),
        Some(Error::Misaligned)
    );
}

// -------------------------------------------------------------------------------------------
// Writer validation: errors name the node / tensor.

fn write_err(desc: &ModelDesc) -> Error {
    flowrt::write::write(desc).expect_err("writer must reject this desc")
}

#[test]
fn writer_rejects_inconsistent_descs_naming_the_node() {
    let node_of = |e: Error| match e {
        Error::InvalidNode { node, what } => (node, what),
        other => panic!("expected InvalidNode, got {other:?}"),
    };
    let tensor_of = |e: Error| match e {
        Error::InvalidTensor { tensor, what } => (tensor, what),
        other => panic!("expected InvalidTensor, got {other:?}"),
    };
    let mut g = Lcg(8);
    // Dense K mismatch.
    let mut m = G::default();
    let x = m.input(&[B, f(3)], Role::X);
    let w = m.constant(&[f(4), f(3)], g.vec(12));
    let o = m.node(Op::Dense, &[x, w], &[B, f(3)]);
    assert_eq!(node_of(write_err(&m.finish(o))).0, 0);
    // Broadcast illegal.
    let mut m = G::default();
    let x = m.input(&[B, f(3)], Role::X);
    let c = m.constant(&[f(2)], g.vec(2));
    let u = m.node(Op::Unary(UnaryOp::Relu), &[x], &[B, f(3)]);
    let o = m.node(Op::Binary(BinaryOp::Add), &[u, c], &[B, f(3)]);
    assert_eq!(node_of(write_err(&m.finish(o))).0, 1);
    // Concat dims.
    let mut m = G::default();
    let x = m.input(&[B, f(3)], Role::X);
    let o = m.node(Op::Concat { axis: 1 }, &[x, x], &[B, f(5)]);
    assert_eq!(node_of(write_err(&m.finish(o))).0, 0);
    // Reshape element count.
    let mut m = G::default();
    let x = m.input(&[B, f(4)], Role::X);
    let r = m.node(Op::Reshape, &[x], &[B, f(2), f(3)]);
    let o = m.node(Op::Reshape, &[r], &[B, f(4)]);
    assert_eq!(node_of(write_err(&m.finish(o))).0, 0);
    // Reshape that would fold the batch dim.
    let mut m = G::default();
    let x = m.input(&[B, f(4)], Role::X);
    let r = m.node(Op::Reshape, &[x], &[f(4)]);
    let o = m.node(Op::Expand, &[r], &[B, f(4)]);
    assert_eq!(node_of(write_err(&m.finish(o))).0, 0);
    // Bad permutation, slice out of range, zero step, NaN attribute.
    for bad in [
        Op::Transpose {
            rank: 2,
            perm: [0, 0, 0, 0, 0, 0],
        },
        Op::Transpose {
            rank: 2,
            perm: [0, 2, 0, 0, 0, 0],
        },
        Op::Slice {
            axis: 1,
            start: 0,
            end: 5,
            step: 1,
        },
        Op::Slice {
            axis: 1,
            start: 0,
            end: 2,
            step: 0,
        },
        Op::Slice {
            axis: 0,
            start: 0,
            end: 1,
            step: 1,
        },
        Op::Unary(UnaryOp::LeakyRelu { alpha: f32::NAN }),
        Op::MatMul,
        Op::Concat { axis: 2 },
    ] {
        let mut m = G::default();
        let x = m.input(&[B, f(4)], Role::X);
        let o = m.node(bad, &[x], &[B, f(4)]);
        let (node, what) = node_of(write_err(&m.finish(o)));
        assert_eq!(node, 0, "{bad:?}: {what}");
    }
    // Use before definition.
    let mut m = G::default();
    let x = m.input(&[B, f(4)], Role::X);
    let later = m.tensor(&[B, f(4)]);
    let a = m.node(Op::Binary(BinaryOp::Add), &[x, later], &[B, f(4)]);
    let mut desc = m.finish(a);
    desc.nodes.push(NodeDesc {
        name: "late".into(),
        op: Op::Unary(UnaryOp::Neg),
        inputs: vec![x],
        output: later,
    });
    assert_eq!(node_of(write_err(&desc)).0, 0);
    // Tensor errors: wrong constant length, two batch dims, output is an input, never defined.
    let mut m = G::default();
    let x = m.input(&[B, f(2)], Role::X);
    let c = m.constant(&[f(2)], g.vec(3));
    let o = m.node(Op::Binary(BinaryOp::Add), &[x, c], &[B, f(2)]);
    assert_eq!(tensor_of(write_err(&m.finish(o))).0, c);
    let mut m = G::default();
    let x = m.input(&[B, B], Role::X);
    assert_eq!(tensor_of(write_err(&m.finish(x))).0, x);
    let mut m = G::default();
    let x = m.input(&[B, f(2)], Role::X);
    assert_eq!(tensor_of(write_err(&m.finish(x))).0, x);
    let mut m = G::default();
    let x = m.input(&[B, f(2)], Role::X);
    let _dangling = m.tensor(&[B, f(2)]);
    let o = m.node(Op::Unary(UnaryOp::Neg), &[x], &[B, f(2)]);
    assert!(matches!(
        write_err(&m.finish(o)),
        Error::InvalidTensor { tensor: 1, .. }
    ));
    // Output row size differs from D: invalid for a velocity field (a model with a time
    // input), allowed for a state-only model (a decoder), whose output_dim says so.
    let mut m = G::default();
    let x = m.input(&[B, f(2)], Role::X);
    let _t = m.input(&[B], Role::T);
    let o = m.node(Op::Concat { axis: 1 }, &[x, x], &[B, f(4)]);
    assert!(matches!(
        write_err(&m.finish(o)),
        Error::InvalidTensor { .. }
    ));
    let mut m = G::default();
    let x = m.input(&[B, f(2)], Role::X);
    let o = m.node(Op::Concat { axis: 1 }, &[x, x], &[B, f(4)]);
    let bytes = flowrt::write::write(&m.finish(o)).unwrap();
    let buf = load(&bytes);
    let dec = Model::from_bytes(&buf[..]).unwrap();
    assert_eq!((dec.state_dim(), dec.output_dim()), (2, 4));
    // ... and is refused as a velocity field, with a typed error.
    let mut arena = AlignedBytes::zeroed(dec.required_arena_bytes(1).unwrap());
    let mut field = CpuField::new(&dec, 1, &mut arena[..]).unwrap();
    assert!(matches!(
        field.eval_into(0.0, &[1.0, 2.0], &mut [0.0; 2]),
        Err(Error::BadArgument { .. })
    ));
    // No state input; two roles; bad t shape.
    let mut m = G::default();
    let t = m.input(&[B], Role::T);
    let o = m.node(Op::Unary(UnaryOp::Neg), &[t], &[B]);
    assert!(matches!(write_err(&m.finish(o)), Error::Invalid { .. }));
    let mut m = G::default();
    let x = m.input(&[B, f(2)], Role::X);
    let _x2 = m.input(&[B, f(3)], Role::Xt);
    let o = m.node(Op::Unary(UnaryOp::Neg), &[x], &[B, f(2)]);
    assert!(matches!(write_err(&m.finish(o)), Error::Invalid { .. }));
    let mut m = G::default();
    let x = m.input(&[B, f(2)], Role::X);
    let _t = m.input(&[B, f(2)], Role::T);
    let o = m.node(Op::Unary(UnaryOp::Neg), &[x], &[B, f(2)]);
    assert!(matches!(
        write_err(&m.finish(o)),
        Error::InvalidTensor { .. }
    ));
}

// -------------------------------------------------------------------------------------------
// Malformed files.

/// A small valid file (MLP with fewer weights) with fixed records (version 1), whose fields
/// the tests below patch at known offsets.
fn small_file() -> Vec<u8> {
    flowrt::write::write_with(&small_desc(), flowrt::write::Layout::Fixed).unwrap()
}

/// The same model with compact records (version 3, what `write` emits by default).
fn small_compact_file() -> Vec<u8> {
    flowrt::write::write(&small_desc()).unwrap()
}

/// Both layouts of the small model.
fn small_files() -> [Vec<u8>; 2] {
    [small_file(), small_compact_file()]
}

fn small_desc() -> ModelDesc {
    let mut g = Lcg(9);
    let mut m = G::default();
    let x = m.input(&[B, f(2)], Role::X);
    let t = m.input(&[B, f(1)], Role::T);
    let w = m.constant(&[f(3), f(2)], g.vec(6));
    let b = m.constant(&[f(2)], g.vec(2));
    let h = m.node(Op::Concat { axis: 1 }, &[x, t], &[B, f(3)]);
    let h = m.node(Op::Dense, &[h, w, b], &[B, f(2)]);
    let h = m.node(
        Op::Unary(UnaryOp::LeakyRelu { alpha: 0.1 }),
        &[h],
        &[B, f(2)],
    );
    let o = m.node(Op::Binary(BinaryOp::Add), &[h, x], &[B, f(2)]);
    let mut d = m.finish(o);
    d.metadata.push(("k".into(), "v".into()));
    d
}

struct Layout {
    sections: Vec<(u16, u16, usize, usize)>,
}

impl Layout {
    fn of(file: &[u8]) -> Layout {
        let n = u32::from_le_bytes(file[20..24].try_into().unwrap()) as usize;
        let version = u16::from_le_bytes(file[4..6].try_into().unwrap());
        let sections = (0..n)
            .map(|i| {
                let (kind, flags, off, len) = format::section_entry(file, version, n, i).unwrap();
                (kind, flags, off as usize, len as usize)
            })
            .collect();
        Layout { sections }
    }
    fn off(&self, kind: u16) -> usize {
        self.sections.iter().find(|s| s.0 == kind).unwrap().2
    }
    /// Where the section table entry of `kind` is (fixed-record files: 24 bytes each).
    fn entry(&self, kind: u16) -> usize {
        32 + 24 * self.sections.iter().position(|s| s.0 == kind).unwrap()
    }
    /// [`Layout::entry`] in a version-3 file (12 bytes each).
    fn compact_entry(&self, kind: u16) -> usize {
        32 + 12 * self.sections.iter().position(|s| s.0 == kind).unwrap()
    }
    fn tensor(&self, i: usize) -> usize {
        self.off(format::section::TENSORS) + 8 + 64 * i
    }
    fn node(&self, i: usize) -> usize {
        self.off(format::section::NODES) + 8 + 48 * i
    }
    fn edge(&self, file: &[u8], i: usize) -> usize {
        let n = u32::from_le_bytes(file[self.off(2)..self.off(2) + 4].try_into().unwrap()) as usize;
        self.off(format::section::NODES) + 8 + 48 * n + 4 * i
    }
    fn plan_entry(&self, i: usize) -> usize {
        self.off(format::section::PLAN) + 24 + 16 * i
    }
    fn sig(&self) -> usize {
        self.off(format::section::SIGNATURE)
    }
}

fn put32(f: &mut [u8], at: usize, v: u32) {
    f[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(f: &mut [u8], at: usize, v: u64) {
    f[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get32(f: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(f[at..at + 4].try_into().unwrap())
}
fn get64(f: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(f[at..at + 8].try_into().unwrap())
}

/// Recomputes the checksum so that the corruption reaches validation.
fn refresh(f: &mut [u8]) {
    let crc = format::file_checksum(f);
    put32(f, 16, crc);
}

fn load_err(f: &[u8]) -> Error {
    let buf = load(f);
    Model::from_bytes(&buf)
        .map(|_| ())
        .expect_err("corrupted file must be rejected")
}

/// Applies `edit`, refreshes the checksum and returns the load error.
fn corrupt(edit: impl FnOnce(&mut Vec<u8>, &Layout)) -> Error {
    let mut f = small_file();
    let l = Layout::of(&f);
    edit(&mut f, &l);
    refresh(&mut f);
    load_err(&f)
}

/// Asserts that each edit (see [`corrupt`]) gives an error matching `$pat`; `$what` names it.
macro_rules! rejects {
    ($pat:pat, $($what:expr => |$f:ident, $l:tt| $edit:expr),+ $(,)?) => {{
        $({
            let e = corrupt(|$f, $l| {
                $edit;
            });
            assert!(matches!(e, $pat), "{}: {e:?}", $what);
        })+
    }};
}

#[test]
fn every_truncation_is_rejected() {
    for f in small_files() {
        every_truncation_of_is_rejected(&f);
    }
}

fn every_truncation_of_is_rejected(f: &[u8]) {
    let buf = load(f);
    assert!(Model::from_bytes(&buf).is_ok());
    for n in 0..f.len() {
        let r = Model::from_bytes(&buf[..n]);
        assert!(r.is_err(), "prefix of {n} bytes accepted");
        if n >= 32 {
            assert!(
                matches!(r, Err(Error::Truncated { .. })),
                "prefix {n}: {r:?}"
            );
        }
    }
}

#[test]
fn every_bit_flip_is_rejected() {
    for f in small_files() {
        let mut buf = load(&f);
        for bit in 0..f.len() * 8 {
            buf[bit / 8] ^= 1 << (bit % 8);
            assert!(Model::from_bytes(&buf).is_err(), "bit {bit} flip accepted");
            buf[bit / 8] ^= 1 << (bit % 8);
        }
        assert!(Model::from_bytes(&buf).is_ok());
    }
}

#[test]
fn header_errors() {
    let f = small_file();
    let mut v = f.clone();
    v[4] = 4;
    assert_eq!(load_err(&v), Error::UnsupportedVersion { found: 4 });
    refresh(&mut v);
    assert_eq!(load_err(&v), Error::UnsupportedVersion { found: 4 });
    let mut v = f.clone();
    v[0] = b'X';
    assert_eq!(load_err(&v), Error::BadMagic);
    let mut v = f.clone();
    v[16] ^= 1;
    assert!(matches!(load_err(&v), Error::ChecksumMismatch { .. }));
    rejects!(
        Error::Invalid { .. },
        "header byte 6" => |f, _| f[6] = 1,
        "header byte 30" => |f, _| f[30] = 1,
        "total length 8" => |f, _| put64(f, 8, 8),
    );
    rejects!(
        Error::Truncated { .. },
        "total length past the end" => |f, _| {
            let n = f.len() as u64;
            put64(f, 8, n + 16)
        },
    );
    // Extra bytes after the recorded length are ignored.
    let mut v = f.clone();
    v.extend_from_slice(&[0xAB; 7]);
    assert!(Model::from_bytes(&load(&v)).is_ok());
}

#[test]
fn section_table_errors() {
    use format::section::*;
    rejects!(
        Error::Invalid { .. },
        "65 sections" => |f, _| put32(f, 20, 65),
        "nodes offset moved by 4" => |f, l| put64(f, l.entry(NODES) + 8, l.off(NODES) as u64 + 4),
        "nodes inside the header" => |f, l| put64(f, l.entry(NODES) + 8, 16),
        "nodes over the tensors" => |f, l| put64(f, l.entry(NODES) + 8, l.off(TENSORS) as u64),
        "nodes flags" => |f, l| f[l.entry(NODES) + 2] = 2,
        "nodes reserved" => |f, l| f[l.entry(NODES) + 4] = 2,
        // Duplicate kind.
        "duplicate kind" => |f, l| f[l.entry(METADATA)] = NAMES as u8,
    );
    rejects!(
        Error::Truncated { .. } | Error::Invalid { .. },
        "1000 sections" => |f, _| put32(f, 20, 1000),
        "nodes length u64::MAX" => |f, l| put64(f, l.entry(NODES) + 16, u64::MAX),
    );
    rejects!(
        Error::Truncated { .. },
        "nodes offset 2^40" => |f, l| put64(f, l.entry(NODES) + 8, 1 << 40),
        "nodes length 2^40" => |f, l| put64(f, l.entry(NODES) + 16, 1 << 40),
    );
    // Unknown optional kinds are skipped; unknown required kinds are rejected.
    let mut v = small_file();
    let l = Layout::of(&v);
    v[l.entry(METADATA)] = 100;
    refresh(&mut v);
    let buf = load(&v);
    let m = Model::from_bytes(&buf).unwrap();
    assert_eq!(m.metadata().count(), 0);
    rejects!(
        Error::UnsupportedSection { kind: 100 },
        "required kind 100" => |f, l| {
            f[l.entry(METADATA)] = 100;
            f[l.entry(METADATA) + 2] = 1
        },
    );
    rejects!(
        Error::UnsupportedSection { kind: 200 },
        "required kind 200" => |f, l| f[l.entry(SOLVER_DEFAULTS.min(PLAN))] = 200,
    );
    rejects!(
        Error::Invalid { .. },
        // A missing required section.
        "no tensors section" => |f, l| {
            f[l.entry(TENSORS)] = 100;
            f[l.entry(TENSORS) + 2] = 0
        },
        // Section lengths that disagree with their counts.
        "tensor count" => |f, l| put32(f, l.off(TENSORS), 99),
        "edge count" => |f, l| put32(f, l.off(NODES) + 4, 99),
        "plan count" => |f, l| put32(f, l.off(PLAN) + 16, 99),
        "signature count" => |f, l| put32(f, l.sig(), 99),
        "metadata utf-8" => |f, l| f[l.off(METADATA) + 12] = 0xFF,
        "names count" => |f, l| put32(f, l.off(NAMES), 1),
        "names utf-8" => |f, l| f[l.off(NAMES) + 12] = 0xC0,
    );
    rejects!(
        Error::Truncated { .. },
        "metadata count" => |f, l| put32(f, l.off(METADATA), 2),
        "metadata length" => |f, l| put32(f, l.off(METADATA) + 4, 1 << 30),
    );
}

#[test]
fn tensor_record_errors() {
    // Tensors of small_file: 0 x, 1 t, 2 w, 3 b, 4 concat, 5 dense, 6 leaky, 7 add (output).
    rejects!(
        Error::InvalidTensor { .. },
        "zero dim" => |f, l| put32(f, l.tensor(2) + 8, 0),
        "rank 7" => |f, l| f[l.tensor(2) + 2] = 7,
        "batch axis out of range" => |f, l| f[l.tensor(5) + 3] = 5,
        "dtype" => |f, l| f[l.tensor(2) + 1] = 1,
        "kind" => |f, l| f[l.tensor(2)] = 9,
        "K changed: data length" => |f, l| put32(f, l.tensor(2) + 8, 4),
        "unused dim not zero" => |f, l| put32(f, l.tensor(2) + 16, 1),
        "reserved" => |f, l| put32(f, l.tensor(2) + 36, 1),
        "misaligned const data" => |f, l| {
            let at = l.tensor(3) + 40;
            let v = get64(f, at);
            put64(f, at, v + 4)
        },
        "const data out of range" => |f, l| put64(f, l.tensor(3) + 40, 1 << 20),
        "const with batch" => |f, l| f[l.tensor(2) + 3] = 0,
        "wrong producer" => |f, l| put32(f, l.tensor(5) + 4, 0),
        "producer out of range" => |f, l| put32(f, l.tensor(5) + 4, 999),
        "slot out of range" => |f, l| put32(f, l.tensor(5) + 32, 999),
        "input with producer" => |f, l| put32(f, l.tensor(0) + 4, 0),
    );
    rejects!(
        Error::InvalidTensor { .. } | Error::Invalid { .. },
        "two outputs" => |f, l| f[l.tensor(6)] = 3,
    );
    // Intermediate dim changed: shape rules catch it.
    rejects!(
        Error::InvalidNode { .. } | Error::InvalidTensor { .. },
        "intermediate dim" => |f, l| put32(f, l.tensor(5) + 12, 3),
    );
}

#[test]
fn node_record_errors() {
    // Nodes: 0 concat(x,t), 1 dense(h,w,b), 2 leaky(h), 3 add(h,x).
    rejects!(
        Error::InvalidNode { .. },
        "unknown op" => |f, l| put32(f, l.node(0), 0x0999),
        "binary op code -> unary (arity)" => |f, l| f[l.node(3) + 1] = 0x02,
        "unary op code -> binary (arity)" => |f, l| f[l.node(2) + 1] = 0x01,
        "input count changed" => |f, l| f[l.node(2) + 2] = 2,
        "input list not contiguous" => |f, l| put32(f, l.node(1) + 4, 0),
    );
    rejects!(
        Error::InvalidNode { .. } | Error::InvalidTensor { .. },
        "output id out of range" => |f, l| put32(f, l.node(1) + 8, 999),
        "output is a constant" => |f, l| put32(f, l.node(1) + 8, 2),
    );
    rejects!(
        Error::InvalidNode { .. },
        "reserved" => |f, l| put32(f, l.node(1) + 12, 1),
        "concat axis" => |f, l| put32(f, l.node(0) + 16, 5),
        "unused attribute" => |f, l| put32(f, l.node(0) + 20, 1),
        "NaN alpha" => |f, l| put32(f, l.node(2) + 16, f32::NAN.to_bits()),
    );
    // Edge `i` set to tensor `t`.
    for (i, t, what) in [
        (0, 999, "input id out of range"),
        (0, 6, "use before def"),
        (3, 3, "dense weight <- bias (shape)"),
        (6, 4, "add of [B,3] and [B,2]"),
    ] {
        rejects!(Error::InvalidNode { .. }, what => |f, l| {
            let e = l.edge(f, i);
            put32(f, e, t)
        });
    }
    // Edge table with an unused trailing entry.
    let mut f = small_file();
    let l = Layout::of(&f);
    let nodes = l.off(2);
    let len_at = l.entry(2) + 16;
    let len = get64(&f, len_at);
    // Grow the nodes section by one edge into its padding, if there is room.
    let next = l
        .sections
        .iter()
        .map(|s| s.2)
        .filter(|o| *o > nodes)
        .min()
        .unwrap();
    if nodes + len as usize + 4 <= next {
        put64(&mut f, len_at, len + 4);
        let e = get32(&f, nodes + 4);
        put32(&mut f, nodes + 4, e + 1);
        refresh(&mut f);
        assert!(matches!(load_err(&f), Error::Invalid { .. }));
    }
}

#[test]
fn plan_and_signature_errors() {
    let f = small_file();
    let l = Layout::of(&f);
    // Slots: plan entries in tensor order 4, 5, 6, 7.
    let slot_of = |t: usize| get32(&f, l.tensor(t) + 32) as usize;
    let off_of = |t: usize| get64(&f, l.plan_entry(slot_of(t)) + 8);
    // Output of the dense (5) placed on its input (4): overlap.
    let (s5, o4) = (slot_of(5), off_of(4));
    rejects!(
        Error::InvalidNode { node: 1, .. },
        "overlap" => |f, l| put64(f, l.plan_entry(s5) + 8, o4),
    );
    rejects!(
        Error::InvalidTensor { .. },
        "offset 8: on a live tensor" => |f, l| put64(f, l.plan_entry(s5) + 8, 8),
        "offset past the region" => |f, l| put64(f, l.plan_entry(s5) + 8, 1 << 20),
        "region fixed for a per-row tensor" => |f, l| put32(f, l.plan_entry(s5) + 4, 0),
        "entry for another tensor" => |f, l| put32(f, l.plan_entry(s5), 4),
        "no per-row bytes" => |f, l| put64(f, l.off(4) + 8, 0),
        // Signature.
        "output not the output tensor" => |f, l| put32(f, l.sig() + 4, 6),
        "input x is a constant" => |f, l| put32(f, l.sig() + 16, 2),
    );
    rejects!(
        Error::Invalid { .. },
        "unknown region 5" => |f, l| put32(f, l.plan_entry(s5) + 4, 5),
        "fixed bytes 8" => |f, l| put64(f, l.off(4), 8),
        // Signature.
        "unknown role 8" => |f, l| put32(f, l.sig() + 16 + 4, 8),
        "t role set to x: two x" => |f, l| put32(f, l.sig() + 16 + 12, 0),
        "state dim 3" => |f, l| put32(f, l.sig() + 8, 3),
        "t tensor set to x" => |f, l| put32(f, l.sig() + 16 + 8, 0),
        "reserved" => |f, l| put32(f, l.sig() + 12, 1),
    );
}

/// The plan's region sizes are bounded by its own entries (max `offset + size`, rounded up
/// to 16): a flipped bit (checksum recomputed) that declares a 2 GB fixed region for a graph
/// of a few hundred bytes is an `Error::Invalid` naming the region, not a 2 GB arena.
#[test]
fn plan_regions_no_larger_than_their_tensors_need() {
    let f = small_file();
    let l = Layout::of(&f);
    let plan = l.off(format::section::PLAN);
    let (fixed, per_row) = (get64(&f, plan), get64(&f, plan + 8));
    let a = load(&f);
    let m = Model::from_bytes(a.as_slice()).unwrap();
    assert_eq!(
        (m.fixed_arena_bytes() as u64, m.per_row_arena_bytes() as u64),
        (fixed, per_row)
    );
    assert!(per_row > 0 && per_row % 16 == 0);
    for (at, value, what) in [
        (
            plan,
            fixed | 1 << 31,
            "fixed region is larger than its tensors need",
        ),
        (
            plan,
            fixed + 16,
            "fixed region is larger than its tensors need",
        ),
        (
            plan,
            fixed | 1 << 40,
            "fixed region is larger than its tensors need",
        ),
        (
            plan + 8,
            per_row | 1 << 31,
            "per-row region is larger than its tensors need",
        ),
        (
            plan + 8,
            per_row + 16,
            "per-row region is larger than its tensors need",
        ),
    ] {
        match common::patched(&f, at, &value.to_le_bytes()) {
            Err(Error::Invalid { what: w }) => assert!(w.contains(what), "{w} vs {what}"),
            other => panic!("{what} ({value:#x}): {other:?}"),
        }
    }
}

/// The case fuzzing found: `moons_icfm` as `flowrt export` writes it (37 KB, seven nodes;
/// `tests/data/moons_icfm.frt`) with bit 31 of the plan's `fixed_bytes` flipped and the
/// checksum recomputed used to load and ask for a 2 GB arena. Now a typed error.
#[test]
fn exported_file_with_a_flipped_plan_size_bit_is_rejected() {
    let f: &[u8] = include_bytes!("data/moons_icfm.frt");
    let a = load(f);
    let m = Model::from_bytes(a.as_slice()).unwrap();
    assert_eq!(m.node_count(), 7);
    let needed = m.required_arena_bytes(1).unwrap();
    assert!(needed < 4096, "{needed}");
    let plan = Layout::of(f).off(format::section::PLAN);
    let mut v = f.to_vec();
    v[plan + 3] ^= 0x80; // bit 31 of fixed_bytes: + 2 GiB
    assert_eq!(get64(&v, plan) - get64(f, plan), 1 << 31);
    let crc = format::file_checksum(&v).to_le_bytes();
    v[16..20].copy_from_slice(&crc);
    let b = load(&v);
    assert_eq!(
        Model::from_bytes(b.as_slice()).map(|m| m.fixed_arena_bytes()),
        Err(Error::Invalid {
            what: "plan's fixed region is larger than its tensors need"
        })
    );
}

/// Random field-aware corruption with a valid checksum: loading never panics, and a file
/// that still loads runs without panicking at several batch sizes.
#[test]
fn random_corruption_never_panics() {
    for f in small_files() {
        random_corruption_of_never_panics(&f);
    }
}

fn random_corruption_of_never_panics(f: &[u8]) {
    let mut g = Lcg(10);
    let values = [
        0u32,
        1,
        2,
        3,
        4,
        6,
        7,
        8,
        16,
        255,
        0x100,
        0x200,
        0xFFFF,
        u32::MAX,
        0x8000_0000,
    ];
    let (mut loaded, mut ran) = (0, 0);
    for _ in 0..20_000 {
        let mut v = f.to_vec();
        for _ in 0..1 + g.below(3) {
            let at = 4 * g.below(v.len() / 4);
            let val = if g.below(2) == 0 {
                values[g.below(values.len())]
            } else {
                g.next_u64() as u32
            };
            match g.below(3) {
                0 => v[at] = val as u8,
                1 => v[at..at + 2].copy_from_slice(&(val as u16).to_le_bytes()),
                _ => put32(&mut v, at, val),
            }
        }
        refresh(&mut v);
        let buf = load(&v);
        if let Ok(m) = Model::from_bytes(&buf) {
            loaded += 1;
            for batch in [1usize, 3] {
                let Ok(need) = m.required_arena_bytes(batch) else {
                    continue;
                };
                if need > 1 << 20 {
                    continue;
                }
                let mut arena = AlignedBytes::zeroed(need);
                let x = vec![0.5; batch * m.state_dim()];
                let mut out = vec![0.0; x.len()];
                if let Ok(mut field) = CpuField::new(&m, batch, &mut arena) {
                    if field.eval_into(0.5, &x, &mut out).is_ok() {
                        ran += 1;
                    }
                }
            }
        }
    }
    println!("loaded {loaded}, ran {ran}");
}

/// Version 3's compact tables: each rule of docs/frt-format.md ("Compact tables") broken
/// on its own, with a valid checksum, gives a typed error.
#[test]
fn compact_record_errors() {
    use format::section::*;
    let f = small_compact_file();
    assert_eq!(Model::from_bytes(&load(&f)).unwrap().version(), 3);
    let l = Layout::of(&f);
    let patched = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut v = f.clone();
        edit(&mut v);
        refresh(&mut v);
        load_err(&v)
    };
    let (t, n) = (l.off(TENSORS), l.off(NODES));
    let invalid = |what: &str, e: Error| {
        assert!(
            matches!(
                e,
                Error::Invalid { .. } | Error::InvalidTensor { .. } | Error::InvalidNode { .. }
            ),
            "{what}: {e:?}"
        )
    };
    invalid("index width 3", patched(&|v| v[t + 4] = 3));
    invalid("reserved byte", patched(&|v| v[t + 6] = 1));
    invalid(
        "one tensor more",
        patched(&|v| put32(v, t, get32(&f, t) + 1)),
    );
    invalid("one node less", patched(&|v| put32(v, n, get32(&f, n) - 1)));
    invalid("first tensor not at 0", patched(&|v| v[t + 8] = 1));
    // Record 1 starting where record 2 does: record 1 is then empty (a small table has a
    // one-byte index).
    assert_eq!(f[t + 4], 1);
    invalid("index not increasing", patched(&|v| v[t + 9] = v[t + 10]));
    invalid(
        "index width 2 on a one-byte index",
        patched(&|v| v[t + 4] = 2),
    );
    // The plan section 8 bytes longer: it no longer is 16 bytes, and every later section
    // moves by 8, so the file is one whose total length is too short.
    let e = l.compact_entry(PLAN);
    let e = patched(&|v| put64(v, e + 4, 24));
    assert!(
        matches!(e, Error::Truncated { .. } | Error::Invalid { .. }),
        "{e:?}"
    );
    // A section table whose lengths run past the file.
    let e = l.compact_entry(TENSORS);
    let e = patched(&|v| put64(v, e + 4, f.len() as u64));
    assert!(matches!(e, Error::Truncated { .. }), "{e:?}");
    // The first tensor record (an input: two bytes) with a flag bit, then with a rank of 7.
    let records = |v: &[u8]| {
        let count = get32(v, t) as usize;
        (t + 8 + usize::from(v[t + 4]) * count + 3) & !3
    };
    let r0 = records(&f);
    assert_eq!(f[r0] & 3, 0, "tensor 0 is an input");
    invalid("tensor flag bit", patched(&|v| v[r0] |= 0x80));
    invalid("rank 7", patched(&|v| v[r0 + 1] = (v[r0 + 1] & !7) | 7));
    invalid(
        "batch axis past the rank",
        patched(&|v| v[r0 + 1] |= 7 << 3),
    );
}

/// Every byte of the compact tensor, node and plan sections set to each of several values,
/// with the checksum recomputed: loading never panics, and what still loads samples
/// without panicking.
#[test]
fn every_compact_record_byte_corrupted_never_panics() {
    use format::section::*;
    let f = small_compact_file();
    let l = Layout::of(&f);
    let ranges: Vec<(usize, usize)> = [TENSORS, NODES, PLAN]
        .iter()
        .map(|k| {
            let s = l.sections.iter().find(|s| s.0 == *k).unwrap();
            (s.2, s.2 + s.3)
        })
        .collect();
    let (mut tried, mut loaded) = (0, 0);
    for (start, end) in ranges {
        for at in start..end {
            for val in [
                0u8,
                1,
                2,
                0x7F,
                0x80,
                0xFF,
                f[at] ^ 1,
                f[at] ^ 0x80,
                f[at] + 1,
            ] {
                if val == f[at] {
                    continue;
                }
                let mut v = f.clone();
                v[at] = val;
                refresh(&mut v);
                tried += 1;
                let buf = load(&v);
                let Ok(m) = Model::from_bytes(&buf) else {
                    continue;
                };
                loaded += 1;
                let Ok(need) = m.required_arena_bytes(2) else {
                    continue;
                };
                assert!(need < 1 << 20, "byte {at} = {val}: arena {need}");
                let mut arena = AlignedBytes::zeroed(need);
                let x = vec![0.5; 2 * m.state_dim()];
                let mut out = vec![0.0; x.len()];
                if let Ok(mut field) = CpuField::new(&m, 2, &mut arena) {
                    let _ = field.eval_into(0.5, &x, &mut out);
                }
            }
        }
    }
    assert!(tried > 500, "{tried}");
    println!("tried {tried}, loaded {loaded}");
}
