//! The digit classifier of `docs/quantization.md`'s accuracy gate
//! (`tests/fixtures/digit_classifier/`, written by `make_digit_classifier.py`), exported and
//! run by flowrt as the quantization bin runs it, against onnxruntime's and PyTorch's logits
//! on the committed probe inputs, and against PyTorch's accuracy on the committed image
//! fixture samples.

use flowrt::format::AlignedBytes;
use flowrt::Model;
use flowrt_tests::{fixtures_dir, npy};

const CLASSES: usize = 10;
/// Logit agreement with onnxruntime / PyTorch, relative to `max(1, |reference|)` (the logits
/// are O(10); PyTorch and onnxruntime agree to 5e-6 on them).
const TOL: f32 = 2e-5;

fn dir() -> std::path::PathBuf {
    fixtures_dir().join("digit_classifier")
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(dir().join("manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("json")
}

/// flowrt's logits of the float32 `.frt` export for the images `x` ([rows, 1, 8, 8]).
fn logits(x: &[f32]) -> Vec<f32> {
    let file = flowrt_tests::export(&dir().join("model.onnx"));
    let model = Model::from_bytes(file.as_slice()).expect("load");
    assert_eq!((model.state_dim(), model.output_dim()), (64, CLASSES));
    let rows = x.len() / 64;
    let mut out = vec![0f32; rows * CLASSES];
    let mut arena = AlignedBytes::zeroed(model.graph_arena_bytes(rows).expect("arena"));
    flowrt::exec::run(&model, rows, &[x], &mut out, arena.as_mut_slice()).expect("run");
    out
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn worst(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
        .fold(0.0, f32::max)
}

#[test]
fn logits_match_onnxruntime_and_torch() {
    let (x, shape) = npy(&dir().join("probe_x.npy"));
    assert_eq!(shape[1..], [1, 8, 8]);
    let got = logits(&x);
    let (labels, _) = flowrt_export::npy::read_labels(&dir().join("probe_y.npy")).expect("probe_y");
    for (file, what) in [
        ("logits_ort.npy", "onnxruntime"),
        ("logits_torch.npy", "torch"),
    ] {
        let (want, wshape) = npy(&dir().join(file));
        assert_eq!(wshape, [shape[0], CLASSES]);
        let err = worst(&got, &want);
        println!("classifier logits: max |flowrt - {what}| / max(1, |{what}|) = {err:.2e}");
        assert!(err <= TOL, "{what}: {err:e} > {TOL:e}");
        // The same predicted classes, row by row.
        for (r, (g, w)) in got
            .chunks_exact(CLASSES)
            .zip(want.chunks_exact(CLASSES))
            .enumerate()
        {
            assert_eq!(argmax(g), argmax(w), "{what}: row {r}");
        }
    }
    // The clean held-out digits (first half of the probe) are classified right.
    let clean = shape[0] / 2;
    for (r, (g, y)) in got
        .chunks_exact(CLASSES)
        .zip(&labels)
        .take(clean)
        .enumerate()
    {
        assert_eq!(argmax(g) as i64, *y, "held-out digit {r}");
    }
}

#[test]
fn accuracy_on_fixture_samples_matches_torch() {
    // PyTorch's accuracy on the 16 committed rk4-38 32-step samples of each image model
    // (manifest) against flowrt's predictions on the same samples.
    let man = manifest();
    for name in ["digits_unet", "digits_dit"] {
        let (x, _) = npy(&fixtures_dir().join(name).join("samples/rk4-38_32.npy"));
        let (labels, _) =
            flowrt_export::npy::read_labels(&fixtures_dir().join(name).join("labels.npy"))
                .expect("labels");
        let got = logits(&x);
        let right = got
            .chunks_exact(CLASSES)
            .zip(&labels)
            .filter(|(l, y)| argmax(l) as i64 == **y)
            .count();
        let acc = right as f64 / labels.len() as f64;
        let want = man["fixture_samples_accuracy_rk4-38_32"][name]["accuracy"]
            .as_f64()
            .expect("accuracy");
        println!("{name}: flowrt {acc}, torch {want}");
        assert_eq!(acc, want, "{name}");
    }
}
