//! Full-integer Dense and Conv (4 inputs: `x, w, bias, act_scale`, docs/frt-format.md
//! "Full-integer Dense and Conv") and the table activations (`Lut`) through the writer, the
//! loader and the executor, against the definitions computed here from the stored values;
//! and the loader's rules.
#![allow(clippy::needless_range_loop)] // the references index like the definition

mod common;

use common::{f, load, Lcg};
use flowrt::format::{ScaleType, WeightType};
use flowrt::ir::{ModelBuilder, ModelDesc, Op, Role, UnaryOp, Window};
use flowrt::ops::{Int8Weights, Weights};
use flowrt::{Error, Model};

const INT8: WeightType = WeightType::Int8 {
    axis: 0,
    scales: ScaleType::Bf16,
};

fn q(x: f32, s: f32) -> i64 {
    (x * (1.0 / s)).round().clamp(-127.0, 127.0) as i64
}

fn int8_of<'a>(model: &Model<'a>, t: u32) -> Int8Weights<'a> {
    match model.const_weights(t).unwrap() {
        Weights::Int8(w) => w,
        other => panic!("{}", other.type_name()),
    }
}

fn run(model: &Model<'_>, inputs: &[&[f32]], out_len: usize) -> Result<Vec<f32>, Error> {
    let mut out = vec![0f32; out_len];
    let mut arena = flowrt::format::AlignedBytes::zeroed(model.graph_arena_bytes(1).unwrap());
    flowrt::exec::run(model, 1, inputs, &mut out, arena.as_mut_slice())?;
    Ok(out)
}

/// `x [3, 5]` → Dense 5 → 6 (weight `[6, 5]`), with `act_scale`.
fn dense_graph(g: &mut Lcg, scale: Vec<f32>) -> (ModelDesc, [u32; 3]) {
    let mut b = ModelBuilder::default();
    let x = b.input(&[f(3), f(5)], Role::Data);
    let w = b.constant(&[f(6), f(5)], g.vec(30));
    let bias = b.constant(&[f(6)], g.vec(6));
    let n = scale.len() as u32;
    let s = b.constant(&[f(n)], scale);
    let out = b.node(Op::Dense, &[x, w, bias, s], &[f(3), f(6)]);
    let mut d = b.finish(out);
    d.tensors[w as usize].stored = INT8;
    d.tensors[bias as usize].stored = WeightType::F16;
    (d, [w, bias, s])
}

#[test]
fn full_integer_dense_is_the_integer_sum_of_the_stored_values() {
    let mut g = Lcg(21);
    let s_x = 1.7 / 127.0;
    let (desc, [w, bias, _]) = dense_graph(&mut g, vec![s_x]);
    let file = load(&desc);
    let model = Model::from_bytes(file.as_slice()).unwrap();
    let mut x = g.vec(15);
    x[3] = 9.0; // saturates
    let got = run(&model, &[&x], 18).unwrap();
    let iw = int8_of(&model, w);
    let b = model.const_weights(bias).unwrap().dequantize();
    for r in 0..3 {
        for c in 0..6 {
            let acc: i64 = (0..5)
                .map(|k| q(x[r * 5 + k], s_x) * i64::from(iw.values[c * 5 + k]))
                .sum();
            let want = (acc as f32) * (s_x * iw.scales.get(c).unwrap()) + b[c];
            assert_eq!(got[r * 6 + c].to_bits(), want.to_bits(), "row {r} col {c}");
        }
    }
    // Close to the f32 layer: int8 weights and activations, a few per cent.
    let w32 = &desc.tensors[w as usize].data.clone().unwrap();
    let b32 = &desc.tensors[bias as usize].data.clone().unwrap();
    for r in 0..3 {
        for c in 0..6 {
            let exact: f32 = b32[c]
                + (0..5)
                    .map(|k| x[r * 5 + k].min(1.7) * w32[c * 5 + k])
                    .sum::<f32>();
            assert!(
                (got[r * 6 + c] - exact).abs() < 0.1,
                "{} vs {exact}",
                got[r * 6 + c]
            );
        }
    }
}

