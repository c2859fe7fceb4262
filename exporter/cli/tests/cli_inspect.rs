//! `flowrt inspect`'s graph summary by op family and its memory plan, against numbers
//! worked out from the ONNX files without flowrt: `tests/onnx_macs.py` (ONNX Runtime at
//! batch 1 gives every shape; MACs of Conv / Gemm / MatMul / Einsum), the layer sizes of
//! the fixtures' manifests, and arithmetic on those sizes written out below.

mod common;
use common::*;

use serde_json::Value;

/// The family `name` of an `inspect --json` value.
fn family<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["families"]
        .as_array()
        .expect("families array")
        .iter()
        .find(|f| f["family"] == name)
        .unwrap_or_else(|| panic!("no family {name}: {v}"))
}

/// moons_reflow is an MLP 3 -> 64 -> 64 -> 64 -> 2 with SELU (onnx_macs.py: Gemm x4, Selu
/// x3, 8706 initializer elements, 8512 MACs = 3*64 + 64*64 + 64*64 + 64*2).
#[test]
fn inspect_moons_families_and_memory() {
    let (_dir, frt) = temp_export("inspect-moons", "moons_reflow/model.ts.onnx", "");
    let v = inspect_json(&frt);
    assert_eq!(v["nodes"], 7, "{v}");
    assert_eq!(v["parameters"], 8706, "{v}");
    assert_eq!(v["macs_per_sample"], 8512, "{v}");
    let names: Vec<&str> = v["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["family"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["matmul", "activation"], "{v}");
    let mm = family(&v, "matmul");
    assert_eq!(
        (&mm["nodes"], &mm["parameters"], &mm["macs_per_sample"]),
        (&4.into(), &8706.into(), &8512.into()),
        "{v}"
    );
    let act = family(&v, "activation");
    assert_eq!(
        (&act["nodes"], &act["parameters"]),
        (&3.into(), &0.into()),
        "{v}"
    );
    assert!(act["macs_per_sample"].is_null(), "{v}");
    assert_eq!(act["ops"][0]["op"], "Selu");
    let mem = &v["memory"];
    // 1 input (xt), 4 weights + 4 biases, 3 Dense + 3 Selu outputs less the last Dense,
    // which is the output.
    assert_eq!(
        mem["tensors"],
        serde_json::json!({"inputs": 1, "constants": 8, "intermediates": 6, "outputs": 1})
    );
    // Every activation in its own buffer: (6 x 64 + 2) floats a row.
    assert_eq!(
        mem["activations_unshared_bytes"],
        serde_json::json!({"fixed": 0, "per_row": 4 * (6 * 64 + 2)})
    );
    // At most a 64-wide input and a 64-wide output are alive at once.
    assert_eq!(
        mem["peak_live_bytes"],
        serde_json::json!({"fixed": 0, "per_row": 4 * (64 + 64)})
    );
    assert!(v["arena_per_row_bytes"].as_u64().unwrap() >= 512, "{v}");
    assert_eq!(
        mem["weights"],
        serde_json::json!([{"type": "f32", "tensors": 8, "values": 8706, "bytes": 4 * 8706}])
    );

    // The text form says the same.
    let text = ok(&[&"inspect", &frt]);
    assert_contains(
        &text,
        &[
            "graph: 7 nodes, 8706 parameters, 8512 multiply-accumulates a sample",
            "Dense x4",
            "Selu x3",
            "tensors: 1 input, 8 constant, 6 intermediate, 1 output",
            "peak live 0 fixed + 512 per row",
            "weights: f32 34824 bytes (8 tensors)",
            "batch      1:",
        ],
    );
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("matmul"))
        .unwrap();
    let words: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&words[..4], ["matmul", "4", "8706", "8512"], "{row}");

    // int8 weights: the four matrices (8512 values) with one 8-bit scale per output channel
    // (64 + 64 + 64 + 2) and one exponent byte each; the biases (194 values) int8 with one
    // 8-bit scale each.
    let dir = TempDir::new("inspect-int8");
    let q = export_in(
        &dir,
        "q.frt",
        "moons_reflow/model.ts.onnx",
        "--weights int8",
    );
    let v = inspect_json(&q);
    let mut w: Vec<(String, u64, u64, u64)> = v["memory"]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let n = |k: &str| w[k].as_u64().unwrap();
            (
                w["type"].as_str().unwrap().to_string(),
                n("tensors"),
                n("values"),
                n("bytes"),
            )
        })
        .collect();
    w.sort();
    assert_eq!(
        w,
        [
            // 8706 values: 8512 weights and 194 bias values; one exponent byte and one
            // code per output channel (194) for the weights, one of each per bias (4 + 4).
            ("int8".into(), 8, 8706, 8706 + 194 + 4 + 4 + 4)
        ]
    );
}

