//! Typed weights (f16, bf16, int8 with per-channel scales): a graph whose weights are stored
//! in a smaller type computes, bit for bit, what the same graph computes with the
//! dequantized values stored as f32 — through the writer, the loader and every kernel that
//! reads weights (Dense with a tile tail, Conv, ConvTranspose, Gather) — and the files are
//! versioned and checked.

mod common;

use common::{f, load, load_with, patched, section_range, Lcg};
use flowrt::format::{self, AlignedBytes, ScaleType, WeightType};
use flowrt::ir::{ModelBuilder, ModelDesc, Op, Role, UnaryOp, Window};
use flowrt::write::Layout;
use flowrt::{Error, Model};

/// The weight types besides f32, with the int8 axis filled in per weight by [`mark`].
const TYPES: [WeightType; 4] = [
    WeightType::F16,
    WeightType::Bf16,
    WeightType::Int8 {
        axis: 0,
        scales: ScaleType::F32,
    },
    WeightType::Int8 {
        axis: 0,
        scales: ScaleType::Bf16,
    },
];

/// The weight tensors of [`graph`] with their int8 channel axes, and its biases.
struct Constants {
    weights: Vec<(u32, u8)>,
    biases: Vec<u32>,
}

/// A plain graph over `data` inputs `[9, 5]` (rows: two blocks of 4 and one single row),
/// `[2, 3, 5, 6]` (images) and `[3, 2]` (gather indices): Dense 5 -> 37 (a tile tail) with
/// bias, SiLU, Dense 37 -> 5; Conv 3 -> 4 (3x3, pad 1) with bias, then ConvTranspose 4 -> 2
/// (2x2, stride 2) with bias; Gather from a 10 x 6 table. The flattened results go through
/// one more Dense into the output `[1, 5]`. Returns the description and its constants.
fn graph(g: &mut Lcg) -> (ModelDesc, Constants) {
    let mut b = ModelBuilder::default();
    let x = b.input(&[f(9), f(5)], Role::Data);
    let img = b.input(&[f(2), f(3), f(5), f(6)], Role::Data);
    let idx = b.input(&[f(3), f(2)], Role::Data);
    let long = b.input(&[f(1), f(8200)], Role::Data);
    let mut weights = Vec::new();
    let mut weight = |b: &mut ModelBuilder, shape: &[u32], axis: u8| {
        let dims: Vec<_> = shape.iter().map(|n| f(*n)).collect();
        let n = shape.iter().product::<u32>() as usize;
        let t = b.constant(&dims, g.vec(n));
        weights.push((t, axis));
        t
    };
    // MLP.
    let w1 = weight(&mut b, &[5, 37], 1);
    let b1 = b.constant(
        &[f(37)],
        (0..37).map(|i| 0.37 * (i as f32 * 1.7).sin()).collect(),
    );
    let h = b.node(Op::Dense, &[x, w1, b1], &[f(9), f(37)]);
    let h = b.node(Op::Unary(UnaryOp::Silu), &[h], &[f(9), f(37)]);
    let w2 = weight(&mut b, &[37, 5], 1);
    let mlp = b.node(Op::Dense, &[h, w2], &[f(9), f(5)]);
    let mlp = b.node(Op::Reshape, &[mlp], &[f(1), f(45)]);
    // A layer wider than one dequantized strip of columns (64): strips 64, 64, 22.
    let w3 = weight(&mut b, &[5, 150], 1);
    let wide = b.node(Op::Dense, &[x, w3], &[f(9), f(150)]);
    let wide = b.node(Op::Reshape, &[wide], &[f(1), f(1350)]);
    // Conv then ConvTranspose.
    let pad = Window {
        pad_begin: [1, 1],
        pad_end: [1, 1],
        ..Window::UNIT
    };
    let wc = weight(&mut b, &[3, 3, 3, 4], 3);
    let bc = b.constant(&[f(4)], vec![-0.2, 0.0, 0.3, 0.05]);
    let c = b.node(
        Op::Conv {
            groups: 1,
            window: pad,
        },
        &[img, wc, bc],
        &[f(2), f(4), f(5), f(6)],
    );
    let stride2 = Window {
        stride: [2, 2],
        ..Window::UNIT
    };
    let wt = weight(&mut b, &[2, 4, 2, 2], 0);
    let bt = b.constant(&[f(2)], vec![0.7, -1.3]);
    let ct = b.node(
        Op::ConvTranspose {
            groups: 1,
            window: stride2,
            out_pad: [0, 0],
        },
        &[c, wt, bt],
        &[f(2), f(2), f(10), f(12)],
    );
    let ct = b.node(Op::Reshape, &[ct], &[f(1), f(480)]);
    // Gather.
    let table = weight(&mut b, &[10, 6], 0);
    let gathered = b.node(Op::Gather, &[table, idx], &[f(3), f(2), f(6)]);
    let gathered = b.node(Op::Reshape, &[gathered], &[f(1), f(36)]);
    // Everything into one [B, 5] output.
    // More inputs than the dequantized panel holds on a host (8192): one column at a time,
    // in two ranges of the inputs.
    let wl = weight(&mut b, &[8200, 3], 1);
    let long = b.node(Op::Dense, &[long, wl], &[f(1), f(3)]);
    // Five inputs (the loader once took every 4-input node for a full-integer Dense or
    // Conv and refused a Concat of four). The last Dense reads 1914 values a row: strips
    // of 4 columns.
    let all = b.node(
        Op::Concat { axis: 1 },
        &[mlp, wide, ct, gathered, long],
        &[f(1), f(45 + 1350 + 480 + 36 + 3)],
    );
    let wo = weight(&mut b, &[1914, 5], 1);
    let out = b.node(Op::Dense, &[all, wo], &[f(1), f(5)]);
    let biases = vec![b1, bc, bt];
    (b.finish(out), Constants { weights, biases })
}

