//! Debug aid: print the lowered flowrt graph of an ONNX file.
fn main() -> anyhow::Result<()> {
    for p in std::env::args().skip(1) {
        let desc = flowrt_export::onnx_to_desc(std::path::Path::new(&p), &Default::default());
        match desc {
            Ok(d) => {
                println!(
                    "== {p}: {} tensors, {} nodes",
                    d.tensors.len(),
                    d.nodes.len()
                );
                for n in &d.nodes {
                    let shapes: Vec<_> = n
                        .inputs
                        .iter()
                        .map(|i| &d.tensors[*i as usize].shape)
                        .collect();
                    println!(
                        "  {:?} {:?} -> {:?}",
                        n.op, shapes, d.tensors[n.output as usize].shape
                    );
                }
            }
            Err(e) => println!("== {p}: ERROR {e:#}"),
        }
    }
    Ok(())
}
