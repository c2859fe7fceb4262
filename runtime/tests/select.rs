//! Compile-time selection (`flowrt::select`): a selection made for a model samples it exactly
//! as the default (`All`) does; one that leaves out an op, a weight type or the method
//! returns `Error::NotLinked` naming it.

mod common;

use common::{f, load, B};
use flowrt::format::AlignedBytes;
use flowrt::grid::Uniform;
use flowrt::ir::{BinaryOp, ModelBuilder as G, ModelDesc, Op, Role, UnaryOp};
use flowrt::sampler::{sample, sample_arena_bytes, sample_with};
use flowrt::select::{node, Needs, Selection};
use flowrt::solver::Method;
use flowrt::{Error, Model};

/// v(x, t) = Dense(Silu(Dense(x)) + t).
fn mlp() -> ModelDesc {
    let mut m = G::default();
    let x = m.input(&[B, f(2)], Role::X);
    let t = m.input(&[B, f(1)], Role::T);
    let w1 = m.constant(
        &[f(2), f(4)],
        (0..8).map(|i| i as f32 * 0.25 - 1.0).collect(),
    );
    let w2 = m.constant(
        &[f(4), f(2)],
        (0..8).map(|i| 0.5 - i as f32 * 0.125).collect(),
    );
    let h = m.node(Op::Dense, &[x, w1], &[B, f(4)]);
    let h = m.node(Op::Unary(UnaryOp::Silu), &[h], &[B, f(4)]);
    let h = m.node(Op::Binary(BinaryOp::Add), &[h, t], &[B, f(4)]);
    let o = m.node(Op::Dense, &[h, w2], &[B, f(2)]);
    m.finish(o)
}

/// What [`mlp`] needs with euler.
struct ForMlp;
impl Selection for ForMlp {
    const NODES: u32 = node::DENSE | node::UNARY | node::BINARY;
    const UNARY: u32 = 1 << 7; // Silu
    const BINARY: u32 = 1 << 0; // Add
    const WEIGHTS: u32 = 0;
    const METHODS: u32 = 1; // euler
    const FEW_STEP: bool = false;
    const GUIDANCE: bool = false;
}

/// [`ForMlp`] without Silu.
struct NoSilu;
impl Selection for NoSilu {
    const NODES: u32 = ForMlp::NODES;
    const UNARY: u32 = 1 << 4; // Sigmoid only
    const BINARY: u32 = ForMlp::BINARY;
    const WEIGHTS: u32 = 0;
    const METHODS: u32 = ForMlp::METHODS;
    const FEW_STEP: bool = false;
    const GUIDANCE: bool = false;
}

fn run<F>(method: Method, f: F) -> (Result<(), Error>, Vec<f32>)
where
    F: FnOnce(&Model<'_>, &Uniform, &mut [f32], &mut [u8]) -> Result<(), Error>,
{
    let bytes = load(&mlp());
    let model = Model::from_bytes(&bytes).unwrap();
    let mut x: Vec<f32> = (0..6).map(|i| i as f32 * 0.3 - 0.8).collect();
    let mut arena = AlignedBytes::zeroed(sample_arena_bytes(&model, method, 3).unwrap());
    let grid = Uniform::unit(3).unwrap();
    let r = f(&model, &grid, &mut x, arena.as_mut_slice());
    (r, x)
}

#[test]
fn needs_of_a_model_is_its_selection() {
    let bytes = load(&mlp());
    let model = Model::from_bytes(&bytes).unwrap();
    let needs = Needs::of(&model, &[Method::Euler]).unwrap();
    assert_eq!(needs.nodes, ForMlp::NODES);
    assert_eq!(needs.unary, ForMlp::UNARY);
    assert_eq!(needs.binary, ForMlp::BINARY);
    assert_eq!((needs.weights, needs.methods), (0, 1));
    assert!(!needs.few_step && !needs.guidance);
    assert_eq!(needs.check::<ForMlp>(), Ok(()));
    assert_eq!(
        needs.check::<NoSilu>(),
        Err(Error::NotLinked { what: "Silu" })
    );
    let src = needs.to_rust("Selected");
    assert!(
        src.contains("impl flowrt::select::Selection for Selected"),
        "{src}"
    );
    assert!(src.contains("const UNARY: u32 = 0x80;"), "{src}");
    assert!(src.contains("Silu"), "{src}");
}

#[test]
fn a_selection_for_the_model_samples_as_all_does() {
    let (all, x_all) = run(Method::Euler, |m, g, x, a| {
        sample(m, Method::Euler, g, x, a)
    });
    let (sel, x_sel) = run(Method::Euler, |m, g, x, a| {
        sample_with::<ForMlp>(m, Method::Euler, g, x, a)
    });
    all.unwrap();
    sel.unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&x_all), bits(&x_sel));
}

#[test]
fn what_is_not_linked_is_an_error_naming_it() {
    let (r, _) = run(Method::Euler, |m, g, x, a| {
        sample_with::<NoSilu>(m, Method::Euler, g, x, a)
    });
    let e = r.unwrap_err();
    assert_eq!(e, Error::NotLinked { what: "Silu" });
    assert!(e.to_string().starts_with("Silu is not linked"), "{e}");

    let (r, _) = run(Method::Rk4, |m, g, x, a| {
        sample_with::<ForMlp>(m, Method::Rk4, g, x, a)
    });
    assert_eq!(r, Err(Error::NotLinked { what: "rk4" }));
    let (r, _) = run(Method::Dopri5, |m, g, x, a| {
        sample_with::<ForMlp>(m, Method::Dopri5, g, x, a)
    });
    assert_eq!(r, Err(Error::NotLinked { what: "dopri5" }));
}
