// Build-time plan shared by the firmware crates' build.rs files (`include!`d, host code).
//
// Inputs (environment variables, read at build time):
//   FLOWRT_FRT    absolute path of the .frt model to embed
//   FLOWRT_NOISE  absolute path of the noise .npy (float32 or float64, C order, [N, ...])
//   FLOWRT_METHOD solver name (default "euler")
//   FLOWRT_STEPS  uniform steps over [0, 1] (default 1)
//   FLOWRT_LABELS optional: absolute path of an int64 .npy of class labels, one per noise row
//                 (class-conditional models)
//
// Outputs in OUT_DIR: model.frt (copy), noise.bin (raw f32 little-endian), labels.bin (raw
// i64 little-endian; empty without labels) and plan.rs, which
// defines the compile-time constants the firmware sizes its static buffers with, and
// `Selected`, the `flowrt::select::Selection` of exactly the op kernels, weight types and
// solver the model and method need (the firmware samples with it, so nothing else is linked).
// The arena size is the runtime's own plan:
// `flowrt::sampler::sample_arena_bytes(model, method, batch)`.

use std::path::{Path, PathBuf};

/// The whole build script of a firmware crate: `memory.x` into OUT_DIR on the linker's search
/// path, then the plan.
fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    // The memory map, copied to OUT_DIR/memory.x (which cortex-m-rt's and riscv-rt's link
    // scripts include): memory-qemu.x (the QEMU board), or FLOWRT_MEMORY (e.g. a part's real
    // flash and RAM, so the link fails when the model, the arena and the stack reserve do
    // not fit). No file in the crate root is named memory.x: the linker would take it first.
    let memory = env_or("FLOWRT_MEMORY", "memory-qemu.x");
    std::fs::copy(&memory, out.join("memory.x")).unwrap_or_else(|e| panic!("{memory}: {e}"));
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed={memory}");
    println!("cargo:rerun-if-changed=../build_common.rs");
    write_plan();
}

fn env_or(name: &str, default: &str) -> String {
    println!("cargo:rerun-if-env-changed={name}");
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn required_path(name: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed={name}");
    let p = std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "set {name} (the firmware embeds a model and a noise file chosen at build time; \
             see targets/run-qemu.sh)"
        )
    });
    let p = PathBuf::from(p);
    println!("cargo:rerun-if-changed={}", p.display());
    p
}

/// Parses a little-endian int64 C-order 1-D .npy file (class labels).
fn read_labels(path: &Path) -> Vec<i64> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(b.len() >= 10 && &b[..6] == b"\x93NUMPY", "{}: not a .npy file", path.display());
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        _ => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).expect("npy header is not UTF-8");
    assert!(header.contains("'<i8'"), "{}: labels must be little-endian int64", path.display());
    b[start + hlen..]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// Parses a little-endian float32/float64 C-order .npy file: (values as f32, shape).
fn read_npy(path: &Path) -> (Vec<f32>, Vec<usize>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        b.len() >= 10 && &b[..6] == b"\x93NUMPY",
        "{}: not a .npy file",
        path.display()
    );
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => panic!("{}: unsupported .npy version {v}", path.display()),
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).expect("npy header is not UTF-8");
    assert!(
        !header.contains("'fortran_order': True"),
        "{}: Fortran-order arrays are not supported",
        path.display()
    );
    let descr = if header.contains("'<f4'") {
        4
    } else if header.contains("'<f8'") {
        8
    } else {
        panic!(
            "{}: noise must be little-endian float32 or float64 ({header})",
            path.display()
        )
    };
    let open = header.find("'shape': (").expect("npy header has no shape") + "'shape': (".len();
    let close = open + header[open..].find(')').expect("npy shape is not closed");
    let shape: Vec<usize> = header[open..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("npy shape entry"))
        .collect();
    let n: usize = shape.iter().product();
    let data = &b[start + hlen..];
    assert!(
        data.len() >= n * descr,
        "{}: truncated data",
        path.display()
    );
    let values = (0..n)
        .map(|i| {
            let c = &data[i * descr..(i + 1) * descr];
            if descr == 4 {
                f32::from_le_bytes([c[0], c[1], c[2], c[3]])
            } else {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            }
        })
        .collect();
    (values, shape)
}

