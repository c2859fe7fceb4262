//! `flowrt conformance`: the ONNX backend node test cases through export + runtime.

use std::path::Path;

use anyhow::Result;

/// Runs every case under `data` (those whose name contains `filter`), prints the totals and
/// writes the markdown table to `out`.
///
/// Errors: an unreadable test folder or report path.
pub fn run(data: &Path, out: Option<&Path>, filter: Option<&str>, verbose: bool) -> Result<()> {
    use flowrt_export::conformance::{self, Outcome};
    if let Some(out) = out {
        flowrt_export::output::check_writable(out, "--out")?;
    }
    let results = conformance::run_all(data, filter)?;
    if verbose {
        for r in &results {
            match &r.outcome {
                Outcome::Pass { max_abs, .. } => {
                    println!("pass    {} ({}) {max_abs:.1e}", r.name, r.op)
                }
                Outcome::Wrong { why } => println!("WRONG   {} ({}): {why}", r.name, r.op),
                Outcome::Refused { why } => println!("refused {} ({}): {why}", r.name, r.op),
            }
        }
    }
    let t = conformance::totals(&results);
    let (p, w) = t
        .values()
        .fold((0, 0), |a, v| (a.0 + v.passed, a.1 + v.wrong));
    println!(
        "{} cases: {p} passed, {w} wrong, {} refused; {} ops with a passing case",
        results.len(),
        results.len() - p - w,
        t.values().filter(|v| v.passed > 0).count()
    );
    if let Some(out) = out {
        let source = format!(
            "`onnx/backend/test/data/node` of onnx 1.22.0 ({} cases)",
            results.len()
        );
        flowrt_export::output::write_atomic(
            out,
            conformance::markdown(&results, &source).as_bytes(),
        )?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
