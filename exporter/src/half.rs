//! Half-precision ONNX models: float16 / bfloat16 widened to float32 before tract sees them.
//!
//! A PyTorch model exported after `model.half()` (or with bf16 weights) has float16 /
//! bfloat16 initializers, `Constant` values, graph inputs and outputs, and `Cast`s to half.
//! flowrt computes in f32, and tract-onnx 0.23 has no bfloat16 type at all ("Unknown
//! DatumType Bfloat16"), so [`widen_model`] rewrites the decoded `ModelProto` first:
//!
//! * every float16 / bfloat16 tensor — initializers (inline, `int32_data` or external data),
//!   sparse initializer values, and tensor attributes (`Constant`'s `value`,
//!   `ConstantOfShape`'s `value`, ...) — becomes float32 holding exactly the same values
//!   (every half value is an f32 value: the conversion rounds nothing);
//! * every float16 / bfloat16 element type of the graph's inputs, outputs and value_info
//!   becomes float32;
//! * `Cast(to=FLOAT16 | BFLOAT16)` becomes `Cast(to=FLOAT)`.
//!
//! Subgraphs (attributes of If / Loop / Scan, which flowrt refuses later anyway) are
//! rewritten the same way. The result is the f32 evaluation of the half-precision weights:
//! no activation is rounded to half precision, also not at a `Cast` to half in the middle of
//! the graph (flowrt has no such rounding op). That is usually closer to the float32 model the
//! weights came from than PyTorch's or ONNX Runtime's own half-precision run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::type_proto;
use tract_onnx::pb::{GraphProto, ModelProto, TensorProto, TypeProto};
use tract_onnx::prelude::f16;

const FLOAT: i32 = DataType::Float as i32;
const FLOAT16: i32 = DataType::Float16 as i32;
const BFLOAT16: i32 = DataType::Bfloat16 as i32;

fn is_half(dt: i32) -> bool {
    dt == FLOAT16 || dt == BFLOAT16
}

/// What [`widen_model`] changed (all zero: the model had no float16 / bfloat16).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Widened {
    /// Tensors (initializers, tensor attributes, sparse values) widened to float32.
    pub tensors: usize,
    /// Input / output / value_info element types made float32.
    pub types: usize,
    /// `Cast` nodes whose target became float32.
    pub casts: usize,
}

impl Widened {
    /// Nothing was half precision.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Widens every float16 / bfloat16 tensor, type and `Cast` target of `model` to float32 (see
/// the module docs). External data of a half tensor is read from `dir` (the model's folder)
/// and inlined; other external tensors are left for tract to read.
///
/// Errors: a half tensor whose data does not match its dims, or whose external data cannot
/// be read (missing file, out of range, a location outside `dir`).
pub fn widen_model(model: &mut ModelProto, dir: &Path) -> Result<Widened> {
    let mut w = Widened::default();
    let mut files = HashMap::new();
    if let Some(g) = model.graph.as_mut() {
        widen_graph(g, dir, &mut files, &mut w)?;
    }
    Ok(w)
}

fn widen_graph(
    g: &mut GraphProto,
    dir: &Path,
    files: &mut HashMap<PathBuf, Vec<u8>>,
    w: &mut Widened,
) -> Result<()> {
    for t in &mut g.initializer {
        widen_tensor(t, dir, files, w)?;
    }
    for s in &mut g.sparse_initializer {
        if let Some(v) = s.values.as_mut() {
            widen_tensor(v, dir, files, w)?;
        }
    }
    for vi in g
        .input
        .iter_mut()
        .chain(&mut g.output)
        .chain(&mut g.value_info)
    {
        if let Some(t) = vi.r#type.as_mut() {
            widen_type(t, w);
        }
    }
    for node in &mut g.node {
        let cast = node.op_type == "Cast" && matches!(node.domain.as_str(), "" | "ai.onnx");
        for a in &mut node.attribute {
            if cast && a.name == "to" && (a.i == i64::from(FLOAT16) || a.i == i64::from(BFLOAT16)) {
                a.i = i64::from(FLOAT);
                w.casts += 1;
            }
            if let Some(t) = a.t.as_mut() {
                widen_tensor(t, dir, files, w)?;
            }
            for t in &mut a.tensors {
                widen_tensor(t, dir, files, w)?;
            }
            if let Some(v) = a.sparse_tensor.as_mut().and_then(|s| s.values.as_mut()) {
                widen_tensor(v, dir, files, w)?;
            }
            for s in &mut a.sparse_tensors {
                if let Some(v) = s.values.as_mut() {
                    widen_tensor(v, dir, files, w)?;
                }
            }
            for t in &mut a.type_protos {
                widen_type(t, w);
            }
            if let Some(sub) = a.g.as_mut() {
                widen_graph(sub, dir, files, w)?;
            }
            for sub in &mut a.graphs {
                widen_graph(sub, dir, files, w)?;
            }
        }
    }
    Ok(())
}

