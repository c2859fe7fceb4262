//! Prints the ops of tract's decluttered graph of an ONNX model (what `lower` sees):
//! `cargo run --release -p flowrt-export --example dump_tract -- model.onnx` (`V=1` for every
//! node with its output fact). A development aid for adding ops.
use std::collections::BTreeMap;
fn main() -> anyhow::Result<()> {
    let path = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let model = flowrt_export::import::load_inference_model(&path)?;
    let (inputs, outputs) = flowrt_export::import::declared_io(&model)?;
    let roles = flowrt_export::roles::assign_roles(&inputs, &outputs, &[])?;
    let typed = flowrt_export::import::into_typed(model, &inputs, &roles)?;
    let mut h: BTreeMap<String, usize> = BTreeMap::new();
    for n in typed.nodes() {
        *h.entry(n.op.name().to_string()).or_default() += 1;
        if std::env::var("V").is_ok() {
            println!("{} {:?} -> {:?}", n.name, n.op, n.outputs[0].fact);
        }
    }
    for (k, v) in h {
        println!("{k}: {v}");
    }
    Ok(())
}
