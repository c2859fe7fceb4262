//! Structure-aware fuzzing of the ONNX import: a fixture's `ModelProto` (tract-onnx's prost
//! types) is decoded once, mutated by a small program read from the fuzz input (attribute
//! ints, dropped / renamed inputs, retyped initializers, changed dims, op types, opset), encoded
//! again and exported with `flowrt_export::export_onnx`, the path `flowrt export` takes.
//!
//! Input: byte 0 picks the base model; then 4-byte instructions `[op, a, b, c]`.
//!
//! With `FLOWRT_FUZZ_KEEP_GOING=1` a panic does not stop the run: its location is printed
//! once (`PANIC-SITE file:line:col`) with the input that first hit it saved under
//! `artifacts/onnx_import/panic-*`, so one run lists every distinct panic site.
#![no_main]

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Mutex, Once, OnceLock};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tract_onnx::pb::{self, tensor_shape_proto::dimension, type_proto, ModelProto};

/// Small fixtures of different shapes: MLPs with `[x, t]`, a cfg model with a label, a
/// sigma-parameterized net, an op zoo, a decoder and a few-step (mean flow) model.
const BASES: &[&[u8]] = &[
    include_bytes!("../../tests/fixtures/moons_icfm/model.ts.onnx"),
    include_bytes!("../../tests/fixtures/moons_refiner/model.ts.onnx"),
    include_bytes!("../../tests/fixtures/moons_latent_decoder/model.ts.onnx"),
    include_bytes!("../../tests/fixtures/moons_cfg/model.ts.onnx"),
    include_bytes!("../../tests/fixtures/moons_opzoo/model.ts.onnx"),
    include_bytes!("../../tests/fixtures/moons_meanflow/model.ts.onnx"),
    include_bytes!("../../tests/fixtures/heat_rollout/model.ts.onnx"),
];

const OPS: &[&str] = &[
    "Gemm",
    "MatMul",
    "Add",
    "Mul",
    "Sub",
    "Div",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Concat",
    "Reshape",
    "Transpose",
    "Unsqueeze",
    "Squeeze",
    "Gather",
    "Slice",
    "Expand",
    "Conv",
    "Softmax",
    "Shape",
    "Cast",
    "Constant",
    "Where",
    "Pow",
    "Sqrt",
    "ReduceMean",
    "LayerNormalization",
    "Split",
    "Erf",
    "Flatten",
    "Identity",
    "Sin",
    "Cos",
    "Exp",
];

const INTS: [i64; 12] = [
    0,
    1,
    -1,
    2,
    3,
    -2,
    7,
    255,
    1 << 31,
    -(1 << 31),
    i64::MAX,
    i64::MIN,
];

fn bases() -> &'static [ModelProto] {
    static B: OnceLock<Vec<ModelProto>> = OnceLock::new();
    B.get_or_init(|| {
        BASES
            .iter()
            .map(|b| ModelProto::decode(*b).unwrap())
            .collect()
    })
}

fn int(c: u8) -> i64 {
    if c & 0x80 != 0 {
        INTS[(c & 0x7f) as usize % INTS.len()]
    } else {
        i64::from(c) - 16
    }
}

fn pick<T>(v: &mut [T], i: u8) -> Option<&mut T> {
    if v.is_empty() {
        None
    } else {
        let n = v.len();
        v.get_mut(i as usize % n)
    }
}

fn names(m: &ModelProto) -> Vec<String> {
    let g = m.graph.as_ref().unwrap();
    let mut n: Vec<String> = g.input.iter().map(|i| i.name.clone()).collect();
    n.extend(g.initializer.iter().map(|i| i.name.clone()));
    n.extend(g.node.iter().flat_map(|x| x.output.iter().cloned()));
    n
}

fn value_dims(v: &mut pb::ValueInfoProto) -> Option<&mut Vec<pb::tensor_shape_proto::Dimension>> {
    match v.r#type.as_mut()?.value.as_mut()? {
        type_proto::Value::TensorType(t) => Some(&mut t.shape.as_mut()?.dim),
    }
}

