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

// ---------------------------------------------------------------------------------------------
// The loader with a selection (`Model::from_bytes_with`): what it links is checked exactly as
// `Model::from_bytes` checks it; what it leaves out is refused with `NotLinked`.

/// [`ForMlp`] with int8 weights and f16 biases (what `export --weights int8` stores).
struct ForMlpInt8;
impl Selection for ForMlpInt8 {
    const NODES: u32 = ForMlp::NODES;
    const UNARY: u32 = ForMlp::UNARY;
    const BINARY: u32 = ForMlp::BINARY;
    const WEIGHTS: u32 = flowrt::select::weight::INT8 | flowrt::select::weight::F16;
    const METHODS: u32 = ForMlp::METHODS;
    const FEW_STEP: bool = false;
    const GUIDANCE: bool = false;
    const PIPELINE: bool = false;
    const ROLES: u32 = 0;
}

/// [`ForMlp`] without Dense.
struct NoDense;
impl Selection for NoDense {
    const NODES: u32 = node::UNARY | node::BINARY;
    const UNARY: u32 = ForMlp::UNARY;
    const BINARY: u32 = ForMlp::BINARY;
    const WEIGHTS: u32 = 0;
    const METHODS: u32 = ForMlp::METHODS;
    const FEW_STEP: bool = false;
    const GUIDANCE: bool = false;
}

/// Nothing but Euler: every node kind, weight type, role and multi-network files left out.
struct Nothing;
impl Selection for Nothing {
    const NODES: u32 = 0;
    const UNARY: u32 = 0;
    const BINARY: u32 = 0;
    const WEIGHTS: u32 = 0;
    const METHODS: u32 = 1;
    const FEW_STEP: bool = false;
    const GUIDANCE: bool = false;
    const PIPELINE: bool = false;
    const ROLES: u32 = 0;
}

/// [`mlp`] with its two weights stored as int8 (along the output channel) and nothing else
/// typed.
fn mlp_int8() -> ModelDesc {
    use flowrt::format::{ScaleType, WeightType};
    let mut d = mlp();
    for t in d
        .tensors
        .iter_mut()
        .filter(|t| t.data.is_some() && t.shape.len() == 2)
    {
        t.stored = WeightType::Int8 {
            axis: 1,
            scales: ScaleType::Bf16,
        };
    }
    d
}

/// `Debug` of a loaded model plus its nodes and constants: equal for equal loads.
fn summary(m: &Model<'_>) -> String {
    let nodes: Vec<_> = m.nodes().map(|n| (n.op, n.output)).collect();
    let consts: Vec<_> = m.constants().map(|w| format!("{w:?}")).collect();
    format!("{m:?} {nodes:?} {consts:?}")
}

#[test]
fn the_loader_refuses_what_a_selection_leaves_out() {
    let bytes = load(&mlp());
    let all = Model::from_bytes(&bytes).unwrap();
    let sel = Model::from_bytes_with::<ForMlp>(&bytes).unwrap();
    assert_eq!(summary(&all), summary(&sel));
    let not = |r: Result<Model<'_>, Error>| r.map(|_| ()).unwrap_err();
    assert_eq!(
        not(Model::from_bytes_with::<NoSilu>(&bytes)),
        Error::NotLinked { what: "Silu" }
    );
    assert_eq!(
        not(Model::from_bytes_with::<NoDense>(&bytes)),
        Error::NotLinked { what: "Dense" }
    );
    // The first node the loader meets is the producer of the first computed tensor.
    assert!(matches!(
        not(Model::from_bytes_with::<Nothing>(&bytes)),
        Error::NotLinked { .. }
    ));

    // Weight types: int8 weights need the int8 bit (and its f16 biases, none here).
    let int8 = load(&mlp_int8());
    assert_eq!(
        not(Model::from_bytes_with::<ForMlp>(&int8)),
        Error::NotLinked {
            what: "int8 weights"
        }
    );
    let a = Model::from_bytes(&int8).unwrap();
    let s = Model::from_bytes_with::<ForMlpInt8>(&int8).unwrap();
    assert_eq!(summary(&a), summary(&s));
    let needs = Needs::of(&a, &[Method::Euler]).unwrap();
    assert_eq!(needs.check::<ForMlpInt8>(), Ok(()));
    assert_eq!(
        needs.check::<ForMlp>(),
        Err(Error::NotLinked {
            what: "a weight type"
        })
    );
}