/// Nominal multiply–accumulates of one velocity evaluation for one row (batch 1):
/// - Dense and MatMul: output elements × the reduced dim `K` (the first input's last dim);
/// - Conv (kernel `[C/groups, (KH,) KW, M]`): output elements × `C/groups × KH × KW`;
/// - ConvTranspose (kernel `[M, C/groups, (KH,) KW]`): input elements × `M/groups × KH × KW`.
///
/// Taps that fall on padding (which the kernels skip) count too, as in the usual FLOP counts;
/// full-integer Conv (kernel `[M, C/groups, (KH,) KW]`) counts the same products. Every other op counts 0.
fn macs_per_row(m: &flowrt::Model<'_>) -> usize {
    let tensor = |i: Option<u32>| i.and_then(|i| m.tensor(i)).expect("node input");
    let elements = |t: &flowrt::model::TensorInfo<'_>| t.shape.elements(1).expect("elements");
    let dim = |t: &flowrt::model::TensorInfo<'_>, axis: usize| match t.shape.dim(axis) {
        Some(flowrt::format::Dim::Fixed(v)) => (v as usize).max(1),
        _ => 1,
    };
    let last = |t: &flowrt::model::TensorInfo<'_>| dim(t, t.shape.rank().saturating_sub(1));
    m.nodes()
        .map(|n| {
            let op = n.op_name();
            if !matches!(op, "Dense" | "MatMul" | "Conv" | "ConvTranspose") {
                return 0;
            }
            let mut inputs = n.inputs();
            let x = tensor(inputs.next());
            let out = m.tensor(n.output).expect("node output");
            match op {
                // f32 and weight-only kernels are channel last; full-integer ones (a 4th
                // input, the activation scale) output channel first.
                "Conv" => {
                    let w = tensor(inputs.next());
                    let channels = if n.inputs().count() == 4 { dim(&w, 0) } else { last(&w) };
                    elements(&out) * (elements(&w) / channels)
                }
                "ConvTranspose" => {
                    let w = tensor(inputs.next());
                    elements(&x) * (elements(&w) / dim(&x, 1))
                }
                _ => elements(&out) * last(&x),
            }
        })
        .sum()
}

/// Fails the build, naming the cargo feature, when the model (or a stage of a multi-network
/// file) stores weights of a type the firmware is built without: `f16` for f16 / bf16, `int8`
/// (targets/run-qemu.sh turns on those its model uses).
fn check_weight_features(model: &flowrt::Model<'_>, frt: &Path) {
    let mut models = vec![*model];
    if let Some(p) = model.pipeline() {
        models.extend(p.stages().map(|(_, m)| *m));
    }
    for m in &models {
        for w in m.constants() {
            let feature = match w {
                flowrt::ops::Weights::F32(_) => continue,
                flowrt::ops::Weights::F16(_) | flowrt::ops::Weights::Bf16(_) => "f16",
                flowrt::ops::Weights::Int8(_) => "int8",
            };
            let var = format!("CARGO_FEATURE_{}", feature.to_uppercase());
            assert!(
                std::env::var_os(&var).is_some(),
                "{}: the model stores {} weights: build the firmware with --features {feature} \
                 (targets/run-qemu.sh picks the features from the model)",
                frt.display(),
                w.type_name()
            );
        }
    }
}

