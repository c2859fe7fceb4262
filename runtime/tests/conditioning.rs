//! Conditioning roles (`label`, `cond`, `guidance`) and the `Gather` op: writer -> reader ->
//! `CpuField::eval_cond` / `sampler::sample_cond` round trips on hand-built models, checked
//! against a naive reference, plus every typed error (missing / extra conditioning, wrong
//! lengths, label out of range, non-finite values, malformed signatures and Gather nodes).
#![cfg(feature = "alloc")]

mod common;

use common::{f, load, B};
use flowrt::exec::{self, CpuField};
use flowrt::field::Conditioning;
use flowrt::format::{self, opcode, AlignedBytes, InputRole, NODE_ATTRS};
use flowrt::grid::Uniform;
use flowrt::ir::{BinaryOp, Dim, ModelBuilder as G, ModelDesc, Op, Role};
use flowrt::solver::Method;
use flowrt::{Error, Model};

const D: usize = 3;
const N: usize = 4;
const C: usize = 2;

fn table() -> Vec<f32> {
    (0..N * D).map(|i| (i as f32 * 0.37).sin()).collect()
}
fn w() -> Vec<f32> {
    (0..C * D).map(|i| (i as f32 * 0.71).cos()).collect()
}

/// `v = x * t + Gather(table[4, 3], label) + Dense(cond, W[2, 3]) * guidance[B, 1]`.
fn full_model(guidance_shape: &[Dim]) -> ModelDesc {
    let mut m = G::default();
    let x = m.input(&[B, f(3)], Role::X);
    let t = m.input(&[B, f(1)], Role::T);
    let y = m.input(&[B], Role::Label);
    let c = m.input(&[B, f(2)], Role::Cond);
    let g = m.input(guidance_shape, Role::Guidance);
    let tab = m.constant(&[f(4), f(3)], table());
    let wc = m.constant(&[f(2), f(3)], w());
    let xt = m.node(Op::Binary(BinaryOp::Mul), &[x, t], &[B, f(3)]);
    let emb = m.node(Op::Gather, &[tab, y], &[B, f(3)]);
    let proj = m.node(Op::Dense, &[c, wc], &[B, f(3)]);
    let g_shape: Vec<Dim> = if guidance_shape.contains(&B) {
        vec![B, f(1)]
    } else {
        vec![f(1), f(1)]
    };
    let g2 = m.node(Op::Reshape, &[g], &g_shape);
    let pg = m.node(Op::Binary(BinaryOp::Mul), &[proj, g2], &[B, f(3)]);
    let s = m.node(Op::Binary(BinaryOp::Add), &[xt, emb], &[B, f(3)]);
    let o = m.node(Op::Binary(BinaryOp::Add), &[s, pg], &[B, f(3)]);
    m.finish(o)
}

/// The same computation, naively (same operation order, each multiply-add of the product
/// fused as in flowrt's matrix products, so results are bit-identical).
fn reference(t: f32, x: &[f32], label: &[i64], cond: &[f32], guidance: &[f32]) -> Vec<f32> {
    let (tab, wc) = (table(), w());
    let mut v = vec![0.0; x.len()];
    for r in 0..x.len() / D {
        for j in 0..D {
            let mut p = 0.0f32;
            for k in 0..C {
                p = libm::fmaf(cond[r * C + k], wc[k * D + j], p);
            }
            let emb = tab[label[r] as usize * D + j];
            v[r * D + j] = (x[r * D + j] * t + emb) + p * guidance[r];
        }
    }
    v
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

struct Inputs {
    x: Vec<f32>,
    label: Vec<i64>,
    cond: Vec<f32>,
    guidance: Vec<f32>,
}

impl Inputs {
    /// All three conditioning inputs.
    fn conditioning(&self) -> Conditioning<'_> {
        Conditioning {
            label: Some(&self.label),
            cond: Some(&self.cond),
            guidance: Some(&self.guidance),
            step: None,
        }
    }
}