/// `desc` with its weights stored as `ty` (int8 along each weight's output-channel axis)
/// and its biases as the exporter stores them: bf16 with bf16 weights, int8 with one 8-bit
/// scale each with 8-bit-scaled int8 weights (version 3), else f16.
fn mark(desc: &ModelDesc, c: &Constants, ty: WeightType) -> ModelDesc {
    let mut d = desc.clone();
    for (t, axis) in &c.weights {
        d.tensors[*t as usize].stored = match ty {
            WeightType::Int8 { scales, .. } => WeightType::Int8 {
                axis: *axis,
                scales,
            },
            other => other,
        };
    }
    for t in &c.biases {
        d.tensors[*t as usize].stored = match ty {
            WeightType::Bf16 => WeightType::Bf16,
            WeightType::Int8 {
                scales: ScaleType::Mini,
                ..
            } => WeightType::Int8 {
                axis: 1, // the rank: one scale for the whole bias
                scales: ScaleType::Mini,
            },
            _ => WeightType::F16,
        };
    }
    d
}

/// `desc` with every constant replaced by the values `file` stores for it (dequantized),
/// stored as f32.
fn dequantized(desc: &ModelDesc, file: &Model<'_>) -> ModelDesc {
    let mut d = desc.clone();
    for (i, t) in d.tensors.iter_mut().enumerate() {
        if t.data.is_some() {
            t.data = Some(file.const_weights(i as u32).unwrap().dequantize());
            t.stored = WeightType::F32;
        }
    }
    d
}

/// Runs the plain graph on inputs drawn from `g`.
fn run(model: &Model<'_>, g: &mut Lcg) -> Vec<f32> {
    let x = g.vec(9 * 5);
    let img = g.vec(2 * 3 * 5 * 6);
    let idx: Vec<f32> = (0..3 * 2).map(|_| g.below(10) as f32).collect();
    let long = g.vec(8200);
    let mut out = vec![0f32; 5];
    let mut arena = AlignedBytes::zeroed(model.graph_arena_bytes(1).unwrap());
    let inputs = [&x[..], &img, &idx, &long];
    flowrt::exec::run(model, 1, &inputs, &mut out, arena.as_mut_slice()).unwrap();
    out
}