fn mutate(m: &mut ModelProto, prog: &[u8]) {
    for ins in prog.chunks_exact(4).take(16) {
        let [op, a, b, c] = [ins[0], ins[1], ins[2], ins[3]];
        let all = names(m);
        let g = m.graph.as_mut().unwrap();
        match op % 14 {
            0 => {
                if let Some(at) = pick(&mut g.node, a).and_then(|n| pick(&mut n.attribute, b)) {
                    at.i = int(c);
                    if let Some(x) = pick(&mut at.ints, c >> 4) {
                        *x = int(c);
                    }
                }
            }
            1 => {
                if let Some(n) = pick(&mut g.node, a) {
                    if !n.input.is_empty() {
                        let k = b as usize % n.input.len();
                        n.input.remove(k);
                    }
                }
            }
            2 => {
                if let Some(i) = pick(&mut g.node, a).and_then(|n| pick(&mut n.input, b)) {
                    *i = if c == 0 || all.is_empty() {
                        String::new()
                    } else {
                        all[c as usize % all.len()].clone()
                    };
                }
            }
            3 => {
                if let Some(t) = pick(&mut g.initializer, a) {
                    t.data_type = i32::from(b % 17);
                }
            }
            4 => {
                if let Some(t) = pick(&mut g.initializer, a) {
                    match c % 3 {
                        0 => {
                            if let Some(d) = pick(&mut t.dims, b) {
                                *d = int(c >> 2);
                            }
                        }
                        1 => {
                            t.dims.pop();
                        }
                        _ => t.dims.push(int(b)),
                    }
                }
            }
            5 => {
                if let Some(d) = pick(&mut g.input, a).and_then(value_dims) {
                    if let Some(d) = pick(d, b) {
                        d.value = Some(if c & 1 == 0 {
                            dimension::Value::DimValue(int(c >> 1))
                        } else {
                            dimension::Value::DimParam(["batch", "N", ""][c as usize % 3].into())
                        });
                    } else {
                        d.clear();
                    }
                }
            }
            6 => {
                if let Some(n) = pick(&mut g.node, a) {
                    n.op_type = OPS[b as usize % OPS.len()].into();
                }
            }
            7 => {
                if !g.node.is_empty() {
                    let k = a as usize % g.node.len();
                    g.node.remove(k);
                }
            }
            8 => {
                if let Some(n) = pick(&mut g.node, a) {
                    if n.input.len() >= 2 {
                        let k = b as usize % n.input.len();
                        let l = c as usize % n.input.len();
                        n.input.swap(k, l);
                    }
                }
            }
            9 => {
                if let Some(o) = pick(&mut m.opset_import, a) {
                    o.version = int(b);
                }
            }
            10 => {
                if let Some(t) = pick(&mut g.initializer, a) {
                    let keep = t.raw_data.len() * usize::from(b) / 256;
                    t.raw_data.truncate(keep);
                    let keep = t.float_data.len() * usize::from(b) / 256;
                    t.float_data.truncate(keep);
                }
            }
            11 => {
                if let Some(at) = pick(&mut g.node, a).and_then(|n| pick(&mut n.attribute, b)) {
                    at.f = [0.0, -1.0, f32::NAN, f32::INFINITY, 1e30, 0.5][c as usize % 6];
                    at.r#type = i32::from(c % 15);
                }
            }
            12 => {
                if let Some(v) = pick(&mut g.input, a).and_then(|v| v.r#type.as_mut()) {
                    if let Some(type_proto::Value::TensorType(t)) = v.value.as_mut() {
                        t.elem_type = i32::from(b % 17);
                    }
                }
            }
            _ => {
                if let Some(n) = pick(&mut g.node, a) {
                    if let Some(o) = pick(&mut n.output, b) {
                        *o = if all.is_empty() {
                            String::new()
                        } else {
                            all[c as usize % all.len()].clone()
                        };
                    }
                }
            }
        }
    }
}

fn model_path() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("flowrt-fuzz-onnx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("model.onnx")
    })
    .clone()
}

fn keep_going() -> bool {
    static K: OnceLock<bool> = OnceLock::new();
    *K.get_or_init(|| std::env::var_os("FLOWRT_FUZZ_KEEP_GOING").is_some_and(|v| v == "1"))
}

static SITE: Mutex<Option<String>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Some((&which, prog)) = data.split_first() else {
        return;
    };
    let mut m = bases()[which as usize % BASES.len()].clone();
    mutate(&mut m, prog);
    let path = model_path();
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let opts = flowrt_export::ExportOptions::default();
    if !keep_going() {
        let _ = flowrt_export::export_onnx(&path, &opts);
        return;
    }
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let loc = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            *SITE.lock().unwrap() = Some(format!("{loc} {}", msg.lines().next().unwrap_or("")));
        }))
    });
    if std::panic::catch_unwind(AssertUnwindSafe(|| {
        flowrt_export::export_onnx(&path, &opts)
    }))
    .is_err()
    {
        static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
        let site = SITE.lock().unwrap().take().unwrap_or_default();
        let loc = site.split(' ').next().unwrap_or("").to_string();
        let mut seen = SEEN.lock().unwrap();
        if seen.get_or_insert_with(HashSet::new).insert(loc) {
            eprintln!("PANIC-SITE {site}");
            let dir = PathBuf::from("artifacts/onnx_import");
            let _ = std::fs::create_dir_all(&dir);
            let h = data.iter().fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
            });
            let _ = std::fs::write(dir.join(format!("panic-{h:016x}")), data);
        }
    }
});