/// A build linking the full-integer Dense only (`INTEGER = true`) or the float Dense only.
struct DenseOnly<const INTEGER: bool>;
impl<const INTEGER: bool> flowrt::select::Selection for DenseOnly<INTEGER> {
    const NODES: u32 = if INTEGER {
        flowrt::select::node::DENSE_Q8
    } else {
        flowrt::select::node::DENSE
    };
    const UNARY: u32 = 0;
    const BINARY: u32 = 0;
    const WEIGHTS: u32 = flowrt::select::weight::INT8 | flowrt::select::weight::F16;
    const METHODS: u32 = 1;
    const FEW_STEP: bool = false;
    const GUIDANCE: bool = false;
}

#[test]
fn full_integer_dense_is_linked_apart_from_the_float_dense() {
    use flowrt::select::{node, Needs};
    let (desc, _) = dense_graph(&mut Lcg(3), vec![0.01]);
    let file = load(&desc);
    let model = Model::from_bytes(file.as_slice()).unwrap();
    let needs = Needs::of(&model, &[flowrt::solver::Method::Euler]).unwrap();
    assert_eq!(needs.nodes, node::DENSE_Q8, "{needs:?}");
    assert_eq!(needs.check::<DenseOnly<true>>(), Ok(()));
    let not_linked = |what| Err(Error::NotLinked { what });
    assert_eq!(needs.check::<DenseOnly<false>>(), not_linked("DENSE_Q8"));
    assert!(Model::from_bytes_with::<DenseOnly<true>>(file.as_slice()).is_ok());
    let refused = Model::from_bytes_with::<DenseOnly<false>>(file.as_slice()).map(|_| ());
    assert_eq!(refused, not_linked("full-integer Dense"));
    // And the other way round: a float Dense needs the float kernels.
    let mut float = desc.clone();
    float.nodes[0].inputs.truncate(3);
    let w = desc.nodes[0].inputs[1] as usize;
    float.tensors[w].stored = WeightType::F32;
    float.tensors[w].shape.reverse(); // float Dense: [K, N]
    let file = load(&float);
    let model = Model::from_bytes(file.as_slice()).unwrap();
    let needs = Needs::of(&model, &[flowrt::solver::Method::Euler]).unwrap();
    assert_eq!(needs.nodes, node::DENSE, "{needs:?}");
    let refused = Model::from_bytes_with::<DenseOnly<true>>(file.as_slice()).map(|_| ());
    assert_eq!(refused, not_linked("Dense"));
}

#[test]
fn full_integer_conv_is_the_integer_sum_of_the_stored_values() {
    let mut g = Lcg(5);
    let s_x = 2.0 / 127.0;
    let mut b = ModelBuilder::default();
    let x = b.input(&[f(1), f(2), f(4), f(5)], Role::Data);
    let w = b.constant(&[f(3), f(2), f(3), f(3)], g.vec(54));
    let bias = b.constant(&[f(3)], g.vec(3));
    let s = b.constant(&[f(1)], vec![s_x]);
    let win = Window {
        pad_begin: [1, 1],
        pad_end: [1, 1],
        ..Window::UNIT
    };
    let conv = Op::Conv {
        groups: 1,
        window: win,
    };
    let out = b.node(conv, &[x, w, bias, s], &[f(1), f(3), f(4), f(5)]);
    let mut desc = b.finish(out);
    desc.tensors[w as usize].stored = INT8;
    let file = load(&desc);
    let model = Model::from_bytes(file.as_slice()).unwrap();
    let xv = g.vec(40);
    let got = run(&model, &[&xv], 60).unwrap();
    let iw = int8_of(&model, w);
    let bv = model.const_weights(bias).unwrap().dequantize();
    for oc in 0..3 {
        for oy in 0..4i64 {
            for ox in 0..5i64 {
                let mut acc = 0i64;
                for ci in 0..2 {
                    for ky in 0..3i64 {
                        for kx in 0..3i64 {
                            let (iy, ix) = (oy + ky - 1, ox + kx - 1);
                            if !(0..4).contains(&iy) || !(0..5).contains(&ix) {
                                continue;
                            }
                            let xi = (ci * 4 + iy as usize) * 5 + ix as usize;
                            let wi = ((oc * 2 + ci) * 3 + ky as usize) * 3 + kx as usize;
                            acc += q(xv[xi], s_x) * i64::from(iw.values[wi]);
                        }
                    }
                }
                let want = (acc as f32) * (s_x * iw.scales.get(oc).unwrap()) + bv[oc];
                let at = (oc * 4 + oy as usize) * 5 + ox as usize;
                assert_eq!(got[at].to_bits(), want.to_bits(), "oc {oc} ({oy},{ox})");
            }
        }
    }
}