/// The digits UNet: convolutions, attention, group norms. ONNX Runtime's shapes give
/// 8003584 MACs a sample (onnx_macs.py: Conv 7852032 + Gemm 86016 + Einsum 65536); flowrt
/// runs some 1x1 convolutions as Dense, so only the total is compared.
#[test]
fn inspect_unet_macs_and_plan() {
    let (_dir, frt) = temp_export("inspect-unet", "digits_unet/model.dynamo.onnx", "");
    let v = inspect_json(&frt);
    assert_eq!(v["macs_per_sample"], 8003584, "{v}");
    let fams = v["families"].as_array().unwrap();
    let sum = |k: &str| fams.iter().map(|f| f[k].as_u64().unwrap_or(0)).sum::<u64>();
    // Every node and parameter is in exactly one family.
    assert_eq!(sum("nodes"), v["nodes"].as_u64().unwrap());
    assert_eq!(sum("parameters"), v["parameters"].as_u64().unwrap());
    assert_eq!(sum("macs_per_sample"), 8003584);
    for f in [
        "matmul",
        "conv",
        "norm/reduce",
        "activation",
        "shape",
        "gather",
    ] {
        assert!(family(&v, f)["nodes"].as_u64().unwrap() > 0, "{f}: {v}");
    }
    // The embedding table: 11 classes x 128 (the manifest's nn.Embedding(11, 128)).
    assert_eq!(family(&v, "gather")["parameters"], 11 * 128);
    // The planner cannot beat the peak of live activations.
    let peak = v["memory"]["peak_live_bytes"]["per_row"].as_u64().unwrap();
    let arena = v["arena_per_row_bytes"].as_u64().unwrap();
    assert!(peak > 0 && peak <= arena, "peak {peak}, arena {arena}");
    let unshared = v["memory"]["activations_unshared_bytes"]["per_row"]
        .as_u64()
        .unwrap();
    assert!(arena < unshared, "arena {arena}, unshared {unshared}");
}

/// More architectures against `onnx_macs.py`: a DiT (attention as MatMul), a CNN classifier
/// and the op-zoo MLP; on each, the per-family sums equal the totals and the planner's arena
/// (both regions; the scalar-t checker model has a fixed region) is at least the peak of
/// live activations.
#[test]
fn inspect_macs_of_other_architectures() {
    let dir = TempDir::new("inspect-more");
    for (onnx, macs) in [
        ("digits_dit/model.dynamo.onnx", Some(2555904u64)),
        ("digit_classifier/model.onnx", Some(337536)),
        ("moons_opzoo/model.ts.onnx", Some(21760)),
        ("checker_fm_scalar_t/model.ts.onnx", None),
    ] {
        let frt = export_in(&dir, "m.frt", onnx, "");
        let v = inspect_json(&frt);
        let fams = v["families"].as_array().unwrap();
        let sum = |k: &str| fams.iter().map(|f| f[k].as_u64().unwrap_or(0)).sum::<u64>();
        if let Some(m) = macs {
            assert_eq!(v["macs_per_sample"], m, "{onnx}");
        }
        assert_eq!(
            sum("macs_per_sample"),
            v["macs_per_sample"].as_u64().unwrap(),
            "{onnx}"
        );
        assert_eq!(sum("nodes"), v["nodes"].as_u64().unwrap(), "{onnx}");
        assert_eq!(
            sum("parameters"),
            v["parameters"].as_u64().unwrap(),
            "{onnx}"
        );
        let peak = &v["memory"]["peak_live_bytes"];
        for (region, arena) in [
            ("fixed", "arena_fixed_bytes"),
            ("per_row", "arena_per_row_bytes"),
        ] {
            let (p, a) = (peak[region].as_u64().unwrap(), v[arena].as_u64().unwrap());
            assert!(p <= a, "{onnx} {region}: peak {p} > arena {a}");
        }
        if onnx.starts_with("checker_fm_scalar_t") {
            assert!(peak["fixed"].as_u64().unwrap() > 0, "{onnx}: {v}");
        }
    }
}