#[test]
fn typed_weights_compute_their_dequantized_values_bit_for_bit() {
    let (desc, consts) = graph(&mut Lcg(7));
    let f32_file = load_with(&desc, Layout::Fixed);
    let f32_model = Model::from_bytes(f32_file.as_slice()).unwrap();
    assert_eq!(f32_model.version(), format::VERSION);
    assert_eq!(
        Model::from_bytes(load(&desc).as_slice()).unwrap().version(),
        format::VERSION_COMPACT
    );
    // Version 3 adds 8-bit scales, and int8 biases with one scale each.
    let mini = WeightType::Int8 {
        axis: 0,
        scales: ScaleType::Mini,
    };
    for (ty, layout) in TYPES
        .into_iter()
        .flat_map(|t| [(t, Layout::Fixed), (t, Layout::Compact)])
        .chain([(mini, Layout::Compact)])
    {
        let typed_file = load_with(&mark(&desc, &consts, ty), layout);
        let typed = Model::from_bytes(typed_file.as_slice()).unwrap();
        let version = match layout {
            Layout::Fixed => format::VERSION_TYPED_WEIGHTS,
            Layout::Compact => format::VERSION_COMPACT,
        };
        assert_eq!(typed.version(), version, "{ty:?}");
        let plain_file = load(&dequantized(&desc, &typed));
        let plain = Model::from_bytes(plain_file.as_slice()).unwrap();
        for seed in 1..5 {
            let got = run(&typed, &mut Lcg(seed));
            let want = run(&plain, &mut Lcg(seed));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{ty:?} inputs {seed}");
            // And close to the f32 model: the quantization error only.
            let exact = run(&f32_model, &mut Lcg(seed));
            let scale = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&exact)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            let tol = match ty {
                WeightType::F16 => 2e-3,
                _ => 3e-2,
            };
            assert!(err <= tol * scale, "{ty:?} inputs {seed}: {err} vs {scale}");
            assert!(err > 0.0, "{ty:?}: quantization changed nothing");
        }
    }
}

#[test]
fn typed_files_are_smaller_and_their_values_are_the_quantized_ones() {
    let (desc, consts) = graph(&mut Lcg(11));
    let f32_len = flowrt::write::write(&desc).unwrap().len();
    for (ty, ratio) in [
        (TYPES[0], 0.6),
        (TYPES[1], 0.6),
        (TYPES[2], 0.45),
        (TYPES[3], 0.45),
    ] {
        let bytes = flowrt::write::write(&mark(&desc, &consts, ty)).unwrap();
        assert!(
            (bytes.len() as f64) < ratio * f32_len as f64,
            "{ty:?}: {} vs {f32_len} bytes",
            bytes.len()
        );
    }
    // int8: one scale per output channel, max |w| / 127 (f32, or rounded up to the next
    // bfloat16: at most 2^-8 larger), and q = round(w / scale).
    for ty in [TYPES[2], TYPES[3]] {
        let file = load(&mark(&desc, &consts, ty));
        let model = Model::from_bytes(file.as_slice()).unwrap();
        let (w1, _) = consts.weights[0];
        let original = desc.tensors[w1 as usize].data.clone().unwrap();
        let deq = model.const_weights(w1).unwrap().dequantize();
        for col in 0..37 {
            let column = |v: &[f32]| (0..5).map(|r| v[r * 37 + col]).collect::<Vec<_>>();
            let amax = column(&original).iter().fold(0f32, |m, v| m.max(v.abs()));
            let exact = amax / 127.0;
            let scale = match ty {
                WeightType::Int8 {
                    scales: ScaleType::Bf16,
                    ..
                } => {
                    let up = (exact.to_bits() + 0xFFFF) & 0xFFFF_0000;
                    f32::from_bits(up)
                }
                _ => exact,
            };
            assert!(
                scale >= exact && scale <= exact * (1.0 + 1.0 / 128.0),
                "{ty:?} {col}"
            );
            for (d, o) in column(&deq).iter().zip(column(&original)) {
                assert_eq!(*d, (o / scale).round() * scale, "{ty:?} column {col}");
            }
        }
        // The biases: f16 values, rounded to nearest.
        let b1 = consts.biases[0];
        let original = desc.tensors[b1 as usize].data.clone().unwrap();
        let stored = model.const_weights(b1).unwrap();
        assert_eq!(stored.type_name(), "f16");
        for (d, o) in stored.dequantize().iter().zip(&original) {
            assert_eq!(*d, half::f16::from_f32(*o).to_f32());
        }
    }
}

