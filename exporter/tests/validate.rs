//! `flowrt_export::validate`: ONNX checks before tract sees the model, on small ModelProtos
//! built in code, and over every committed fixture.

use std::path::Path;

use flowrt_export::validate::{check_file, check_model};
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::type_proto;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TypeProto,
    ValueInfoProto,
};

fn input(name: &str, dt: DataType) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: dt as i32,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        name: name.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn ints_attr(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn opset(domain: &str, version: i64) -> OperatorSetIdProto {
    OperatorSetIdProto {
        domain: domain.into(),
        version,
    }
}

/// A model with one float32 input `x`, the given nodes and the default domain at `version`.
fn model(version: i64, nodes: Vec<NodeProto>) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![opset("", version)],
        graph: Some(GraphProto {
            name: "g".into(),
            node: nodes,
            input: vec![input("x", DataType::Float)],
            output: vec![input("v", DataType::Float)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn split_num_outputs(version: i64) -> ModelProto {
    let mut split = node("split_a", "Split", &["x"], &["a", "b"]);
    split.attribute = vec![int_attr("axis", 1), int_attr("num_outputs", 2)];
    model(
        version,
        vec![split, node("add", "Add", &["a", "b"], &["v"])],
    )
}

fn err(m: &ModelProto) -> String {
    format!("{:#}", check_model(m).expect_err("the check must fail"))
}

fn assert_has(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "`{msg}` lacks `{n}`");
    }
}

#[test]
fn split_num_outputs_before_opset_18_is_an_invalid_model() {
    let e = err(&split_num_outputs(17));
    assert_has(
        &e,
        &[
            "model is invalid",
            "node `split_a` (Split, opset 17)",
            "attribute `num_outputs` does not exist before opset 18",
        ],
    );
}

#[test]
fn split_num_outputs_at_opset_18_passes() {
    check_model(&split_num_outputs(18)).unwrap();
}

#[test]
fn attributes_moved_to_inputs_are_invalid_after_the_move() {
    let mut split = node("", "Split", &["x"], &["a", "b"]);
    split.attribute = vec![ints_attr("split", &[1, 1])];
    let mut sum = node("rs", "ReduceSum", &["a"], &["s"]);
    sum.attribute = vec![ints_attr("axes", &[1])];
    let mut mean = node("rm", "ReduceMean", &["b"], &["m"]);
    mean.attribute = vec![ints_attr("axes", &[1])];
    let nodes = vec![split, sum, mean, node("add", "Add", &["s", "m"], &["v"])];
    // Opset 13: Split `split` and ReduceSum `axes` became inputs; ReduceMean's only at 18.
    let e = err(&model(13, nodes.clone()));
    assert_has(
        &e,
        &[
            "node `#0` (Split, opset 13): attribute `split` does not exist since opset 13",
            "node `rs` (ReduceSum, opset 13): attribute `axes` does not exist since opset 13",
        ],
    );
    assert!(!e.contains("`rm`"), "{e}");
    let e = err(&model(18, nodes.clone()));
    assert_has(
        &e,
        &["node `rm` (ReduceMean, opset 18): attribute `axes` does not exist since opset 18"],
    );
    check_model(&model(12, nodes)).unwrap();
}

#[test]
fn ops_newer_than_the_opset_are_invalid() {
    let e = err(&model(17, vec![node("g", "Gelu", &["x"], &["v"])]));
    assert_has(
        &e,
        &["node `g` (Gelu, opset 17): op `Gelu` does not exist before opset 20"],
    );
    check_model(&model(20, vec![node("g", "Gelu", &["x"], &["v"])])).unwrap();
}

#[test]
fn unsupported_ops_are_all_named_at_once() {
    let nodes = vec![
        node("nms", "NonMaxSuppression", &["x", "x"], &["sel"]),
        node("topk0", "TopK", &["x", "k"], &["vals", "idx"]),
        node("topk1", "TopK", &["vals", "k"], &["vals2", "idx2"]),
        node("add", "Add", &["vals2", "x"], &["v"]),
    ];
    let e = err(&model(17, nodes));
    assert_has(
        &e,
        &[
            "2 op types not supported by flowrt (NonMaxSuppression: 1 node, TopK: 2 nodes)",
            "node `nms` (NonMaxSuppression, opset 17): op `NonMaxSuppression` is not supported \
             by flowrt",
            "node `topk0` (TopK, opset 17): op `TopK` is not supported by flowrt (also 1 more \
             node: `topk1`)",
        ],
    );
    assert!(!e.contains("Add"), "{e}");
}

#[test]
fn custom_domains_are_refused() {
    let mut m = model(
        17,
        vec![
            NodeProto {
                domain: "com.microsoft".into(),
                ..node("fused", "FusedMatMul", &["x", "x"], &["y"])
            },
            node("add", "Add", &["y", "x"], &["v"]),
        ],
    );
    m.opset_import.push(opset("com.microsoft", 1));
    let e = err(&m);
    assert_has(
        &e,
        &[
            "model is invalid",
            "node `fused` (com.microsoft.FusedMatMul, opset 1)",
            "custom op domain `com.microsoft` is not supported",
        ],
    );
    // Not also reported as an unsupported default-domain op.
    assert!(!e.contains("not supported by flowrt"), "{e}");
}

#[test]
fn ai_onnx_is_the_default_domain() {
    let mut m = split_num_outputs(18);
    m.opset_import = vec![opset("ai.onnx", 18)];
    if let Some(g) = m.graph.as_mut() {
        g.node[0].domain = "ai.onnx".into();
    }
    check_model(&m).unwrap();
}

#[test]
fn non_f32_inputs_are_refused() {
    let mut m = model(17, vec![node("add", "Add", &["x", "h"], &["v"])]);
    if let Some(g) = m.graph.as_mut() {
        g.input.push(input("h", DataType::Double));
        g.input.push(input("label", DataType::Int64));
        g.input.push(input("flag", DataType::Bool));
    }
    let e = err(&m);
    assert_has(
        &e,
        &[
            "graph input `h` is double",
            "flowrt computes in f32; re-export in float32",
            "graph input `flag` is bool",
        ],
    );
    assert!(!e.contains("`label`") && !e.contains("`x`"), "{e}");
}

#[test]
fn problems_of_every_kind_are_reported_together() {
    let mut m = split_num_outputs(17);
    if let Some(g) = m.graph.as_mut() {
        g.node.push(node("tk", "TopK", &["x", "k"], &["a2", "i2"]));
        g.input[0] = input("x", DataType::Double);
    }
    let e = err(&m);
    assert_has(
        &e,
        &[
            "`num_outputs` does not exist before opset 18",
            "op `TopK` is not supported by flowrt",
            "graph input `x` is double",
        ],
    );
}

#[test]
fn a_model_without_a_graph_or_opset_is_invalid() {
    assert_has(&err(&ModelProto::default()), &["no graph"]);
    let mut m = split_num_outputs(18);
    m.opset_import.clear();
    if let Some(g) = m.graph.as_mut() {
        g.node.push(node("tk", "TopK", &["x", "k"], &["a2", "i2"]));
    }
    assert_has(
        &err(&m),
        &[
            "imports no opset for the default domain",
            "node `tk` (TopK, domain not imported): op `TopK` is not supported by flowrt",
        ],
    );
}

/// Every committed fixture passes, except `tests/fixtures/ops` cases that the manifest expects
/// to be refused, whose error must then be the one the manifest names.
#[test]
fn committed_fixtures_pass_or_fail_as_the_manifest_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("ops/manifest.json")).expect("ops manifest"),
    )
    .expect("ops manifest json");
    let expected = |file: &str| -> Option<String> {
        manifest["cases"]
            .as_array()?
            .iter()
            .find(|c| c["file"] == file && c["expect_error"] == true)
            .and_then(|c| c["error_contains"].as_str().map(String::from))
    };
    let mut checked = 0;
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("fixture dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("onnx") {
                continue;
            }
            checked += 1;
            if let Err(e) = check_file(&path) {
                let msg = format!("{e:#}");
                let file = path
                    .file_name()
                    .and_then(|f| f.to_str())
                    .unwrap_or_default();
                let want = expected(file)
                    .unwrap_or_else(|| panic!("{} is refused: {msg}", path.display()));
                assert!(
                    msg.contains(&want),
                    "{}: `{msg}` lacks `{want}`",
                    path.display()
                );
            }
        }
    }
    assert!(checked > 100, "only {checked} ONNX fixtures found");
}

#[test]
fn unsupported_ops_off_the_data_path_are_left_to_constant_folding() {
    // Shape(x) -> NonZero -> ... : computes on x's shape only (tract folds it), while
    // TopK(x) computes on the data.
    let folded = model(
        17,
        vec![
            node("shape", "Shape", &["x"], &["s"]),
            node("nz", "NonZero", &["s"], &["i"]),
            node("add", "Add", &["x", "x"], &["v"]),
        ],
    );
    flowrt_export::validate::check_model(&folded).expect("shape-only NonZero is allowed");
    let data = model(
        17,
        vec![
            node("shape", "Shape", &["x"], &["s"]),
            node("topk", "TopK", &["x", "s"], &["v", "idx"]),
        ],
    );
    assert_has(&err(&data), &["topk", "TopK", "opset 17", "not supported"]);
}
