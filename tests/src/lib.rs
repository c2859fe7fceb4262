//! Shared helpers for flowrt's integration tests: the committed fixtures (real models trained
//! by `tests/fixtures/make_fixtures.py`) and their reference outputs.

use std::path::{Path, PathBuf};

use flowrt::format::AlignedBytes;

pub mod w2;

/// Root of the committed fixtures: `FLOWRT_FIXTURES_DIR` when set (a test binary carried to
/// another machine, e.g. the GPU machine of `scripts/bench-gpu.sh`), else `tests/fixtures`
/// of the checkout the tests were built in.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("FLOWRT_FIXTURES_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
    }
}

/// One fixture model (a folder under `tests/fixtures/`).
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Model name (folder name).
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// Input roles in ONNX order (`x`, `t`, `xt`).
    pub roles: Vec<String>,
    /// Declared time shape rank of the `t` input, if any (0 = scalar).
    pub t_rank: Option<usize>,
}

/// The two torch exporters every fixture is exported with: (tag, file name).
pub const EXPORTS: [(&str, &str); 2] = [("ts", "model.ts.onnx"), ("dynamo", "model.dynamo.onnx")];

/// All fixture models listed in `tests/fixtures/manifest.json`.
pub fn fixtures() -> Vec<Fixture> {
    let root = fixtures_dir();
    let text = std::fs::read_to_string(root.join("manifest.json")).expect("fixtures manifest");
    let v: serde_json::Value = serde_json::from_str(&text).expect("manifest json");
    v["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| {
            let inputs = m["inputs"].as_array().expect("inputs");
            Fixture {
                name: m["name"].as_str().expect("name").to_string(),
                dir: root.join(m["dir"].as_str().expect("dir")),
                roles: inputs
                    .iter()
                    .map(|i| i["role"].as_str().expect("role").to_string())
                    .collect(),
                t_rank: inputs
                    .iter()
                    .find(|i| i["role"] == "t")
                    .map(|i| i["shape"].as_array().expect("shape").len()),
            }
        })
        .collect()
}

/// Methods and step counts the fixtures have references for.
pub fn reference_grid() -> (Vec<String>, Vec<usize>) {
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.json")).expect("manifest");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let methods = v["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .map(|m| m.as_str().expect("m").to_string())
        .collect();
    let steps = v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s.as_u64().expect("s") as usize)
        .collect();
    (methods, steps)
}

/// Reads a float32 `.npy` file: (values, shape).
pub fn npy(path: &Path) -> (Vec<f32>, Vec<usize>) {
    flowrt_export::npy::read_f32(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}

/// Exports a fixture's ONNX file to aligned `.frt` bytes.
pub fn export(onnx: &Path) -> AlignedBytes {
    let bytes = flowrt_export::export_onnx(onnx, &Default::default())
        .unwrap_or_else(|e| panic!("export {}: {e:#}", onnx.display()));
    AlignedBytes::copy_from(&bytes)
}

/// [`export`] with fixed-size records (format version 1 or 2), for tests that patch record
/// fields at known offsets.
pub fn export_fixed(onnx: &Path) -> AlignedBytes {
    let opts = flowrt_export::ExportOptions {
        layout: flowrt::write::Layout::Fixed,
        keep_names: true,
        ..Default::default()
    };
    let bytes = flowrt_export::export_onnx(onnx, &opts)
        .unwrap_or_else(|e| panic!("export {}: {e:#}", onnx.display()));
    AlignedBytes::copy_from(&bytes)
}

/// Largest absolute difference between two equally long slices (NaN counts as infinite).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    flowrt_export::max_abs_diff(a, b)
}
