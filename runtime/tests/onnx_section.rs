//! The optional `ONNX` section (kind 9): written when `ModelDesc::onnx` is set, read back
//! zero-copy by `Model::embedded_onnx`, absent otherwise, and skipped by nothing else.
#![cfg(feature = "alloc")]

use flowrt::format::AlignedBytes;
use flowrt::ir::{Dim, InputDesc, ModelDesc, NodeDesc, Op, Role, TensorDesc, UnaryOp};
use flowrt::Model;

fn tiny(onnx: Option<Vec<u8>>) -> ModelDesc {
    let t = |name: &str| TensorDesc {
        name: name.into(),
        shape: vec![Dim::Batch, Dim::Fixed(2)],
        data: None,
        stored: Default::default(),
        int8_scales: None,
    };
    ModelDesc {
        tensors: vec![t("x"), t("v")],
        nodes: vec![NodeDesc {
            name: "neg".into(),
            op: Op::Unary(UnaryOp::Neg),
            inputs: vec![0],
            output: 1,
        }],
        inputs: vec![InputDesc {
            tensor: 0,
            role: Role::X,
        }],
        output: 1,
        metadata: vec![],
        onnx,
        ..Default::default()
    }
}

#[test]
fn onnx_section_round_trips() {
    // Odd length and arbitrary bytes: the section is opaque to flowrt.
    let payload: Vec<u8> = (0..1001u32).map(|i| (i * 7 + 3) as u8).collect();
    let with = flowrt::write::write(&tiny(Some(payload.clone()))).unwrap();
    let without = flowrt::write::write(&tiny(None)).unwrap();
    let a = AlignedBytes::copy_from(&with);
    let b = AlignedBytes::copy_from(&without);
    let ma = Model::from_bytes(a.as_slice()).unwrap();
    let mb = Model::from_bytes(b.as_slice()).unwrap();
    assert_eq!(ma.embedded_onnx(), Some(&payload[..]));
    assert_eq!(mb.embedded_onnx(), None);
    // Everything before the ONNX section is identical: it is appended last and optional.
    // (one more table entry and the payload, up to 16-byte alignment padding)
    assert!(with.len() >= without.len() + payload.len());
    assert!(with.len() <= without.len() + 24 + 2 * 15 + payload.len());
    assert_eq!(ma.node_count(), mb.node_count());
    // An empty payload is still a present section.
    let e = flowrt::write::write(&tiny(Some(Vec::new()))).unwrap();
    let e = AlignedBytes::copy_from(&e);
    assert_eq!(
        Model::from_bytes(e.as_slice()).unwrap().embedded_onnx(),
        Some(&[][..])
    );
}