fn inputs(rows: usize) -> Inputs {
    Inputs {
        x: (0..rows * D)
            .map(|i| (i as f32 * 0.3).sin() * 2.0)
            .collect(),
        label: (0..rows).map(|r| ((r * 3 + 1) % N) as i64).collect(),
        cond: (0..rows * C).map(|i| (i as f32 * 0.9).cos()).collect(),
        guidance: (0..rows).map(|r| 1.0 + r as f32 * 0.5).collect(),
    }
}

#[test]
fn accessors_and_arena() {
    let bytes = load(&full_model(&[B]));
    let m = Model::from_bytes(&bytes).unwrap();
    assert_eq!(m.input_count(), 5);
    assert_eq!(m.label_classes(), Some(N));
    assert_eq!(m.cond_dim(), Some(C));
    for (role, pos) in [
        (InputRole::X, 0),
        (InputRole::T, 1),
        (InputRole::Label, 2),
        (InputRole::Cond, 3),
        (InputRole::Guidance, 4),
    ] {
        assert_eq!(m.input_by_role(role).unwrap().index, pos, "{}", role.name());
    }
    assert_eq!(m.input_by_role(InputRole::Xt), None);
    let ops: Vec<&str> = m.nodes().map(|n| n.op_name()).collect();
    assert!(ops.contains(&"Gather"), "{ops:?}");
    // Scratch: t, label and guidance, one f32 per row each, rounded to 16 bytes.
    for batch in [1usize, 4, 5, 100] {
        let one = (batch * 4).div_ceil(16) * 16;
        assert_eq!(m.scratch_bytes(batch).unwrap(), 3 * one, "batch {batch}");
        assert_eq!(
            m.required_arena_bytes(batch).unwrap(),
            m.graph_arena_bytes(batch).unwrap() + 3 * one
        );
    }
    // A model without conditioning has none of it.
    let mut g = G::default();
    let x = g.input(&[B, f(2)], Role::X);
    let t = g.input(&[], Role::T);
    let o = g.node(Op::Binary(BinaryOp::Add), &[x, t], &[B, f(2)]);
    let plain = load(&g.finish(o));
    let p = Model::from_bytes(&plain).unwrap();
    assert_eq!((p.label_classes(), p.cond_dim()), (None, None));
}

#[test]
fn eval_cond_matches_reference_at_every_batch_size() {
    let bytes = load(&full_model(&[B]));
    let m = Model::from_bytes(&bytes).unwrap();
    let cap = 5;
    let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(cap).unwrap());
    let mut field = CpuField::new(&m, cap, &mut arena).unwrap();
    let all = inputs(cap);
    let t = 0.625;
    let want = reference(t, &all.x, &all.label, &all.cond, &all.guidance);
    // Every prefix and every single row, from the one field created for 5 rows.
    for rows in 1..=cap {
        let c = Conditioning {
            label: Some(&all.label[..rows]),
            cond: Some(&all.cond[..rows * C]),
            guidance: Some(&all.guidance[..rows]),
            step: None,
        };
        let mut v = vec![0.0; rows * D];
        field.eval_cond(t, &all.x[..rows * D], &c, &mut v).unwrap();
        assert_eq!(bits(&v), bits(&want[..rows * D]), "rows {rows}");
    }
    for r in 0..cap {
        let c = Conditioning {
            label: Some(&all.label[r..r + 1]),
            cond: Some(&all.cond[r * C..(r + 1) * C]),
            guidance: Some(&all.guidance[r..r + 1]),
            step: None,
        };
        let mut v = vec![0.0; D];
        field
            .eval_cond(t, &all.x[r * D..(r + 1) * D], &c, &mut v)
            .unwrap();
        assert_eq!(bits(&v), bits(&want[r * D..(r + 1) * D]), "row {r}");
    }
    // exec::run gets the label as f32 values and agrees.
    let labels: Vec<f32> = all.label.iter().map(|l| *l as f32).collect();
    let tt = vec![t; cap];
    let mut out = vec![0.0; cap * D];
    let mut g = AlignedBytes::zeroed(m.graph_arena_bytes(cap).unwrap());
    exec::run(
        &m,
        cap,
        &[&all.x, &tt, &labels, &all.cond, &all.guidance],
        &mut out,
        &mut g,
    )
    .unwrap();
    assert_eq!(bits(&out), bits(&want));
}

