//! Writes the `.frt` seeds of `frt_load_sample` (fuzz/corpus/frt_load_sample/) from the ONNX
//! fixtures with the exporter: f32, f16 and int8 weights, a `TIME` section with solver
//! defaults, `PIPELINE` sections (refiner, decoder), a label input, a few-step model and
//! f16 element-wise constants behind a `Widen` node, and a `Norm` node; each in format
//! version 3 (`_v3`) and, but the `Widen` one, with fixed records (versions 1 and 2).
//!
//! `cargo run --release --features exporter --example make_seeds` (from fuzz/).
use std::path::{Path, PathBuf};

use flowrt::format::pipeline::StageKind;
use flowrt::grid::GridSpec;
use flowrt::ir::SolverDefaultsDesc;
use flowrt::solver::Method;
use flowrt::time::{TimeAxis, TimeConvention};
use flowrt_export::gptq::Rounding;
use flowrt_export::weights::{WeightChoice, WeightKind};
use flowrt_export::ExportOptions;
use flowrt::write::Layout;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
        .join("model.ts.onnx")
}

fn weights(kind: WeightKind) -> WeightChoice {
    WeightChoice {
        kind,
        keep_f32: Vec::new(),
    }
}

fn main() {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/frt_load_sample");
    std::fs::create_dir_all(&out).unwrap();
    let plain = ExportOptions {
        rounding: Rounding::Nearest,
        ..Default::default()
    };
    let seeds: Vec<(&str, &str, ExportOptions)> = vec![
        ("moons_icfm_f32", "moons_icfm", plain.clone()),
        (
            "moons_icfm_f16",
            "moons_icfm",
            ExportOptions {
                weights: weights(WeightKind::F16),
                ..plain.clone()
            },
        ),
        (
            "moons_icfm_int8_refiner",
            "moons_icfm",
            ExportOptions {
                weights: weights(WeightKind::Int8),
                pipeline: vec![(
                    StageKind::Refiner { from: 0.5, to: 1.0 },
                    fixture("moons_refiner"),
                )],
                ..plain.clone()
            },
        ),
        (
            "moons_sigma_time_defaults",
            "moons_sigma",
            ExportOptions {
                time: TimeConvention {
                    axis: TimeAxis::Sigma,
                    scale: 1000.0,
                    ..Default::default()
                },
                solver_defaults: Some(SolverDefaultsDesc {
                    method: Some(Method::Heun),
                    steps: Some(3),
                    grid: Some(GridSpec::Shift(3.0)),
                    ..Default::default()
                }),
                weights: weights(WeightKind::Bf16),
                ..plain.clone()
            },
        ),
        (
            "moons_latent_decoder_pipeline",
            "moons_latent_flow",
            ExportOptions {
                pipeline: vec![(StageKind::Decoder, fixture("moons_latent_decoder"))],
                ..plain.clone()
            },
        ),
        ("moons_cfg_label", "moons_cfg", plain.clone()),
        ("moons_meanflow_step", "moons_meanflow", plain.clone()),
        (
            // The full-integer mode: int8 activations and table activations (`Lut`).
            "moons_icfm_act8_lut",
            "moons_icfm",
            ExportOptions {
                weights: weights(WeightKind::Int8),
                int8_activations: Some(Default::default()),
                ..plain.clone()
            },
        ),
        (
            "moons_opzoo_int8_widen",
            "moons_opzoo",
            ExportOptions {
                weights: weights(WeightKind::Int8),
                ..plain.clone()
            },
        ),
    ];
    // Each seed in both record layouts: fixed (format versions 1 and 2, with every name, as
    // the seeds were first written) and compact (version 3, the exporter's default; its
    // file name ends in `_v3`). The operator zoo's int8 file is version 3 only (its `Widen`: an element-wise
    // constant stored f16).
    let layouts = [(Layout::Fixed, ""), (Layout::Compact, "_v3")];
    for ((name, onnx, opts), (layout, suffix)) in seeds
        .iter()
        .flat_map(|s| layouts.iter().map(move |l| (s, l)))
    {
        if name.ends_with("_widen") && *layout == Layout::Fixed {
            continue;
        }
        let name = format!("{name}{suffix}");
        let opts = ExportOptions {
            layout: *layout,
            keep_names: *layout == Layout::Fixed,
            ..opts.clone()
        };
        match flowrt_export::export_onnx(&fixture(onnx), &opts) {
            Ok(bytes) => {
                let a = flowrt::format::AlignedBytes::copy_from(&bytes);
                let m = flowrt::Model::from_bytes(a.as_slice()).unwrap();
                println!(
                    "{name}: {} bytes, {} nodes, version {}, pipeline {}",
                    bytes.len(),
                    m.node_count(),
                    m.version(),
                    m.pipeline().is_some()
                );
                std::fs::write(out.join(format!("{name}.frt")), bytes).unwrap();
            }
            Err(e) => println!("{name}: {e:#}"),
        }
    }
    // A `Norm` node (the fused normalizations; the fixtures small enough to be seeds have
    // none): the moons MLP with its first hidden layer normalized, in both layouts.
    let mut desc = flowrt_export::onnx_to_desc(&fixture("moons_icfm"), &plain).unwrap();
    let first = desc
        .nodes
        .iter()
        .position(|n| n.op == flowrt::ir::Op::Dense)
        .unwrap();
    let h = desc.nodes[first].output;
    let mut normed = desc.tensors[h as usize].clone();
    normed.name = "normed".into();
    desc.tensors.push(normed);
    let h2 = (desc.tensors.len() - 1) as u32;
    for n in &mut desc.nodes[first + 1..] {
        n.inputs.iter_mut().filter(|i| **i == h).for_each(|i| *i = h2);
    }
    desc.nodes.insert(
        first + 1,
        flowrt::ir::NodeDesc {
            name: "norm".into(),
            op: flowrt::ir::Op::Norm {
                start: 1,
                end: 2,
                eps: 1e-5,
            },
            inputs: vec![h],
            output: h2,
        },
    );
    for (layout, name) in [(Layout::Fixed, "moons_icfm_norm"), (Layout::Compact, "moons_icfm_norm_v3")] {
        let bytes = flowrt::write::write_with(&desc, layout).unwrap();
        let a = flowrt::format::AlignedBytes::copy_from(&bytes);
        let m = flowrt::Model::from_bytes(a.as_slice()).unwrap();
        println!("{name}: {} bytes, {} nodes, version {}", bytes.len(), m.node_count(), m.version());
        std::fs::write(out.join(format!("{name}.frt")), bytes).unwrap();
    }
}