fn write_plan() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let frt = required_path("FLOWRT_FRT");
    let noise = required_path("FLOWRT_NOISE");
    let method_name = env_or("FLOWRT_METHOD", "euler");
    let steps: usize = env_or("FLOWRT_STEPS", "1")
        .parse()
        .expect("FLOWRT_STEPS: an integer");

    let bytes = std::fs::read(&frt).unwrap_or_else(|e| panic!("{}: {e}", frt.display()));
    let aligned = flowrt::format::AlignedBytes::copy_from(&bytes);
    let model = flowrt::Model::from_bytes(aligned.as_slice())
        .unwrap_or_else(|e| panic!("{}: {e}", frt.display()));
    check_weight_features(&model, &frt);
    let method: flowrt::solver::Method = method_name
        .parse()
        .unwrap_or_else(|e| panic!("FLOWRT_METHOD={method_name}: {e}"));
    flowrt::grid::Uniform::unit(steps).unwrap_or_else(|e| panic!("FLOWRT_STEPS={steps}: {e}"));

    let (values, shape) = read_npy(&noise);
    let dim = model.state_dim();
    let row: usize = shape.iter().skip(1).product();
    assert!(
        shape.len() >= 2 && row == dim && shape[0] > 0,
        "{}: noise shape {shape:?} does not fit the model's state (rows of {dim} values)",
        noise.display()
    );
    let batch = shape[0];
    // A multi-network file (e.g. a latent flow and its decoder) samples with
    // `flowrt::pipeline`; with a decoder the firmware prints the decoded rows.
    let pipeline = model.pipeline();
    let arena = match &pipeline {
        Some(p) => flowrt::pipeline::pipeline_arena_bytes(p, method, batch),
        None => flowrt::sampler::sample_arena_bytes(&model, method, batch),
    }
    .unwrap_or_else(|e| panic!("arena plan: {e}"));
    let decoder = pipeline.as_ref().and_then(|p| p.decoder());
    let decoded_len = decoder.map_or(0, |d| batch * d.output_dim());
    let out_shape: Vec<usize> = match decoder {
        Some(d) => d
            .output_shape()
            .dims()
            .map(|v| match v {
                flowrt::format::Dim::Batch => batch,
                flowrt::format::Dim::Fixed(n) => n as usize,
            })
            .collect(),
        None => shape.clone(),
    };

    println!("cargo:rerun-if-env-changed=FLOWRT_LABELS");
    let labels: Vec<i64> = match std::env::var("FLOWRT_LABELS") {
        Ok(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            println!("cargo:rerun-if-changed={}", p.display());
            let l = read_labels(&p);
            assert_eq!(l.len(), batch, "{}: one label per noise row", p.display());
            l
        }
        _ => Vec::new(),
    };
    let raw_labels: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(out.join("labels.bin"), raw_labels).expect("write labels.bin");
    std::fs::write(out.join("model.frt"), &bytes).expect("write model.frt");
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(out.join("noise.bin"), raw).expect("write noise.bin");
    let shape_str = out_shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let plan = format!(
        "// Generated by build.rs from {frt} and {noise}.\n\
         /// Rows sampled.\npub const BATCH: usize = {batch};\n\
         /// f32 values per row (the model's state dimension).\npub const DIM: usize = {dim};\n\
         /// f32 values in the state (BATCH * DIM).\npub const STATE_LEN: usize = {len};\n\
         /// Shape of the printed samples (the noise's; a decoder's output with one).\n\
         pub const SHAPE: &str = \"{shape_str}\";\n\
         /// A multi-network file, sampled with `flowrt::pipeline`.\npub const PIPELINE: bool = {is_pipeline};\n\
         /// f32 values of the decoded samples (0 without a decoder).\npub const DECODED_LEN: usize = {decoded_len};\n\
         /// The pipeline has a decoder (the firmware prints its output).\npub const HAS_DECODER: bool = {has_decoder};\n\
         /// Class labels embedded (0 or BATCH).\npub const LABELS_LEN: usize = {labels_len};\n\
         /// Solver name (parsed with `Method::from_str`).\npub const METHOD: &str = \"{method_name}\";\n\
         /// Uniform steps over [0, 1].\npub const STEPS: usize = {steps};\n\
         /// Velocity evaluations per step.\npub const STAGES: usize = {stages};\n\
         /// Arena bytes: `flowrt::sampler::sample_arena_bytes(model, method, BATCH)`.\n\
         pub const ARENA_BYTES: usize = {arena};\n\
         /// Graph-arena bytes for BATCH rows: `Model::required_arena_bytes(BATCH)`.\n\
         pub const GRAPH_ARENA_BYTES: usize = {graph};\n\
         /// .frt file bytes.\npub const FRT_BYTES: usize = {frt_len};\n\
         /// Bytes of the weights section (constants in their stored types, with padding).\npub const WEIGHT_BYTES: usize = {wbytes};\n\
         /// Multiply-accumulates per velocity evaluation per row.\npub const MACS_PER_ROW: usize = {macs};\n",
        frt = frt.display(),
        noise = noise.display(),
        len = batch * dim,
        is_pipeline = pipeline.is_some(),
        has_decoder = decoder.is_some(),
        labels_len = labels.len(),
        stages = method.stages(),
        graph = model.required_arena_bytes(batch).expect("graph arena"),
        frt_len = bytes.len(),
        wbytes = model.weight_bytes(),
        macs = macs_per_row(&model),
    );
    let selected = if pipeline.is_some() {
        // Every stage's kernels (`flowrt::pipeline` builds its fields with `All`).
        "/// What the firmware links: everything (a multi-network file).\n\
         pub type Selected = flowrt::select::All;\n"
            .to_string()
    } else {
        flowrt::select::Needs::of(&model, &[method])
            .unwrap_or_else(|e| panic!("{}: {e}", frt.display()))
            .to_rust("Selected")
    };
    let method_index = flowrt::solver::Method::EVERY
        .iter()
        .position(|m| *m == method)
        .expect("a built-in method");
    let plan = format!(
        "{plan}/// Position of the method in `flowrt::solver::Method::EVERY`.\n\
         pub const METHOD_INDEX: usize = {method_index};\n{selected}"
    );
    std::fs::write(out.join("plan.rs"), plan).expect("write plan.rs");
}