/// Differential check of the loader: random corruptions (checksum refreshed, so they reach
/// validation) of a plain and an int8 file, loaded with `All` and with the selection made for
/// the file. The selected loader accepts a file only when `All` does (and loads the same
/// model), accepts every file `All` accepts whose needs it links, and fails with `All`'s
/// error unless it refuses with `NotLinked`.
#[test]
fn a_selected_loader_checks_what_it_links_as_strictly_as_all() {
    fn check<S: Selection>(file: &[u8], seed: u64) -> (usize, usize) {
        let mut g = common::Lcg(seed);
        let values = [
            0u32,
            1,
            2,
            3,
            4,
            7,
            8,
            0x100,
            0x200,
            0x207,
            0xFFFF,
            u32::MAX,
        ];
        let (mut loaded, mut refused) = (0, 0);
        for round in 0..6000 {
            let mut v = file.to_vec();
            if round > 0 {
                for _ in 0..1 + g.below(2) {
                    let at = 32 + 4 * g.below((v.len() - 32) / 4);
                    let val = if g.below(2) == 0 {
                        values[g.below(values.len())]
                    } else {
                        g.next_u64() as u32
                    };
                    match g.below(3) {
                        0 => v[at] = val as u8,
                        1 => v[at..at + 2].copy_from_slice(&(val as u16).to_le_bytes()),
                        _ => v[at..at + 4].copy_from_slice(&val.to_le_bytes()),
                    }
                }
                let crc = flowrt::format::file_checksum(&v).to_le_bytes();
                v[16..20].copy_from_slice(&crc);
            }
            let buf = AlignedBytes::copy_from(&v);
            let all = Model::from_bytes(buf.as_slice());
            let sel = Model::from_bytes_with::<S>(buf.as_slice());
            match (&all, &sel) {
                (Ok(a), Ok(s)) => {
                    assert_eq!(summary(a), summary(s), "round {round}");
                    loaded += 1;
                }
                (Ok(a), Err(e)) => {
                    assert!(matches!(e, Error::NotLinked { .. }), "round {round}: {e:?}");
                    let needs = Needs::of(a, &[Method::Euler]).unwrap();
                    assert!(needs.check::<S>().is_err(), "round {round}: {e:?}");
                    refused += 1;
                }
                (Err(_), Ok(_)) => panic!("round {round}: accepted with a selection only"),
                (Err(a), Err(s)) => {
                    if !matches!(s, Error::NotLinked { .. }) {
                        assert_eq!(a, s, "round {round}");
                    }
                }
            }
        }
        (loaded, refused)
    }
    let (loaded, _) = check::<ForMlp>(&load(&mlp()), 7);
    assert!(loaded > 1, "{loaded}");
    let (loaded, _) = check::<ForMlpInt8>(&load(&mlp_int8()), 8);
    assert!(loaded > 1, "{loaded}");
    // Everything selected: the same results as `All`, file by file.
    let (loaded, refused) = check::<flowrt::select::All>(&load(&mlp_int8()), 9);
    assert!(loaded > 1 && refused == 0, "{loaded} {refused}");
}

/// v(x, t, label) = Dense(x) + Gather(table, label): a class-conditional MLP.
fn labelled() -> ModelDesc {
    let mut m = G::default();
    let x = m.input(&[B, f(2)], Role::X);
    let _t = m.input(&[B, f(1)], Role::T);
    let y = m.input(&[B], Role::Label);
    let w = m.constant(&[f(2), f(2)], vec![0.5, -0.25, 0.75, 1.0]);
    let tab = m.constant(&[f(3), f(2)], (0..6).map(|i| i as f32 * 0.1).collect());
    let h = m.node(Op::Dense, &[x, w], &[B, f(2)]);
    let e = m.node(Op::Gather, &[tab, y], &[B, f(2)]);
    let o = m.node(Op::Binary(BinaryOp::Add), &[h, e], &[B, f(2)]);
    m.finish(o)
}