#[test]
fn eval_cond_errors() {
    let bytes = load(&full_model(&[B]));
    let m = Model::from_bytes(&bytes).unwrap();
    let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(4).unwrap());
    let mut field = CpuField::new(&m, 4, &mut arena).unwrap();
    let i = inputs(4);
    let good = i.conditioning();
    let mut v = vec![0.0; 4 * D];
    field.eval_cond(0.5, &i.x, &good, &mut v).unwrap();
    let mut run = |c: Conditioning<'_>, x: &[f32]| {
        let mut v = vec![0.0; x.len()];
        field.eval_cond(0.5, x, &c, &mut v)
    };
    // Missing roles.
    let e = run(
        Conditioning {
            label: None,
            ..good
        },
        &i.x,
    );
    assert_eq!(
        e,
        Err(Error::BadArgument {
            what: "model needs a label input"
        })
    );
    let e = run(Conditioning { cond: None, ..good }, &i.x);
    assert!(
        matches!(e, Err(Error::BadArgument { what }) if what.contains("cond")),
        "{e:?}"
    );
    let e = run(
        Conditioning {
            guidance: None,
            ..good
        },
        &i.x,
    );
    assert!(matches!(e, Err(Error::BadArgument { what }) if what.contains("guidance")));
    // Labels out of range: N, negative, huge.
    for bad in [N as i64, -1, i64::MAX, i64::MIN, 1 << 40] {
        let mut l = i.label.clone();
        l[2] = bad;
        let e = run(
            Conditioning {
                label: Some(&l),
                ..good
            },
            &i.x,
        );
        assert!(
            matches!(e, Err(Error::BadArgument { what }) if what.contains("label out of range")),
            "label {bad}: {e:?}"
        );
    }
    // Wrong lengths; conditioning sized for 4 rows with 3 rows of x; more rows than the field
    // was made for, a partial row, no rows.
    let big = inputs(5);
    for (what, c, x) in [
        (
            "3 labels",
            Conditioning {
                label: Some(&i.label[..3]),
                ..good
            },
            &i.x[..],
        ),
        (
            "7 conds",
            Conditioning {
                cond: Some(&i.cond[..7]),
                ..good
            },
            &i.x,
        ),
        (
            "1 guidance",
            Conditioning {
                guidance: Some(&i.guidance[..1]),
                ..good
            },
            &i.x,
        ),
        ("3 rows of x", good, &i.x[..3 * D]),
        ("5 rows", big.conditioning(), &big.x),
        ("a partial row", good, &i.x[..D + 1]),
        ("no rows", good, &[]),
    ] {
        let e = run(c, x);
        assert!(
            matches!(e, Err(Error::ShapeMismatch { .. })),
            "{what}: {e:?}"
        );
    }
    // Non-finite cond / guidance.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut c = i.cond.clone();
        c[5] = bad;
        let mut g = i.guidance.clone();
        g[0] = bad;
        for (what, with_bad) in [
            (
                "cond",
                Conditioning {
                    cond: Some(&c),
                    ..good
                },
            ),
            (
                "guidance",
                Conditioning {
                    guidance: Some(&g),
                    ..good
                },
            ),
        ] {
            assert_eq!(run(with_bad, &i.x), Err(Error::NonFiniteInput { what }));
        }
    }
    // The field still works after all those errors.
    field.eval_cond(0.5, &i.x, &good, &mut v).unwrap();
    assert_eq!(
        bits(&v),
        bits(&reference(0.5, &i.x, &i.label, &i.cond, &i.guidance))
    );
    // eval_into on a conditioned model is the "missing label" error.
    let e = field.eval_into(0.5, &i.x, &mut v);
    assert!(matches!(e, Err(Error::BadArgument { .. })), "{e:?}");
}