/// Scales the exporter chose (`TensorDesc::int8_scales`, GPTQ's) are stored as given and the
/// values quantized against them; scales that do not fit are a write error, not a silent
/// re-derivation.
#[test]
fn given_int8_scales_are_stored_exactly() {
    let (desc, consts) = graph(&mut Lcg(12));
    let ty = TYPES[3];
    let (w1, _) = consts.weights[0];
    let mut d = mark(&desc, &consts, ty);
    // Coarser than max|w| / 127 on purpose (so the writer's own rule would differ): 2^-4 and
    // 3 * 2^-6 are exact bfloat16 values. The weight is [5, 37], axis 1: 37 channels.
    let given: Vec<f32> = (0..37)
        .map(|c| if c % 2 == 0 { 0.0625 } else { 0.046875 })
        .collect();
    d.tensors[w1 as usize].int8_scales = Some(given.clone());
    let original = d.tensors[w1 as usize].data.clone().unwrap();
    let file = load(&d);
    let model = Model::from_bytes(file.as_slice()).unwrap();
    let deq = model.const_weights(w1).unwrap().dequantize();
    for (e, (got, w)) in deq.iter().zip(&original).enumerate() {
        let s = given[e % 37];
        assert_eq!(
            *got,
            (w / s).round().clamp(-127.0, 127.0) * s,
            "element {e}"
        );
    }
    // Wrong count, negative, and (bfloat16 scales) not representable: refused by name.
    for bad in [vec![0.0625f32; 36], vec![-0.0625; 37], vec![0.1; 37]] {
        let mut d = mark(&desc, &consts, ty);
        d.tensors[w1 as usize].int8_scales = Some(bad);
        let err = flowrt::write::write(&d).unwrap_err().to_string();
        assert!(err.contains("given int8 scales"), "{err}");
    }
}

