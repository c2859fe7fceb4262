//! Hostile input (issue 17): malformed ONNX files, `.npy` files and options must end in one
//! clean `error:` line (exit status 1), never a panic, an abort or a silently wrong result.
//!
//! The ONNX cases mutate a committed fixture's `ModelProto` in memory, write it to a temp
//! dir and run `flowrt export` on it; each of them panicked inside tract before the checks
//! in `flowrt_export::validate` and the containment in `flowrt_export::contain`.

mod common;
use common::*;

use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

fn load(fixture: &str) -> ModelProto {
    let bytes = std::fs::read(fx(fixture)).expect("read fixture");
    ModelProto::decode(&bytes[..]).expect("decode fixture")
}

fn graph(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().expect("graph")
}

fn node<'a>(m: &'a mut ModelProto, name: &str) -> &'a mut NodeProto {
    graph(m)
        .node
        .iter_mut()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// Replaces the value of the `Constant` node `name` by an int64 tensor.
fn set_const_i64(m: &mut ModelProto, name: &str, dims: &[i64], values: &[i64]) {
    let n = node(m, name);
    assert_eq!(n.op_type, "Constant");
    n.attribute = vec![AttributeProto {
        name: "value".into(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Tensor as i32,
        t: Some(TensorProto {
            dims: dims.to_vec(),
            data_type: DataType::Int64 as i32,
            int64_data: values.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }];
}

/// Writes `m` to a temp dir, runs `flowrt export` on it, asserts a clean failure (exit 1, one
/// `error:` line, no "panicked") naming each of `needles`; returns the error line.
fn export_mutated(tag: &str, m: &ModelProto, needles: &[&str]) -> String {
    let dir = TempDir::new(tag);
    let onnx = dir.path("model.onnx");
    std::fs::write(&onnx, m.encode_to_vec()).expect("write mutated onnx");
    let frt = dir.path("model.frt");
    let parts: &[&dyn Arg] = &[&"export", &onnx, &"-o", &frt];
    let out = flowrt(parts);
    assert_eq!(out.status.code(), Some(1), "{}", describe(parts, &out));
    let e = fails_with(parts, needles);
    eprintln!("{tag}: {e}");
    assert!(!frt.exists(), "a failed export left {}", frt.display());
    e
}

#[test]
fn unsqueeze_axes_out_of_range() {
    // checker_fm: /Unsqueeze adds one axis to a scalar (axes [0]); axis 7 does not exist.
    let mut m = load("checker_fm/model.ts.onnx");
    set_const_i64(&mut m, "/Constant_6", &[1], &[7]);
    export_mutated("unsq", &m, &["/Unsqueeze", "Unsqueeze", "axis 7"]);
}

#[test]
fn squeeze_axes_out_of_range() {
    // digits_dit: /blocks.0/attn/Squeeze drops axis 0 of a rank-5 Split output.
    let mut m = load("digits_dit/model.ts.onnx");
    set_const_i64(&mut m, "/blocks.0/attn/Constant_7", &[1], &[9]);
    export_mutated("sq", &m, &["/blocks.0/attn/Squeeze", "axis 9"]);
}

#[test]
fn initializer_retyped_to_string() {
    let mut m = load("moons_icfm/model.ts.onnx");
    let t = graph(&mut m)
        .initializer
        .iter_mut()
        .find(|t| t.name == "net.0.weight")
        .expect("net.0.weight");
    t.data_type = DataType::String as i32;
    let mut cleared = m.clone();
    // Only re-typed: the float bytes stay in raw_data.
    export_mutated("str", &m, &["initializer `net.0.weight`", "string"]);
    // As a string tensor is stored (string_data), with no strings in it.
    graph(&mut cleared)
        .initializer
        .iter_mut()
        .find(|t| t.name == "net.0.weight")
        .unwrap()
        .raw_data
        .clear();
    export_mutated("str2", &cleared, &["initializer `net.0.weight`", "192"]);
}

#[test]
fn initializer_size_does_not_match_dims() {
    let mut m = load("moons_icfm/model.ts.onnx");
    let t = graph(&mut m)
        .initializer
        .iter_mut()
        .find(|t| t.name == "net.0.weight")
        .expect("net.0.weight");
    t.dims[0] = i64::MAX / 2;
    export_mutated("size", &m, &["net.0.weight", "dims"]);
}

#[test]
fn graph_output_without_producer() {
    let mut m = load("moons_icfm/model.ts.onnx");
    graph(&mut m).output[0].name = "nowhere".into();
    export_mutated(
        "out",
        &m,
        &["graph output `nowhere`", "no node produces it"],
    );
}

#[test]
fn node_input_without_producer() {
    let mut m = load("moons_icfm/model.ts.onnx");
    node(&mut m, "/net/net.1/Selu").input[0] = "ghost".into();
    export_mutated("in", &m, &["/net/net.1/Selu", "`ghost`", "no node"]);
}

#[test]
fn constant_gather_index_out_of_range() {
    // checker_fm: /Gather picks dim 0 of x's shape (rank 2); index 9 does not exist.
    let mut m = load("checker_fm/model.ts.onnx");
    set_const_i64(&mut m, "/Constant", &[], &[9]);
    export_mutated("gather", &m, &["/Gather", "index 9"]);
}

#[test]
fn conv_empty_bias_name_is_an_absent_bias() {
    // ONNX allows an optional input named "": Conv without a bias. The export must work (tract
    // panicked on it); here on digits_unet's first Conv.
    let mut m = load("digits_unet/model.ts.onnx");
    node(&mut m, "/net/input_blocks.0/input_blocks.0.0/Conv").input[2] = String::new();
    let dir = TempDir::new("bias");
    let onnx = dir.path("model.onnx");
    std::fs::write(&onnx, m.encode_to_vec()).unwrap();
    let frt = dir.path("model.frt");
    ok(&[&"export", &onnx, &"-o", &frt]);
    assert!(frt.is_file());
}

#[test]
fn transpose_empty_input_name() {
    let mut m = load("digits_dit/model.ts.onnx");
    node(&mut m, "/Transpose").input[0] = String::new();
    export_mutated("tr", &m, &["/Transpose", "input 0", "empty"]);
}

#[test]
fn transpose_perm_not_a_permutation() {
    let mut m = load("digits_dit/model.ts.onnx");
    let n = node(&mut m, "/Transpose");
    n.attribute[0].ints = vec![0, 2, 2];
    export_mutated("perm", &m, &["/Transpose", "perm"]);
}

#[test]
fn conv_strides_empty() {
    let mut m = load("digits_unet/model.ts.onnx");
    let n = node(&mut m, "/net/input_blocks.0/input_blocks.0.0/Conv");
    n.attribute
        .iter_mut()
        .find(|a| a.name == "strides")
        .unwrap()
        .ints
        .clear();
    export_mutated("strides", &m, &["input_blocks.0.0/Conv", "strides", "2"]);
}

#[test]
fn conv_pads_wrong_length() {
    let mut m = load("digits_unet/model.ts.onnx");
    let n = node(&mut m, "/net/input_blocks.0/input_blocks.0.0/Conv");
    n.attribute
        .iter_mut()
        .find(|a| a.name == "pads")
        .unwrap()
        .ints = vec![1, 1, 1];
    export_mutated("pads", &m, &["input_blocks.0.0/Conv", "pads", "4"]);
}

#[test]
fn a_panic_inside_tract_is_contained() {
    // digits_dit: /t_embedder/Unsqueeze works on a Mul output, whose rank the checks before
    // tract do not follow; tract's analysis panics (smallvec "index exceeds length") and the
    // containment turns it into an error naming the model and the stage.
    let mut m = load("digits_dit/model.ts.onnx");
    set_const_i64(&mut m, "/t_embedder/Constant_1", &[1], &[9]);
    export_mutated(
        "contained",
        &m,
        &[
            "the ONNX importer failed on",
            "model.onnx (analysis)",
            "(at ",
        ],
    );
}