#[test]
fn extra_conditioning_is_an_error() {
    let mut g = G::default();
    let x = g.input(&[B, f(2)], Role::X);
    let t = g.input(&[B], Role::T);
    let t2 = g.node(Op::Reshape, &[t], &[B, f(1)]);
    let o = g.node(Op::Binary(BinaryOp::Mul), &[x, t2], &[B, f(2)]);
    let bytes = load(&g.finish(o));
    let m = Model::from_bytes(&bytes).unwrap();
    let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(3).unwrap());
    let mut field = CpuField::new(&m, 3, &mut arena).unwrap();
    let x = [1.0, 2.0, 3.0, 4.0];
    let mut v = [0.0; 4];
    // Fewer rows than the capacity through eval_into.
    field.eval_into(0.5, &x, &mut v).unwrap();
    assert_eq!(v, [0.5, 1.0, 1.5, 2.0]);
    for c in [
        Conditioning {
            label: Some(&[0, 1]),
            ..Default::default()
        },
        Conditioning {
            cond: Some(&[0.0; 2]),
            ..Default::default()
        },
        Conditioning {
            guidance: Some(&[1.0, 1.0]),
            ..Default::default()
        },
    ] {
        let e = field.eval_cond(0.5, &x, &c, &mut v);
        assert!(matches!(e, Err(Error::BadArgument { .. })), "{c:?}: {e:?}");
    }
}

#[test]
fn scalar_guidance_needs_one_value() {
    let bytes = load(&full_model(&[]));
    let m = Model::from_bytes(&bytes).unwrap();
    assert_eq!(m.scratch_bytes(4).unwrap(), 16 + 16 + 16);
    let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(4).unwrap());
    let mut field = CpuField::new(&m, 4, &mut arena).unwrap();
    let i = inputs(4);
    let same = [2.5f32; 4];
    let c = Conditioning {
        label: Some(&i.label),
        cond: Some(&i.cond),
        guidance: Some(&same),
        step: None,
    };
    let mut v = vec![0.0; 4 * D];
    field.eval_cond(0.25, &i.x, &c, &mut v).unwrap();
    assert_eq!(
        bits(&v),
        bits(&reference(0.25, &i.x, &i.label, &i.cond, &same))
    );
    let e = field.eval_cond(
        0.25,
        &i.x,
        &Conditioning {
            guidance: Some(&i.guidance),
            ..c
        },
        &mut v,
    );
    assert!(matches!(e, Err(Error::BadArgument { .. })), "{e:?}");
}

#[test]
fn sample_cond_integrates_with_fixed_conditioning() {
    let bytes = load(&full_model(&[B]));
    let m = Model::from_bytes(&bytes).unwrap();
    let rows = 4;
    let i = inputs(rows);
    let c = i.conditioning();
    let need = flowrt::sampler::sample_arena_bytes(&m, Method::Euler, rows).unwrap();
    let mut arena = AlignedBytes::zeroed(need);
    // Two Euler steps by hand: x1 = x0 + 0.5 v(0, x0); x2 = x1 + 0.5 v(0.5, x1).
    let v0 = reference(0.0, &i.x, &i.label, &i.cond, &i.guidance);
    let x1: Vec<f32> = i.x.iter().zip(&v0).map(|(x, v)| x + 0.5 * v).collect();
    let v1 = reference(0.5, &x1, &i.label, &i.cond, &i.guidance);
    let want: Vec<f32> = x1.iter().zip(&v1).map(|(x, v)| x + 0.5 * v).collect();
    let grid = Uniform::new(2, 0.0, 1.0).unwrap();
    let mut x = i.x.clone();
    flowrt::sampler::sample_cond(&m, Method::Euler, &grid, &mut x, &c, &mut arena).unwrap();
    assert_eq!(bits(&x), bits(&want));
    // Without conditioning: the typed "needs a label" error, not a panic or garbage.
    let mut x = i.x.clone();
    let e = flowrt::sampler::sample(&m, Method::Euler, &grid, &mut x, &mut arena);
    assert_eq!(
        e,
        Err(Error::BadArgument {
            what: "model needs a label input"
        })
    );
    // A label out of range anywhere stops the integration with an error.
    let mut bad = i.label.clone();
    bad[3] = N as i64;
    let mut x = i.x.clone();
    let e = flowrt::sampler::sample_cond(
        &m,
        Method::Rk4,
        &grid,
        &mut x,
        &Conditioning {
            label: Some(&bad),
            ..c
        },
        &mut AlignedBytes::zeroed(
            flowrt::sampler::sample_arena_bytes(&m, Method::Rk4, rows).unwrap(),
        ),
    );
    assert!(matches!(e, Err(Error::BadArgument { .. })), "{e:?}");
}