#[test]
fn typed_constants_only_where_a_kernel_reads_weights() {
    let (desc, consts) = graph(&mut Lcg(3));
    // A typed constant as an Add operand: the writer refuses (only weights and biases).
    let mut b = ModelBuilder::default();
    let x = b.input(&[f(2), f(3)], Role::Data);
    let c = b.constant(&[f(3)], vec![0.5, -1.0, 2.0]);
    let y = b.node(
        Op::Binary(flowrt::ir::BinaryOp::Add),
        &[x, c],
        &[f(2), f(3)],
    );
    let mut d = b.finish(y);
    for ty in [TYPES[0], TYPES[3]] {
        d.tensors[c as usize].stored = ty;
        match flowrt::write::write(&d) {
            Err(Error::InvalidNode { node: 0, what }) => {
                assert!(what.contains("cannot read it"), "{what}")
            }
            other => panic!("{other:?}"),
        }
    }
    // One scale for the whole tensor (axis = rank) and 8-bit scales: version 3 only.
    let mut d = desc.clone();
    let bias = d.nodes[0].inputs[2] as usize;
    d.tensors[bias].stored = WeightType::Int8 {
        axis: 1,
        scales: ScaleType::Bf16,
    };
    assert!(flowrt::write::write(&d).is_ok());
    assert!(flowrt::write::write_with(&d, Layout::Fixed).is_err());
    d.tensors[bias].stored = WeightType::Int8 {
        axis: 0,
        scales: ScaleType::Mini,
    };
    assert!(flowrt::write::write(&d).is_ok());
    assert!(flowrt::write::write_with(&d, Layout::Fixed).is_err());
    // A computed tensor cannot be typed.
    let mut d = desc.clone();
    let hidden = d.nodes[0].output as usize;
    d.tensors[hidden].stored = WeightType::Bf16;
    assert!(matches!(
        flowrt::write::write(&d),
        Err(Error::InvalidTensor { what, .. }) if what.contains("only constants")
    ));
    // int8 along an axis the weight does not have (axis 2 of a rank-2 weight is one scale
    // for the whole tensor: version 3 only).
    let mut d = mark(&desc, &consts, TYPES[2]);
    for (axis, compact_ok) in [(2, true), (3, false)] {
        d.tensors[consts.weights[0].0 as usize].stored = WeightType::Int8 {
            axis,
            scales: ScaleType::Bf16,
        };
        assert_eq!(flowrt::write::write(&d).is_ok(), compact_ok, "axis {axis}");
        assert!(flowrt::write::write_with(&d, Layout::Fixed).is_err());
    }

    // In a written file: the loader checks the same rules on the records.
    let bytes = flowrt::write::write_with(&mark(&desc, &consts, TYPES[2]), Layout::Fixed).unwrap();
    let (tensors, _) = section_range(&bytes, format::section::TENSORS).unwrap();
    let record = |t: usize| tensors + 8 + 64 * t;
    // The (f16) bias record patched to f32 or int8 (its data length no longer matches).
    assert!(patched(&bytes, record(bias) + 1, &[format::DTYPE_F32]).is_err());
    assert!(patched(&bytes, record(bias) + 1, &[format::DTYPE_I8_BF16_SCALES]).is_err());
    // An unknown dtype code.
    assert!(matches!(
        patched(&bytes, record(consts.weights[0].0 as usize) + 1, &[9]),
        Err(Error::InvalidTensor { what, .. }) if what.contains("unknown dtype")
    ));
    // An int8 axis beyond the rank.
    assert!(matches!(
        patched(&bytes, record(consts.weights[0].0 as usize) + 36, &[7]),
        Err(Error::InvalidTensor { what, .. }) if what.contains("axis")
    ));
    // A version-1 header on a file with typed weights.
    assert!(matches!(
        patched(&bytes, 4, &format::VERSION.to_le_bytes()),
        Err(Error::InvalidTensor { what, .. }) if what.contains("version-1")
    ));
    // The same rules on version 3's compact records: an unknown dtype code in bits 2-4 of
    // the first byte, an int8 axis (the record's last byte) beyond the rank.
    let compact = flowrt::write::write(&mark(&desc, &consts, TYPES[2])).unwrap();
    let (t, _) = section_range(&compact, format::section::TENSORS).unwrap();
    let count = u32::from_le_bytes(compact[t..t + 4].try_into().unwrap()) as usize;
    let width = usize::from(compact[t + 4]);
    assert!(width == 1 || width == 2, "a small table has a narrow index");
    let records = (t + 8 + width * count + 3) & !3;
    let span = |i: usize| {
        let at = |j: usize| {
            if j == count {
                return compact.len(); // not needed below: the weight is not the last tensor
            }
            let e = t + 8 + width * j;
            let mut v = [0u8; 2];
            v[..width].copy_from_slice(&compact[e..e + width]);
            records + u16::from_le_bytes(v) as usize
        };
        (at(i), at(i + 1))
    };
    let (w_at, w_end) = span(consts.weights[0].0 as usize);
    assert!(matches!(
        patched(&compact, w_at, &[(compact[w_at] & !0x1C) | (7 << 2)]),
        // (the int8 record's axis byte is then one byte too many)
        Err(Error::InvalidTensor { what, .. })
            if what.contains("unknown dtype") || what.contains("trailing bytes")
    ));
    assert!(matches!(
        patched(&compact, w_end - 1, &[7]),
        Err(Error::InvalidTensor { what, .. }) if what.contains("axis")
    ));
    // A NaN scale.
    let model_file = AlignedBytes::copy_from(&bytes);
    let model = Model::from_bytes(model_file.as_slice()).unwrap();
    let w1 = consts.weights[0].0;
    assert_eq!(model.const_weights(w1).unwrap().type_name(), "int8");
    let (wsec, _) = section_range(&bytes, format::section::WEIGHTS).unwrap();
    let off = u64::from_le_bytes(bytes[record(w1 as usize) + 40..][..8].try_into().unwrap());
    let scales_at = wsec + off as usize + (5 * 37usize).div_ceil(4) * 4;
    assert!(matches!(
        patched(&bytes, scales_at, &f32::NAN.to_le_bytes()),
        Err(Error::InvalidTensor { what, .. }) if what.contains("scales")
    ));
}

