//! Export patterns of real image flow models (issue 4), on the seeded random-weight nets of
//! `tests/fixtures/make_arch_fixtures.py`: a DiT block with `F.scaled_dot_product_attention`,
//! one with `nn.MultiheadAttention` (heads folded into the batch axis at a non-leading
//! position), and a conv net with GroupNorm, BatchNorm, `padding="same"`, strided conv,
//! AvgPool, bilinear and nearest interpolation, ConvTranspose, PixelShuffle and clamp; and
//! diffusers' own `DiTTransformer2DModel` (class-conditional, one-operand-einsum unpatchify)
//! and `UNet2DModel` (unconditional); an `nn.TransformerEncoder` (pre-norm, GELU) over
//! reshape/permute patches. Both torch exporters; flowrt's velocity equals
//! onnxruntime's within 1e-4.

use flowrt::exec::CpuField;
use flowrt::field::Conditioning;
use flowrt::format::AlignedBytes;
use flowrt::Model;
use flowrt_tests::{export, fixtures_dir, max_abs_diff, npy};

const MODELS: [&str; 6] = [
    "dit_sdpa",
    "dit_multihead_attention",
    "convnet_norms_resampling",
    "diffusers_dit",
    "diffusers_unet2d",
    "transformer_encoder",
];

#[test]
fn architecture_variants_match_onnxruntime_with_both_exporters() {
    let dir = fixtures_dir().join("arch");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let t = manifest["t"].as_f64().unwrap() as f32;
    for name in MODELS {
        let x = npy(&dir.join(format!("{name}.x.npy"))).0;
        let entry = manifest["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap();
        let labelled = entry["labels"].as_bool().unwrap_or(true);
        let y = labelled.then(|| {
            flowrt_export::npy::read_labels(&dir.join(format!("{name}.y.npy")))
                .unwrap()
                .0
        });
        for ex in ["ts", "dynamo"] {
            let bytes = export(&dir.join(format!("{name}.{ex}.onnx")));
            let m = Model::from_bytes(bytes.as_slice()).unwrap();
            let rows = x.len() / m.state_dim();
            let mut arena = AlignedBytes::zeroed(m.required_arena_bytes(rows).unwrap());
            let mut net = CpuField::new(&m, rows, arena.as_mut_slice()).unwrap();
            let mut v = vec![0f32; x.len()];
            let cond = Conditioning {
                label: y.as_deref(),
                ..Default::default()
            };
            net.eval_cond(t, &x, &cond, &mut v).unwrap();
            let want = npy(&dir.join(format!("{name}.v_ort_{ex}.npy"))).0;
            let d = max_abs_diff(&v, &want);
            println!(
                "{name} {ex}: {} nodes, velocity vs onnxruntime {d:.2e}",
                m.node_count()
            );
            assert!(d <= 1e-4, "{name} {ex}: {d}");
        }
    }
}