#[test]
fn gather_with_run_time_indices_rejects_non_integers() {
    // idx = x[:, 0] reshaped to [B]: any f32 reaches Gather; only exact 0..N pass.
    let mut g = G::default();
    let x = g.input(&[B, f(1)], Role::X);
    let _t = g.input(&[], Role::T);
    let tab = g.constant(&[f(3), f(1)], vec![10.0, 20.0, 30.0]);
    let idx = g.node(Op::Reshape, &[x], &[B]);
    let o = g.node(Op::Gather, &[tab, idx], &[B, f(1)]);
    let bytes = load(&g.finish(o));
    let m = Model::from_bytes(&bytes).unwrap();
    // The index is not the label input: no label classes.
    assert_eq!(m.label_classes(), None);
    let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(3).unwrap());
    let mut field = CpuField::new(&m, 3, &mut arena).unwrap();
    let mut v = [0.0; 3];
    field.eval_into(0.0, &[2.0, 0.0, 1.0], &mut v).unwrap();
    assert_eq!(v, [30.0, 10.0, 20.0]);
    for bad in [0.5, 3.0, -1.0, f32::NAN, f32::INFINITY] {
        let e = field.eval_into(0.0, &[1.0, bad, 0.0], &mut v);
        assert_eq!(e, Err(flowrt::ops::GATHER_INDEX_ERR), "index {bad}");
    }
}

#[test]
fn gather_with_constant_indices_and_label_through_reshape() {
    // label [B, 1] -> Reshape [B] -> Gather(table [5, 2]) + Gather(runtime table, const idx).
    let mut g = G::default();
    let x = g.input(&[B, f(2)], Role::X);
    let t = g.input(&[], Role::T);
    let y = g.input(&[B, f(1)], Role::Label);
    let tab = g.constant(&[f(5), f(2)], (0..10).map(|i| i as f32).collect());
    let y1 = g.node(Op::Reshape, &[y], &[B]);
    let emb = g.node(Op::Gather, &[tab, y1], &[B, f(2)]);
    // runtime table [2, 2] = table2 * t; const idx [1] = [1] -> [1, 2] broadcast to rows.
    let tab2 = g.constant(&[f(2), f(2)], vec![1.0, 2.0, 3.0, 4.0]);
    let rt = g.node(Op::Binary(BinaryOp::Mul), &[tab2, t], &[f(2), f(2)]);
    let ci = g.constant(&[f(1)], vec![1.0]);
    let picked = g.node(Op::Gather, &[rt, ci], &[f(1), f(2)]);
    let s = g.node(Op::Binary(BinaryOp::Add), &[emb, picked], &[B, f(2)]);
    let o = g.node(Op::Binary(BinaryOp::Add), &[s, x], &[B, f(2)]);
    let bytes = load(&g.finish(o));
    let m = Model::from_bytes(&bytes).unwrap();
    assert_eq!(m.label_classes(), Some(5));
    let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(2).unwrap());
    let mut field = CpuField::new(&m, 2, &mut arena).unwrap();
    let mut v = [0.0; 4];
    let c = Conditioning {
        label: Some(&[4, 0]),
        ..Default::default()
    };
    field.eval_cond(0.5, &[0.0; 4], &c, &mut v).unwrap();
    assert_eq!(v, [8.0 + 1.5, 9.0 + 2.0, 0.0 + 1.5, 1.0 + 2.0]);
    let e = field.eval_cond(
        0.5,
        &[0.0; 4],
        &Conditioning {
            label: Some(&[5, 0]),
            ..Default::default()
        },
        &mut v,
    );
    assert!(matches!(e, Err(Error::BadArgument { .. })), "{e:?}");
}