/// 8-bit scales (version 3): one exponent per tensor, each channel's scale rounded up to at
/// most 1/16 above `max |w| / 127` within sixteen binades of the largest, never below it
/// (so no value clips), and stored exactly.
#[test]
fn eight_bit_scales_round_up_by_at_most_a_sixteenth() {
    let channels = 40;
    let amax: Vec<f32> = (0..channels).map(|c| 3.0 * 0.7f32.powi(c as i32)).collect();
    // Channel c of a [2, 40] tensor (axis 1): its two values are +amax and -amax / 3.
    let data: Vec<f32> = [1.0f32, -1.0 / 3.0]
        .iter()
        .flat_map(|k| amax.iter().map(move |a| a * k))
        .collect();
    let scales = flowrt::write::channel_scales(&data, channels, 1, ScaleType::Mini);
    let largest = amax[0] / 127.0;
    for (c, s) in scales.iter().enumerate() {
        let exact = amax[c] / 127.0;
        assert!(*s >= exact, "channel {c}: {s} < {exact}");
        if exact >= largest / 2f32.powi(15) {
            assert!(
                *s <= exact * (1.0 + 1.0 / 16.0),
                "channel {c}: {s} vs {exact}"
            );
        }
    }
    let q = flowrt::write::quantize_with(&data, 1, &scales);
    assert!(q.iter().all(|v| (-127..=127).contains(v)));
    assert!(
        q.iter().any(|v| v.abs() >= 120),
        "the largest values use the range"
    );
    // Written and read back: the same scales, exactly.
    let mut b = ModelBuilder::default();
    let x = b.input(&[f(3), f(2)], Role::Data);
    let w = b.constant(&[f(2), f(channels as u32)], data.clone());
    let y = b.node(Op::Dense, &[x, w], &[f(3), f(channels as u32)]);
    let mut d = b.finish(y);
    d.tensors[w as usize].stored = WeightType::Int8 {
        axis: 1,
        scales: ScaleType::Mini,
    };
    let file = load(&d);
    let m = Model::from_bytes(file.as_slice()).unwrap();
    match m.const_weights(w).unwrap() {
        flowrt::ops::Weights::Int8(q8) => {
            let read: Vec<f32> = (0..channels).map(|c| q8.scales.get(c).unwrap()).collect();
            assert_eq!(read, scales);
        }
        other => panic!("{other:?}"),
    }
}

/// `Widen` (op 0x0016): an element-wise operand stored in a smaller type and widened into
/// the arena gives, bit for bit, what the same graph gives with the dequantized values as
/// an f32 constant; the loader refuses a `Widen` of a computed tensor.
#[test]
fn widen_feeds_typed_constants_to_elementwise_ops() {
    let values: Vec<f32> = (0..5).map(|i| 0.3 + 1.7 * (i as f32 * 0.9).sin()).collect();
    let x: Vec<f32> = (0..15).map(|i| (i as f32 * 0.37).cos()).collect();
    let run = |d: &ModelDesc| {
        let file = load(d);
        let m = Model::from_bytes(file.as_slice()).unwrap();
        let mut out = vec![0f32; 15];
        let mut arena = AlignedBytes::zeroed(m.graph_arena_bytes(1).unwrap());
        flowrt::exec::run(&m, 1, &[&x], &mut out, arena.as_mut_slice()).unwrap();
        out
    };
    let per_tensor = WeightType::Int8 {
        axis: 1,
        scales: ScaleType::Mini,
    };
    for ty in [WeightType::F16, WeightType::Bf16, per_tensor] {
        let mut b = ModelBuilder::default();
        let xi = b.input(&[f(3), f(5)], Role::Data);
        let c = b.constant(&[f(5)], values.clone());
        let w = b.node(Op::Widen, &[c], &[f(5)]);
        let y = b.node(
            Op::Binary(flowrt::ir::BinaryOp::Mul),
            &[xi, w],
            &[f(3), f(5)],
        );
        let mut d = b.finish(y);
        d.tensors[c as usize].stored = ty;
        let got = run(&d);
        let file = load(&d);
        let m = Model::from_bytes(file.as_slice()).unwrap();
        let mut plain = d.clone();
        plain.tensors[c as usize].data = Some(m.const_weights(c).unwrap().dequantize());
        plain.tensors[c as usize].stored = WeightType::F32;
        let want = run(&plain);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{ty:?}");
        let exact: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v * values[i % 5])
            .collect();
        assert_ne!(bits(&got), bits(&exact), "{ty:?}: rounding changed nothing");
    }
    // A Widen of a computed tensor (the Mul's output) is refused.
    let mut b = ModelBuilder::default();
    let xi = b.input(&[f(3), f(5)], Role::Data);
    let h = b.node(Op::Unary(UnaryOp::Silu), &[xi], &[f(3), f(5)]);
    let y = b.node(Op::Widen, &[h], &[f(3), f(5)]);
    let err = flowrt::write::write(&b.finish(y)).unwrap_err().to_string();
    assert!(err.contains("Widen reads a constant"), "{err}");
}