fn widen_type(t: &mut TypeProto, w: &mut Widened) {
    if let Some(type_proto::Value::TensorType(tt)) = t.value.as_mut() {
        if is_half(tt.elem_type) {
            tt.elem_type = FLOAT;
            w.types += 1;
        }
    }
}

/// The f32 value of float16 bits (exact: every f16 is an f32).
pub fn f16_bits_to_f32(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

/// The f32 value of bfloat16 bits (exact: a bfloat16 is the upper half of an f32).
pub fn bf16_bits_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

fn widen_tensor(
    t: &mut TensorProto,
    dir: &Path,
    files: &mut HashMap<PathBuf, Vec<u8>>,
    w: &mut Widened,
) -> Result<()> {
    if !is_half(t.data_type) {
        return Ok(());
    }
    let what = if t.data_type == FLOAT16 {
        "float16"
    } else {
        "bfloat16"
    };
    let mut count = 1usize;
    for &d in &t.dims {
        let Some(n) = usize::try_from(d).ok().and_then(|d| count.checked_mul(d)) else {
            bail!("{what} tensor `{}`: invalid dims {:?}", t.name, t.dims);
        };
        count = n;
    }
    // External data of a half tensor must be read here, to widen it.
    crate::embed::inline_tensor(t, dir, files)?;
    let bits: Vec<u16> = if !t.raw_data.is_empty() {
        if Some(t.raw_data.len()) != count.checked_mul(2) {
            bail!(
                "{what} tensor `{}`: {} bytes of data for dims {:?} ({count} values of 2 bytes)",
                t.name,
                t.raw_data.len(),
                t.dims
            );
        }
        t.raw_data
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect()
    } else {
        // The other storage form: one value's bits per int32_data entry.
        if t.int32_data.len() != count {
            bail!(
                "{what} tensor `{}`: {} values for dims {:?} ({count} expected)",
                t.name,
                t.int32_data.len(),
                t.dims
            );
        }
        t.int32_data.iter().map(|&x| x as u16).collect()
    };
    let widen = if t.data_type == FLOAT16 {
        f16_bits_to_f32
    } else {
        bf16_bits_to_f32
    };
    t.raw_data = bits
        .into_iter()
        .flat_map(|b| widen(b).to_le_bytes())
        .collect();
    t.int32_data.clear();
    t.float_data.clear();
    t.data_type = FLOAT;
    w.tensors += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{AttributeProto, NodeProto, ValueInfoProto};

    #[test]
    fn conversions_are_exact() {
        assert_eq!(f16_bits_to_f32(0x3C00), 1.0);
        assert_eq!(f16_bits_to_f32(0xC000), -2.0);
        assert_eq!(f16_bits_to_f32(0x7BFF), 65504.0);
        assert_eq!(f16_bits_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_bits_to_f32(0x7C00), f32::INFINITY);
        assert!(f16_bits_to_f32(0x7E00).is_nan());
        assert_eq!(bf16_bits_to_f32(0x3F80), 1.0);
        assert_eq!(bf16_bits_to_f32(0xC0A0), -5.0);
        assert_eq!(bf16_bits_to_f32(0x0001), f32::from_bits(0x0001_0000));
        // Round trips through the f16 type of the same crate tract uses.
        for b in (0u16..=0xFFFF).step_by(7) {
            let x = f16_bits_to_f32(b);
            if !x.is_nan() {
                assert_eq!(f16::from_f32(x).to_bits(), b);
            }
        }
    }

    fn tensor(name: &str, dt: DataType, dims: Vec<i64>) -> TensorProto {
        TensorProto {
            name: name.into(),
            data_type: dt as i32,
            dims,
            ..Default::default()
        }
    }

    fn value_info(name: &str, dt: DataType) -> ValueInfoProto {
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: dt as i32,
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn widens_tensors_types_and_casts() {
        let mut raw = tensor("w", DataType::Float16, vec![2]);
        raw.raw_data = vec![0x00, 0x3C, 0x00, 0xC0];
        let mut packed = tensor("b", DataType::Bfloat16, vec![1]);
        packed.int32_data = vec![0x3F80];
        let keep = tensor("i", DataType::Int64, vec![1]);
        let cast = NodeProto {
            op_type: "Cast".into(),
            attribute: vec![AttributeProto {
                name: "to".into(),
                i: i64::from(BFLOAT16),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut value = tensor("c", DataType::Float16, vec![]);
        value.int32_data = vec![0x3800];
        let constant = NodeProto {
            op_type: "Constant".into(),
            attribute: vec![AttributeProto {
                name: "value".into(),
                t: Some(value),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut m = ModelProto {
            graph: Some(GraphProto {
                initializer: vec![raw, packed, keep.clone()],
                input: vec![value_info("x", DataType::Float16)],
                output: vec![value_info("v", DataType::Bfloat16)],
                node: vec![cast, constant],
                ..Default::default()
            }),
            ..Default::default()
        };
        let w = widen_model(&mut m, Path::new(".")).unwrap();
        assert_eq!(
            w,
            Widened {
                tensors: 3,
                types: 2,
                casts: 1
            }
        );
        let g = m.graph.unwrap();
        let f32s = |t: &TensorProto| -> Vec<f32> {
            assert_eq!(t.data_type, FLOAT);
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        };
        assert_eq!(f32s(&g.initializer[0]), [1.0, -2.0]);
        assert_eq!(f32s(&g.initializer[1]), [1.0]);
        assert!(g.initializer[1].int32_data.is_empty());
        assert_eq!(g.initializer[2], keep);
        assert_eq!(g.node[0].attribute[0].i, i64::from(FLOAT));
        assert_eq!(f32s(g.node[1].attribute[0].t.as_ref().unwrap()), [0.5]);
        for vi in g.input.iter().chain(&g.output) {
            let Some(type_proto::Value::TensorType(t)) =
                vi.r#type.as_ref().and_then(|t| t.value.as_ref())
            else {
                panic!()
            };
            assert_eq!(t.elem_type, FLOAT);
        }
    }

    #[test]
    fn bad_half_data_is_an_error() {
        for (t, want) in [
            (
                TensorProto {
                    raw_data: vec![0; 3],
                    ..tensor("w", DataType::Float16, vec![2])
                },
                "3 bytes of data",
            ),
            (
                TensorProto {
                    int32_data: vec![1],
                    ..tensor("w", DataType::Bfloat16, vec![2, 2])
                },
                "1 values",
            ),
            (tensor("w", DataType::Float16, vec![-1]), "invalid dims"),
        ] {
            let mut m = ModelProto {
                graph: Some(GraphProto {
                    initializer: vec![t],
                    ..Default::default()
                }),
                ..Default::default()
            };
            let e = widen_model(&mut m, Path::new(".")).unwrap_err();
            assert!(format!("{e:#}").contains(want), "{e:#}");
            assert!(format!("{e:#}").contains("`w`"), "{e:#}");
        }
    }
}