#[test]
fn full_integer_rules() {
    let load_err = |d: &ModelDesc| match flowrt::write::write(d) {
        Err(e) => e,
        Ok(bytes) => {
            let a = flowrt::format::AlignedBytes::copy_from(&bytes);
            Model::from_bytes(a.as_slice()).expect_err("loads")
        }
    };
    let text = |e: Error| format!("{e}");
    // f32 weights with an activation scale.
    let (mut d, [w, _, _]) = dense_graph(&mut Lcg(1), vec![0.01]);
    d.tensors[w as usize].stored = WeightType::F32;
    assert!(text(load_err(&d)).contains("int8 weights"));
    // int8 along the wrong axis.
    let (mut d, [w, _, _]) = dense_graph(&mut Lcg(1), vec![0.01]);
    d.tensors[w as usize].stored = WeightType::Int8 {
        axis: 1,
        scales: ScaleType::Bf16,
    };
    assert!(text(load_err(&d)).contains("axis 0"));
    // A scale that is not one finite positive value.
    for bad in [vec![0.0], vec![-0.5], vec![f32::INFINITY], vec![0.1, 0.2]] {
        let (d, _) = dense_graph(&mut Lcg(1), bad.clone());
        let e = text(load_err(&d));
        assert!(e.contains("activation scale"), "{bad:?}: {e}");
    }
    // The scale stored as f16: not an input that reads a typed constant.
    let (mut d, [_, _, s]) = dense_graph(&mut Lcg(1), vec![0.01]);
    d.tensors[s as usize].stored = WeightType::F16;
    assert!(flowrt::write::write(&d).is_err());
    // A NaN input row gives a NaN row, not a number.
    let (d, _) = dense_graph(&mut Lcg(1), vec![0.01]);
    let file = load(&d);
    let model = Model::from_bytes(file.as_slice()).unwrap();
    let mut x = vec![0.5f32; 15];
    x[7] = f32::NAN;
    let out = run(&model, &[&x], 18).unwrap();
    assert!(out[..6].iter().chain(&out[12..]).all(|v| v.is_finite()));
    assert!(out[6..12].iter().all(|v| v.is_nan()));
}

/// `x [2, 9]` → Lut with `table` (shape `[table.len()]`, stored as `stored`) and `scale`.
fn lut_graph(table: Vec<f32>, stored: WeightType, scale: Vec<f32>) -> (ModelDesc, [u32; 2]) {
    let mut b = ModelBuilder::default();
    let x = b.input(&[f(2), f(9)], Role::Data);
    let t = b.constant(&[f(table.len() as u32)], table);
    let n = scale.len() as u32;
    let s = b.constant(&[f(n)], scale);
    let out = b.node(Op::Lut { of: UnaryOp::Silu }, &[x, t, s], &[f(2), f(9)]);
    let mut d = b.finish(out);
    d.tensors[t as usize].stored = stored;
    (d, [t, s])
}

/// Table values that differ everywhere and are not exact in f16.
fn some_table() -> Vec<f32> {
    (0..255)
        .map(|j| (j as f32 * 0.37).sin() * 3.1 + j as f32 / 7.0)
        .collect()
}

#[test]
fn lut_reads_the_table_entry_of_each_inputs_int8_code() {
    for stored in [WeightType::F32, WeightType::F16, WeightType::Bf16] {
        // A power-of-two scale makes `x · (1 / s)` exact, so the ties are ties.
        for s in [0.25f32, 0.037] {
            let (desc, [t, _]) = lut_graph(some_table(), stored, vec![s]);
            let file = load(&desc);
            let model = Model::from_bytes(file.as_slice()).unwrap();
            let table = model.const_weights(t).unwrap().dequantize();
            let x = [
                0.0,
                -0.0,
                -0.1 * s, // rounds to -0: code 0
                0.5 * s,  // a tie: away from zero, code 1
                -2.5 * s, // code -3
                126.49 * s,
                126.5 * s,  // code 127
                -200.0 * s, // saturates at -127
                1e30,
                f32::MAX,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                3.3,
                -1.7,
                f32::MIN_POSITIVE,
                -1e-40,
                0.499 * s,
            ];
            let got = run(&model, &[&x], 18).unwrap();
            for (i, v) in x.iter().enumerate() {
                if v.is_nan() {
                    assert!(got[i].is_nan(), "{stored:?} s {s}: NaN gave {}", got[i]);
                    continue;
                }
                let want = table[(q(*v, s) + 127) as usize];
                assert_eq!(
                    got[i].to_bits(),
                    want.to_bits(),
                    "{stored:?} s {s}: x {v:e}"
                );
            }
            // The NaN touched its own value only; the row without it has no NaN.
            assert_eq!(got.iter().filter(|v| v.is_nan()).count(), 1);
        }
    }
}

