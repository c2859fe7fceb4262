//! ONNX operator conformance (issue 4): reruns the ONNX backend node test cases of
//! onnx==1.22.0 through export + runtime (`flowrt_export::conformance`) and checks them
//! against the committed `docs/conformance.md`: no case may run wrong, and no op may pass
//! fewer cases than the table says. Regenerate the table with `scripts/conformance.sh`.
//!
//! The cases come from the `onnx==1.22.0` wheel that `scripts/test.sh` installs into
//! `.venv-ort/` (or `FLOWRT_ONNX_NODE_DATA`). Without them this test FAILS (it does not skip).

use std::path::PathBuf;

use flowrt_export::conformance::{self, Outcome};

fn node_data() -> PathBuf {
    if let Ok(p) = std::env::var("FLOWRT_ONNX_NODE_DATA") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let lib = root.join(".venv-ort/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.filter_map(|d| d.ok())
            .map(|d| d.path().join("site-packages/onnx/backend/test/data/node"))
            .find(|p| p.is_dir())
    });
    found.unwrap_or_else(|| {
        panic!(
            "ONNX node test data not found under {}: run scripts/test.sh (it installs \
             onnx==1.22.0 into .venv-ort/) or set FLOWRT_ONNX_NODE_DATA",
            lib.display()
        )
    })
}

#[test]
fn onnx_node_cases_match_the_committed_table_and_none_runs_wrong() {
    let data = node_data();
    let results = conformance::run_all(&data, None).expect("run the node cases");
    assert!(
        results.len() >= 1700,
        "only {} cases under {} (onnx 1.22.0 has 1765)",
        results.len(),
        data.display()
    );
    let wrong: Vec<String> = results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Wrong { why } => Some(format!("{} ({}): {why}", r.name, r.op)),
            _ => None,
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "cases that run but give wrong results:\n{}",
        wrong.join("\n")
    );
    let table_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/conformance.md");
    let committed = conformance::parse_table(&std::fs::read_to_string(&table_path).unwrap());
    assert!(
        committed.len() > 50,
        "the committed table has only {} ops",
        committed.len()
    );
    let now = conformance::totals(&results);
    let mut dropped = Vec::new();
    for (op, (passed, _)) in &committed {
        let got = now.get(op).map_or(0, |t| t.passed);
        if got < *passed {
            dropped.push(format!("{op}: {got} < {passed}"));
        }
    }
    assert!(
        dropped.is_empty(),
        "pass counts dropped below docs/conformance.md:\n{}",
        dropped.join("\n")
    );
    let passed: usize = now.values().map(|t| t.passed).sum();
    println!(
        "ONNX node cases: {passed} of {} passed, 0 wrong, {} ops with a passing case",
        results.len(),
        now.values().filter(|t| t.passed > 0).count()
    );
}