#[test]
fn writer_rejects_bad_conditioning_signatures_and_gathers() {
    let write = |build: &dyn Fn(&mut G) -> u32| {
        let mut g = G::default();
        let o = build(&mut g);
        flowrt::write::write(&g.finish(o))
    };
    let base = |g: &mut G| -> (u32, u32) {
        let x = g.input(&[B, f(2)], Role::X);
        let t = g.input(&[], Role::T);
        (x, t)
    };
    let add = |g: &mut G, a: u32, b: u32| g.node(Op::Binary(BinaryOp::Add), &[a, b], &[B, f(2)]);
    // Two label inputs.
    let e = write(&|g| {
        let (x, _) = base(g);
        let _ = g.input(&[B], Role::Label);
        let _ = g.input(&[B], Role::Label);
        add(g, x, x)
    });
    assert!(matches!(e, Err(Error::Invalid { .. })), "{e:?}");
    // Label, cond and guidance of the wrong shapes.
    for (shape, role) in [
        (vec![B, f(2)], Role::Label),
        (vec![f(1)], Role::Label),
        (vec![], Role::Label),
        (vec![f(2), B], Role::Label),
        (vec![B], Role::Cond),
        (vec![B, f(2), f(2)], Role::Cond),
        (vec![f(2), f(2)], Role::Cond),
        (vec![B, f(2)], Role::Guidance),
        (vec![f(2)], Role::Guidance),
    ] {
        let e = write(&|g| {
            let (x, _) = base(g);
            let _ = g.input(&shape, role);
            add(g, x, x)
        });
        assert!(
            matches!(e, Err(Error::InvalidTensor { .. })),
            "{role:?} {shape:?}: {e:?}"
        );
    }
    // x and xt together (with every other role) is still refused.
    let e = write(&|g| {
        let (x, _) = base(g);
        let _ = g.input(&[B, f(3)], Role::Xt);
        let _ = g.input(&[B], Role::Label);
        let _ = g.input(&[B, f(2)], Role::Cond);
        let _ = g.input(&[B], Role::Guidance);
        add(g, x, x)
    });
    assert!(matches!(e, Err(Error::Invalid { .. })), "{e:?}");
    // Gather: table with a batch dim, wrong output shape, wrong arity.
    let e = write(&|g| {
        let (x, _) = base(g);
        let i = g.constant(&[f(1)], vec![0.0]);
        let _ = g.node(Op::Gather, &[x, i], &[f(1), f(2)]);
        add(g, x, x)
    });
    assert!(matches!(e, Err(Error::InvalidNode { .. })), "{e:?}");
    // The label gathered from a [3, 2] table: as [B, 3] (2 inputs), as [B, 2] with 3 inputs.
    for (arity, out) in [(2, 3), (3, 2)] {
        let e = write(&|g| {
            let (x, _) = base(g);
            let y = g.input(&[B], Role::Label);
            let tab = g.constant(&[f(3), f(2)], vec![0.0; 6]);
            let emb = g.node(Op::Gather, &[tab, y, y][..arity], &[B, f(out)]);
            add(g, x, emb)
        });
        assert!(
            matches!(e, Err(Error::InvalidNode { .. })),
            "{arity} inputs to [B, {out}]: {e:?}"
        );
    }
}

#[test]
fn gather_op_code_round_trips_and_rejects_other_axes() {
    let (code, attrs) = format::NodeOp::Gather.encode();
    assert_eq!(code, opcode::GATHER);
    assert_eq!(code, 0x0030);
    assert_eq!(attrs, [0; NODE_ATTRS]);
    assert_eq!(
        format::NodeOp::decode(code, attrs),
        Ok(format::NodeOp::Gather)
    );
    let mut a = [0u32; NODE_ATTRS];
    a[0] = 1; // axis 1 is not defined
    assert!(format::NodeOp::decode(code, a).is_err());
    for role in InputRole::ALL {
        assert_eq!(InputRole::from_code(role.code()), Some(role));
    }
    assert_eq!(InputRole::from_code(7), Some(InputRole::Data));
    assert_eq!(InputRole::from_code(8), None);
    assert_eq!(
        [
            InputRole::Label.code(),
            InputRole::Cond.code(),
            InputRole::Guidance.code()
        ],
        [3, 4, 5]
    );
}