#[test]
fn lut_rules() {
    let load_err = |d: &ModelDesc| match flowrt::write::write(d) {
        Err(e) => format!("{e}"),
        Ok(bytes) => {
            let a = flowrt::format::AlignedBytes::copy_from(&bytes);
            format!("{}", Model::from_bytes(a.as_slice()).expect_err("loads"))
        }
    };
    for bad in [
        vec![0.0],
        vec![-0.5],
        vec![f32::NAN],
        vec![f32::INFINITY],
        vec![0.1, 0.2],
    ] {
        let (d, _) = lut_graph(some_table(), WeightType::F32, bad.clone());
        let e = load_err(&d);
        assert!(e.contains("Lut scale"), "{bad:?}: {e}");
    }
    let (d, _) = lut_graph(vec![0.5; 254], WeightType::F32, vec![0.1]);
    assert!(load_err(&d).contains("Lut table (input 1) must have shape [255]"));
    // An int8 table, and a scale stored f16: inputs that do not read those types.
    let (mut d, [t, s]) = lut_graph(some_table(), WeightType::F32, vec![0.1]);
    d.tensors[t as usize].stored = INT8;
    assert!(flowrt::write::write(&d).is_err());
    d.tensors[t as usize].stored = WeightType::F16;
    d.tensors[s as usize].stored = WeightType::F16;
    assert!(flowrt::write::write(&d).is_err());
    // A table computed at run time.
    let mut b = ModelBuilder::default();
    let x = b.input(&[f(2), f(9)], Role::Data);
    let c = b.constant(&[f(255)], some_table());
    let t = b.node(Op::Unary(UnaryOp::Neg), &[c], &[f(255)]);
    let s = b.constant(&[f(1)], vec![0.1]);
    let out = b.node(Op::Lut { of: UnaryOp::Silu }, &[x, t, s], &[f(2), f(9)]);
    let e = load_err(&b.finish(out));
    assert!(e.contains("Lut table (input 1) must be a constant"), "{e}");
}

/// `x [rows, 6]` → `Lut` → full-integer Dense 6 → 4; with `twice`, a second full-integer
/// Dense reads the `Lut`'s output too (the pair then runs apart) and the two are added.
/// Returns the file and its Dense nodes' `[w, bias, scale]` ids.
/// A table with a NaN keeps the f32 handoff too (a code cannot carry the NaN).
fn lut_dense_graph(rows: u32, twice: bool, table: Vec<f32>) -> (ModelDesc, Vec<[u32; 3]>) {
    let mut g = Lcg(17);
    let mut b = ModelBuilder::default();
    let x = b.input(&[f(rows), f(6)], Role::Data);
    let t = b.constant(&[f(255)], table);
    let ls = b.constant(&[f(1)], vec![0.05]);
    let y = b.node(Op::Lut { of: UnaryOp::Silu }, &[x, t, ls], &[f(rows), f(6)]);
    let mut denses = Vec::new();
    let mut dense = |b: &mut ModelBuilder, s: f32| {
        let w = b.constant(&[f(4), f(6)], g.vec(24));
        let bias = b.constant(&[f(4)], g.vec(4));
        let sc = b.constant(&[f(1)], vec![s / 127.0]);
        denses.push([w, bias, sc]);
        b.node(Op::Dense, &[y, w, bias, sc], &[f(rows), f(4)])
    };
    let h = dense(&mut b, 40.0);
    let out = if twice {
        let h2 = dense(&mut b, 30.0);
        b.node(
            Op::Binary(flowrt::ir::BinaryOp::Add),
            &[h, h2],
            &[f(rows), f(4)],
        )
    } else {
        h
    };
    let mut d = b.finish(out);
    for [w, bias, _] in &denses {
        d.tensors[*w as usize].stored = INT8;
        d.tensors[*bias as usize].stored = WeightType::F16;
    }
    (d, denses)
}

