//! `flowrt inspect`: a `.frt` file's signature, time convention, its graph by op family
//! (nodes, parameters, multiply-accumulates a sample) and its memory plan (tensors, peak
//! live activations, arena sizes, weights by stored type); `--json` for machines.

use std::path::Path;

use anyhow::{anyhow, bail, Result};

use crate::summary;

/// Prints `path`'s description (`json`: machine-readable), with arena bytes per batch size.
///
/// Errors: an unreadable or invalid file, batch 0.
pub fn run(path: &Path, json: bool, batches: &[usize]) -> Result<()> {
    if batches.contains(&0) {
        bail!("--batch must be at least 1");
    }
    let frt = flowrt_host::Frt::open(path)?;
    let m = frt.model();
    let mut op_counts: Vec<(&str, usize)> = Vec::new();
    for n in m.nodes() {
        match op_counts.iter_mut().find(|(name, _)| *name == n.op_name()) {
            Some((_, c)) => *c += 1,
            None => op_counts.push((n.op_name(), 1)),
        }
    }
    let inputs: Vec<(String, String, String)> = m
        .inputs()
        .map(|i| {
            let name = m
                .tensor(i.tensor)
                .and_then(|t| t.name)
                .unwrap_or("?")
                .to_string();
            (
                name,
                format!("{:?}", i.role).to_lowercase(),
                i.shape.to_string(),
            )
        })
        .collect();
    let arena: Vec<(usize, usize)> = batches
        .iter()
        .map(|&b| Ok((b, m.required_arena_bytes(b).map_err(|e| anyhow!("{e}"))?)))
        .collect::<Result<_>>()?;
    // Constants per stored type: (tensors, values).
    let mut stored = std::collections::BTreeMap::<&str, (usize, usize)>::new();
    for w in m.constants() {
        let e = stored.entry(w.type_name()).or_default();
        e.0 += 1;
        e.1 += w.len();
    }
    let families = summary::families(&m);
    let mem = summary::memory(&m);
    let macs: u64 = families.iter().filter_map(|f| f.macs).sum();
    if json {
        let v = serde_json::json!({
            "file": path.display().to_string(),
            "file_bytes": m.file_len(),
            "inputs": inputs.iter().map(|(n, r, s)| serde_json::json!({"name": n, "role": r, "shape": s})).collect::<Vec<_>>(),
            "output_shape": m.output_shape().to_string(),
            "state_dim": m.state_dim(),
            "nodes": m.node_count(),
            "ops": op_counts.iter().map(|(n, c)| serde_json::json!({"op": n, "count": c})).collect::<Vec<_>>(),
            "parameters": m.param_count(),
            "label_classes": m.label_classes(),
            "cond_dim": m.cond_dim(),
            "time": {"axis": m.time_convention().axis.name(), "scale": m.time_convention().scale, "negate_output": m.time_convention().negate_output},
            "solver_defaults": m.solver_defaults().map(|d| format!("{d:?}")),
            "weight_bytes": m.weight_bytes(),
            "format_version": m.version(),
            "constants": stored.iter().map(|(ty, (n, v))| serde_json::json!({"type": ty, "tensors": n, "values": v})).collect::<Vec<_>>(),
            "arena_fixed_bytes": m.fixed_arena_bytes(),
            "arena_per_row_bytes": m.per_row_arena_bytes(),
            "arena_bytes": arena.iter().map(|(b, a)| serde_json::json!({"batch": b, "bytes": a})).collect::<Vec<_>>(),
            "metadata": m.metadata().collect::<std::collections::BTreeMap<_, _>>(),
            "embedded_onnx_bytes": m.embedded_onnx().map(<[u8]>::len),
            "macs_per_sample": macs,
            "families": families.iter().map(|f| serde_json::json!({
                "family": f.name,
                "nodes": f.nodes,
                "parameters": f.params,
                "macs_per_sample": f.macs,
                "ops": f.ops.iter().map(|(n, c)| serde_json::json!({"op": n, "count": c})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "memory": {
                "tensors": {"inputs": mem.inputs, "constants": mem.consts, "intermediates": mem.intermediates, "outputs": mem.outputs},
                "activations_unshared_bytes": {"fixed": mem.unshared.fixed, "per_row": mem.unshared.per_row},
                "peak_live_bytes": {"fixed": mem.peak.fixed, "per_row": mem.peak.per_row},
                "weights": mem.weights.iter().map(|w| serde_json::json!({"type": w.dtype, "tensors": w.tensors, "values": w.values, "bytes": w.bytes})).collect::<Vec<_>>(),
            },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{}: {} bytes, .frt format v{}",
        path.display(),
        m.file_len(),
        m.version()
    );
    for (k, v) in m.metadata() {
        println!("  {k}: {v}");
    }
    println!("signature:");
    for (name, role, shape) in &inputs {
        let extra = match (role.as_str(), m.label_classes(), m.cond_dim()) {
            ("label", Some(n), _) => format!("  ({n} classes)"),
            ("cond", _, Some(c)) => format!("  (cond dim {c})"),
            _ => String::new(),
        };
        println!("  input  {name:<12} role {role:<3} shape {shape}{extra}");
    }
    println!(
        "  output velocity          shape {}  (state dim {})",
        m.output_shape(),
        m.state_dim()
    );
    let tc = m.time_convention();
    println!(
        "time: {} axis ({}), network time = {} x time{}",
        tc.axis.name(),
        match tc.axis {
            flowrt::time::TimeAxis::T => "0 = noise -> 1 = data",
            flowrt::time::TimeAxis::Sigma => "1 = noise -> 0 = data",
        },
        tc.scale,
        if tc.negate_output {
            ", output = -dx/dtime"
        } else {
            ""
        }
    );
    if let Some(d) = m.solver_defaults() {
        println!("solver defaults: {d:?}");
    }
    if let Some(p) = m.pipeline() {
        for (k, sub) in p.stages() {
            println!(
                "pipeline stage: {k:?}: {} nodes, {} parameters, arena {} bytes for batch 1",
                sub.node_count(),
                sub.param_count(),
                sub.required_arena_bytes(1).unwrap_or(0)
            );
        }
    }
    print_families(&m, &families, macs);
    let types: Vec<String> = stored
        .iter()
        .map(|(ty, (n, v))| format!("{ty} x{n} ({v} values)"))
        .collect();
    println!(
        "parameters: {} ({} weight bytes; constants {})",
        m.param_count(),
        m.weight_bytes(),
        types.join(", ")
    );
    match m.embedded_onnx() {
        Some(o) => println!(
            "embedded ONNX: {} bytes (sample --backend ort / bench can run it)",
            o.len()
        ),
        None => println!("embedded ONNX: none (export --embed-onnx to add it)"),
    }
    print_memory(&mem);
    println!(
        "  arena (graph + field scratch) = {} fixed + {} per row, rounded to 16:",
        m.fixed_arena_bytes(),
        m.per_row_arena_bytes()
    );
    for (b, a) in arena {
        println!("    batch {b:>6}: {a} bytes");
    }
    Ok(())
}

/// The graph by op family: a table of nodes, parameters and MACs a sample.
fn print_families(m: &flowrt::Model<'_>, families: &[summary::Family], macs: u64) {
    println!(
        "graph: {} nodes, {} parameters, {} multiply-accumulates a sample (batch 1):",
        m.node_count(),
        m.param_count(),
        summary::short(macs)
    );
    println!(
        "  {:<12} {:>6} {:>10} {:>12}  ops",
        "family", "nodes", "params", "MACs"
    );
    for f in families {
        let ops: Vec<String> = f.ops.iter().map(|(n, c)| format!("{n} x{c}")).collect();
        println!(
            "  {:<12} {:>6} {:>10} {:>12}  {}",
            f.name,
            f.nodes,
            f.params,
            f.macs.map_or("-".to_string(), summary::short),
            ops.join(", ")
        );
    }
}

/// The memory plan: tensors, activations (unshared and peak live), weights by type.
fn print_memory(mem: &summary::Memory) {
    println!("memory:");
    println!(
        "  tensors: {} input, {} constant, {} intermediate, {} output",
        mem.inputs, mem.consts, mem.intermediates, mem.outputs
    );
    println!(
        "  activations: {} fixed + {} per row with a buffer each; peak live {} fixed + {} per row",
        mem.unshared.fixed, mem.unshared.per_row, mem.peak.fixed, mem.peak.per_row
    );
    let w: Vec<String> = mem
        .weights
        .iter()
        .map(|w| format!("{} {} bytes ({} tensors)", w.dtype, w.bytes, w.tensors))
        .collect();
    println!("  weights: {}", w.join(", "));
}