/// What [`labelled`] needs with euler, with or without its label input.
struct ForLabelled<const ROLES: u32>;
impl<const ROLES: u32> Selection for ForLabelled<ROLES> {
    const NODES: u32 = node::DENSE | node::GATHER | node::BINARY;
    const UNARY: u32 = 0;
    const BINARY: u32 = 1; // Add
    const WEIGHTS: u32 = 0;
    const METHODS: u32 = 1;
    const FEW_STEP: bool = false;
    const GUIDANCE: bool = false;
    const PIPELINE: bool = false;
    const ROLES: u32 = ROLES;
}

#[test]
fn conditioning_inputs_are_linked_by_role() {
    use flowrt::field::Conditioning;
    use flowrt::sampler::sample_cond_with;
    use flowrt::select::role;
    let bytes = load(&labelled());
    let model = Model::from_bytes(&bytes).unwrap();
    let needs = Needs::of(&model, &[Method::Euler]).unwrap();
    assert_eq!(needs.roles, role::LABEL);
    assert!(needs.to_rust("S").contains("const ROLES: u32 = 0x1;"));
    assert_eq!(needs.check::<ForLabelled<{ role::LABEL }>>(), Ok(()));
    assert_eq!(
        needs.check::<ForLabelled<0>>(),
        Err(Error::NotLinked {
            what: "a label input"
        })
    );
    let grid = Uniform::unit(2).unwrap();
    let labels = [2i64, 0];
    let cond = Conditioning {
        label: Some(&labels),
        ..Default::default()
    };
    type Sampler<'f> = &'f dyn Fn(&mut [f32], &mut [u8]) -> Result<(), Error>;
    let run = |f: Sampler<'_>| {
        let mut x = vec![0.3, -0.2, 0.9, 0.1];
        let mut arena = AlignedBytes::zeroed(sample_arena_bytes(&model, Method::Euler, 2).unwrap());
        f(&mut x, arena.as_mut_slice()).map(|_| x)
    };
    let all = run(&|x, a| flowrt::sampler::sample_cond(&model, Method::Euler, &grid, x, &cond, a));
    let sel = run(&|x, a| {
        sample_cond_with::<ForLabelled<{ role::LABEL }>>(&model, Method::Euler, &grid, x, &cond, a)
    });
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&all.unwrap()), bits(&sel.unwrap()));
    // Out-of-range labels are still refused with a selection.
    let bad = Conditioning {
        label: Some(&[3, 0]),
        ..Default::default()
    };
    let e = run(&|x, a| {
        sample_cond_with::<ForLabelled<{ role::LABEL }>>(&model, Method::Euler, &grid, x, &bad, a)
    });
    assert!(matches!(e, Err(Error::BadArgument { .. })), "{e:?}");
    // Without the label role linked the model is refused, by name.
    let e =
        run(&|x, a| sample_cond_with::<ForLabelled<0>>(&model, Method::Euler, &grid, x, &cond, a));
    assert_eq!(
        e,
        Err(Error::NotLinked {
            what: "a label input"
        })
    );
}

#[test]
fn multi_network_files_need_the_pipeline_bit() {
    let mut desc = mlp();
    desc.pipeline = vec![(
        flowrt::pipeline::StageKind::Decoder,
        flowrt::write::write(&{
            let mut m = G::default();
            let x = m.input(&[B, f(2)], Role::X);
            let o = m.node(Op::Concat { axis: 1 }, &[x, x], &[B, f(4)]);
            m.finish(o)
        })
        .unwrap(),
    )];
    let bytes = load(&desc);
    let model = Model::from_bytes(&bytes).unwrap();
    assert!(Needs::of(&model, &[Method::Euler]).unwrap().pipeline);
    assert_eq!(
        Model::from_bytes_with::<ForMlpInt8>(&bytes).map(|_| ()),
        Err(Error::NotLinked {
            what: "multi-network files"
        })
    );
    // `ForMlp` leaves `PIPELINE` at its default: linked.
    assert!(Model::from_bytes_with::<ForMlp>(&bytes).is_ok());
}