#[test]
fn a_lut_and_its_only_full_integer_reader_give_the_bits_of_the_two_apart() {
    // The executor passes int8 codes from the Lut to the Dense when the Dense is its only
    // reader and there are enough rows, f32 values when it has two or the rows are few:
    // either way the bits of the ops run apart.
    const {
        assert!(180 * 6 >= flowrt::ops::LUT_CODES_MIN_VALUES);
        assert!(7 * 6 < flowrt::ops::LUT_CODES_MIN_VALUES);
    }
    let mut nan_table = some_table();
    nan_table[140] = f32::NAN;
    for (twice, rows, table) in [
        (false, 180usize, some_table()),
        (false, 7, some_table()),
        (true, 180, some_table()),
        (false, 180, nan_table),
    ] {
        let (desc, denses) = lut_dense_graph(rows as u32, twice, table.clone());
        let file = load(&desc);
        let model = Model::from_bytes(file.as_slice()).unwrap();
        let mut x = Lcg(5).vec(rows * 6);
        for v in x.iter_mut() {
            *v *= 9.0;
        }
        x[7] = f32::NAN; // row 1
        x[20] = f32::INFINITY;
        let got = run(&model, &[&x], rows * 4).unwrap();
        let mut y = vec![0f32; rows * 6];
        flowrt::ops::lut(&x, Weights::F32(&table), 0.05, &mut y).unwrap();
        let mut want = vec![0f32; rows * 4];
        for [w, bias, s] in &denses {
            let bias = model.const_weights(*bias).unwrap();
            let s = desc.tensors[*s as usize].data.clone().unwrap()[0];
            let mut h = vec![0f32; rows * 4];
            flowrt::ops::dense_q8(&y, int8_of(&model, *w), Some(bias), s, 6, 4, &mut h).unwrap();
            for (a, v) in want.iter_mut().zip(&h) {
                *a = if denses.len() == 1 { *v } else { *a + v };
            }
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "twice {twice} rows {rows}");
        assert!(got[4..8].iter().all(|v| v.is_nan()), "row 1 is NaN");
    }
}

#[test]
fn the_cpu_field_passes_lut_codes_too() {
    // `CpuField` decodes the records once (`exec::run` above does not): the Lut reads the
    // Dense's scale through the model, not through its own decoded inputs (which once
    // refused every such pair on the host). v = Dense(Lut(x + t)), 200 rows.
    let rows = 200usize;
    let mut b = ModelBuilder::default();
    let bd = flowrt::format::Dim::Batch;
    let x = b.input(&[bd, f(6)], Role::X);
    let t = b.input(&[bd, f(1)], Role::T);
    let h = b.node(Op::Binary(flowrt::ir::BinaryOp::Add), &[x, t], &[bd, f(6)]);
    let table = b.constant(&[f(255)], some_table());
    let ls = b.constant(&[f(1)], vec![0.05]);
    let y = b.node(Op::Lut { of: UnaryOp::Silu }, &[h, table, ls], &[bd, f(6)]);
    let mut g = Lcg(9);
    let w = b.constant(&[f(6), f(6)], g.vec(36));
    let bias = b.constant(&[f(6)], g.vec(6));
    let s = b.constant(&[f(1)], vec![40.0 / 127.0]);
    let out = b.node(Op::Dense, &[y, w, bias, s], &[bd, f(6)]);
    let mut desc = b.finish(out);
    desc.tensors[w as usize].stored = INT8;
    let file = load(&desc);
    let model = Model::from_bytes(file.as_slice()).unwrap();
    let mut xs = Lcg(4).vec(rows * 6);
    for v in xs.iter_mut() {
        *v *= 9.0;
    }
    let tv = 0.25f32;
    let mut arena = flowrt::format::AlignedBytes::zeroed(model.required_arena_bytes(rows).unwrap());
    let mut field = flowrt::exec::CpuField::new(&model, rows, arena.as_mut_slice()).unwrap();
    let mut got = vec![0f32; rows * 6];
    field.eval_into(tv, &xs, &mut got).unwrap();
    // The same graph through `exec::run` (records not decoded), fed the same t.
    let ts = vec![tv; rows];
    let mut want = vec![0f32; rows * 6];
    let mut graph = flowrt::format::AlignedBytes::zeroed(model.graph_arena_bytes(rows).unwrap());
    flowrt::exec::run(&model, rows, &[&xs, &ts], &mut want, graph.as_mut_slice()).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want));
}
