//! ONNX checks that run on the raw `ModelProto` before tract sees it.
//!
//! tract names its own ops in errors (`Reduce<Sum>`, `EinSum`), not the ONNX node, and it
//! accepts some models that are invalid at their declared opset (an attribute that only
//! exists in a later opset is read anyway). [`check_model`] refuses, with a message naming
//! the node (its name, or `#index` if unnamed), its op type and the opset of its domain:
//!
//! 1. nodes that are invalid at the model's opset: a custom domain (anything but `""` /
//!    `ai.onnx`), an op that does not exist yet ([`OP_SINCE`]), or an attribute that does not
//!    exist at that opset ([`ATTR_RULES`]) — "model is invalid: ...";
//! 2. op types outside [`SUPPORTED_OPS`], all of them at once (de-duplicated, with a count);
//! 3. graph inputs that are not float32 / float16 / bfloat16 / int64 / int32 (half-precision
//!    inputs are imported as float32: [`crate::half`] widens the graph before tract);
//! 4. initializers and tensor attributes (`Constant` values) of an element type tract cannot
//!    load (complex, float8, 4-bit, undefined or unknown codes), or a string tensor in
//!    `raw_data` — named, instead of tract's "Unknown DatumType" without a name;
//! 5. structure (`check_structure`), where tract would panic or misread: node inputs with no
//!    producer, empty input names where the op has no optional input, graph outputs no node
//!    produces, constant tensors whose stored data does not match their dims (checked
//!    arithmetic), and Squeeze / Unsqueeze axes, Gather constant indices, Transpose perms and
//!    Conv / pooling strides / pads / dilations out of range where the ranks are known from
//!    the file. What slips through is contained by [`crate::contain`].
//!
//! Only the main graph is checked (the ops with subgraphs — If, Loop, Scan — are refused as
//! unsupported); external data files are not read.

use std::path::Path;

use anyhow::{bail, Context, Result};
use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::type_proto;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};

/// ONNX op types (default domain) that flowrt's lowering can handle.
///
/// This list must match what `lower/` can lower after tract's import and decluttering (a new
/// op lowered there belongs here, and an op listed here must lower — or fail there with a
/// message about its attributes or shapes, never silently). Shape-only ops (`Shape`,
/// `ConstantOfShape`, `Range`, `Size`, and the integer arithmetic around them) are allowed
/// because they fold away for a symbolic batch; if one does not, the lowering refuses the
/// run-time integer value it would produce. `HardSigmoid`, `PRelu` and `Softsign` are kept
/// because tract expands them into element-wise ops the lowering handles (Mul / Add / Min /
/// Max; Mul / Greater / Where; Abs / Add / Div), checked against onnxruntime by the
/// `tests/fixtures/ops` cases.
pub const SUPPORTED_OPS: &[&str] = &[
    "Abs",
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvTranspose",
    "Cos",
    "DepthToSpace",
    "Div",
    "Dropout",
    "Einsum",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "GroupNormalization",
    "HardSigmoid",
    "Identity",
    "InstanceNormalization",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "MatMul",
    "Max",
    "MaxPool",
    "Mean",
    "MeanVarianceNormalization",
    "Min",
    "Mish",
    "Mul",
    "Neg",
    "PRelu",
    "Pad",
    "Pow",
    "RMSNormalization",
    "Range",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "RotaryEmbedding",
    "Round",
    "Selu",
    "Shape",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Size",
    "Slice",
    "Softmax",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Swish",
    "Tanh",
    "ThresholdedRelu",
    "Tile",
    "Transpose",
    "Unsqueeze",
    "Upsample",
    "Where",
];

/// An attribute that exists only in a range of opsets of the default domain.
#[derive(Debug, Clone, Copy)]
pub struct AttrRule {
    /// ONNX op type.
    pub op: &'static str,
    /// Attribute name.
    pub attr: &'static str,
    /// First opset with the attribute (1: always had it).
    pub since: i64,
    /// First opset without it (`None`: still there).
    pub removed: Option<i64>,
    /// What replaced it, for the message ("" if nothing).
    pub instead: &'static str,
}

const fn added(op: &'static str, attr: &'static str, since: i64) -> AttrRule {
    AttrRule {
        op,
        attr,
        since,
        removed: None,
        instead: "",
    }
}

const fn moved(
    op: &'static str,
    attr: &'static str,
    removed: i64,
    instead: &'static str,
) -> AttrRule {
    AttrRule {
        op,
        attr,
        since: 1,
        removed: Some(removed),
        instead,
    }
}

/// Rows of [`ATTR_RULES`] for several ops at once: `rule [OP, ...] (ARGS)` stands for a
/// `rule(OP, ARGS)` row for each op.
macro_rules! per_op {
    (@row $rule:ident $op:literal ($($arg:expr),+)) => {
        $rule($op, $($arg),+)
    };
    ($($rule:ident [$($op:literal),+] $args:tt),* $(,)?) => {
        &[$($(per_op!(@row $rule $op $args)),+),*]
    };
}

/// Attributes valid only in some opsets (default domain). Add a row for each further rule.
pub const ATTR_RULES: &[AttrRule] = per_op![
    moved ["Add", "Sub", "Mul", "Div"] ("broadcast", 7, "inputs broadcast numpy-style"),
    moved ["Add", "Sub", "Mul", "Div"] ("axis", 7, "inputs broadcast numpy-style"),
    moved ["Gemm"] ("broadcast", 7, "C broadcasts numpy-style"),
    moved ["BatchNormalization"] ("spatial", 9, ""),
    moved ["Reshape"] ("shape", 5, "it is the second input"),
    added ["Reshape"] ("allowzero", 14),
    moved ["Slice"] ("starts", 10, "it is an input"),
    moved ["Slice"] ("ends", 10, "it is an input"),
    moved ["Slice"] ("axes", 10, "it is an input"),
    moved ["Upsample"] ("scales", 9, "it is the second input"),
    moved ["Pad"] ("pads", 11, "it is the second input"),
    moved ["Pad"] ("value", 11, "it is the `constant_value` input"),
    moved ["Clip"] ("min", 11, "it is the second input"),
    moved ["Clip"] ("max", 11, "it is the third input"),
    moved ["Dropout"] ("ratio", 12, "it is the second input"),
    moved ["Split"] ("split", 13, "it is the second input"),
    added ["Split"] ("num_outputs", 18),
    moved ["Squeeze", "Unsqueeze", "ReduceSum"] ("axes", 13, "it is the second input"),
    added ["ReduceSum"] ("noop_with_empty_axes", 13),
    moved [
        "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
        "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"
    ] ("axes", 18, "it is the second input"),
    added [
        "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
        "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"
    ] ("noop_with_empty_axes", 18),
    added ["Resize"] ("coordinate_transformation_mode", 11),
    added ["Resize"] ("cubic_coeff_a", 11),
    added ["Resize"] ("exclude_outside", 11),
    added ["Resize"] ("extrapolation_value", 11),
    added ["Resize"] ("nearest_mode", 11),
    added ["Resize"] ("antialias", 18),
    added ["Resize"] ("axes", 18),
    added ["Resize"] ("keep_aspect_ratio_policy", 18),
    added ["Cast"] ("saturate", 19),
];

/// The first opset of the default domain with each op (ops not listed exist since opset 1
/// or are refused as unsupported anyway).
pub const OP_SINCE: &[(&str, i64)] = &[
    ("Expand", 8),
    ("ConstantOfShape", 9),
    ("Erf", 9),
    ("Where", 9),
    ("Resize", 10),
    ("Range", 11),
    ("Einsum", 12),
    ("GreaterOrEqual", 12),
    ("LessOrEqual", 12),
    ("LayerNormalization", 17),
    ("GroupNormalization", 18),
    ("Gelu", 20),
];

/// Graph input element types flowrt accepts (`x`, `t`... are f32 — float16 / bfloat16 ones
/// are widened to f32 with the rest of the graph; labels are integers).
const INPUT_TYPES: &[DataType] = &[
    DataType::Float,
    DataType::Float16,
    DataType::Bfloat16,
    DataType::Int64,
    DataType::Int32,
];

/// Element types of initializers and tensor attributes the import can load (tract's types;
/// float16 / bfloat16 are widened to float32 first, see [`crate::half`]).
const TENSOR_TYPES: &[DataType] = &[
    DataType::Float,
    DataType::Float16,
    DataType::Bfloat16,
    DataType::Double,
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::Uint8,
    DataType::Uint16,
    DataType::Uint32,
    DataType::Uint64,
    DataType::Bool,
    DataType::String,
];

/// The ONNX name of an element type code ("float8e4m3fn"; "data type N" if unknown).
fn dtype_name(code: i32) -> String {
    DataType::try_from(code)
        .map(|d| d.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| format!("data type {code}"))
}

/// Why a constant tensor cannot be imported, if it cannot.
fn tensor_problem(t: &TensorProto) -> Option<String> {
    let dt = DataType::try_from(t.data_type).ok();
    if !dt.is_some_and(|dt| TENSOR_TYPES.contains(&dt)) {
        return Some(format!(
            "is {}: flowrt imports float32, float16 / bfloat16 (widened to float32), float64, \
             integer and bool constants",
            dtype_name(t.data_type)
        ));
    }
    if dt == Some(DataType::String) && !t.raw_data.is_empty() {
        return Some("is a string tensor stored in raw_data, which ONNX does not allow".into());
    }
    None
}

/// Reads and decodes `path` as an ONNX `ModelProto` and runs [`check_model`].
///
/// Errors: the file cannot be read or is not a `ModelProto`, or the model fails a check.
pub fn check_file(path: &Path) -> Result<()> {
    let bytes = crate::read_onnx(path)?;
    check_bytes(&bytes).with_context(|| format!("checking ONNX model {}", path.display()))
}

/// Decodes ONNX bytes as a `ModelProto` and runs [`check_model`].
///
/// Errors: the bytes are not a `ModelProto`, or the model fails a check.
pub fn check_bytes(bytes: &[u8]) -> Result<()> {
    let model = ModelProto::decode(bytes).context("not an ONNX ModelProto")?;
    check_model(&model)
}

/// The opset a node's domain is imported at (`None`: the model does not import it).
fn opset_of(model: &ModelProto, domain: &str) -> Option<i64> {
    let default = is_default_domain(domain);
    model
        .opset_import
        .iter()
        .find(|o| {
            if default {
                is_default_domain(&o.domain)
            } else {
                o.domain == domain
            }
        })
        .map(|o| o.version)
}

fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// A node's name, or `#index` if it has none.
fn node_name(ix: usize, node: &NodeProto) -> String {
    if node.name.is_empty() {
        format!("#{ix}")
    } else {
        node.name.clone()
    }
}

/// "node `name` (Op, opset N)"; a custom-domain op is written `domain.Op`.
fn node_label(ix: usize, node: &NodeProto, opset: Option<i64>) -> String {
    let name = node_name(ix, node);
    let op = if is_default_domain(&node.domain) {
        node.op_type.clone()
    } else {
        format!("{}.{}", node.domain, node.op_type)
    };
    match opset {
        Some(v) => format!("node `{name}` ({op}, opset {v})"),
        None => format!("node `{name}` ({op}, domain not imported)"),
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Checks an ONNX model before tract imports it (see the module docs).
///
/// Errors: one error listing every problem found: invalid nodes for the model's opset (or
/// custom-domain nodes), op types flowrt does not support, graph inputs of a type other than
/// float32 / float16 / bfloat16 / int64 / int32, and initializers or tensor attributes of a
/// type the import cannot load.
pub fn check_model(model: &ModelProto) -> Result<()> {
    let Some(graph) = model.graph.as_ref() else {
        bail!("model is invalid: the ModelProto has no graph");
    };
    let default_opset = opset_of(model, "");
    let mut invalid = Vec::new();
    // (op type, label of its first node, names of its other nodes), in first-seen order.
    let mut unsupported: Vec<(&str, String, Vec<String>)> = Vec::new();
    if default_opset.is_none() && graph.node.iter().any(|n| is_default_domain(&n.domain)) {
        invalid.push("the model imports no opset for the default domain (opset_import)".into());
    }
    // Values computed from a graph input (not only from its shape).
    let mut data_dependent: std::collections::HashSet<&str> = graph
        .input
        .iter()
        .filter(|i| !graph.initializer.iter().any(|t| t.name == i.name))
        .map(|i| i.name.as_str())
        .collect();
    for (ix, node) in graph.node.iter().enumerate() {
        if !is_default_domain(&node.domain) {
            let label = node_label(ix, node, opset_of(model, &node.domain));
            let local = model.functions.iter().any(|f| {
                f.name.as_deref() == Some(node.op_type.as_str())
                    && f.domain.as_deref() == Some(node.domain.as_str())
            });
            let hint = if local {
                " (it calls a model-local function; inline it, e.g. with onnx.inliner, or \
                 re-export without functions)"
            } else {
                ""
            };
            invalid.push(format!(
                "{label}: custom op domain `{}` is not supported{hint}",
                node.domain
            ));
            continue;
        }
        let label = node_label(ix, node, default_opset);
        // Without a declared opset (already reported) only the supported-op check applies.
        let opset = default_opset.unwrap_or(i64::MAX);
        if let Some((_, since)) = OP_SINCE.iter().find(|(op, _)| *op == node.op_type) {
            if opset < *since {
                invalid.push(format!(
                    "{label}: op `{}` does not exist before opset {since}",
                    node.op_type
                ));
            }
        }
        for a in &node.attribute {
            for rule in ATTR_RULES
                .iter()
                .filter(|r| r.op == node.op_type && r.attr == a.name)
            {
                if opset < rule.since {
                    invalid.push(format!(
                        "{label}: attribute `{}` does not exist before opset {}",
                        a.name, rule.since
                    ));
                } else if let Some(removed) = rule
                    .removed
                    .filter(|r| default_opset.is_some() && opset >= *r)
                {
                    let instead = if rule.instead.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", rule.instead)
                    };
                    invalid.push(format!(
                        "{label}: attribute `{}` does not exist since opset {removed}{instead}",
                        a.name
                    ));
                }
            }
        }
        // An op outside the list is refused only where it computes on run-time data: in a
        // constant or shape-only subgraph (Shape, Size cut the dependence) tract folds it.
        let runtime = node
            .input
            .iter()
            .any(|i| !i.is_empty() && data_dependent.contains(i.as_str()));
        if runtime && !matches!(node.op_type.as_str(), "Shape" | "Size") {
            data_dependent.extend(node.output.iter().map(String::as_str));
        }
        if runtime && !SUPPORTED_OPS.contains(&node.op_type.as_str()) {
            match unsupported.iter_mut().find(|(op, ..)| *op == node.op_type) {
                Some((.., others)) => others.push(node_name(ix, node)),
                None => unsupported.push((&node.op_type, label, Vec::new())),
            }
        }
    }

    let mut dtypes = Vec::new();
    for input in &graph.input {
        // Old exporters list initializers among the inputs; they are constants, not inputs.
        if graph.initializer.iter().any(|t| t.name == input.name) {
            continue;
        }
        let Some(type_proto::Value::TensorType(t)) =
            input.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            continue;
        };
        let dt = DataType::try_from(t.elem_type).ok();
        // An undeclared element type is left to the import (it types inputs as f32).
        if dt.is_some_and(|dt| dt == DataType::Undefined || INPUT_TYPES.contains(&dt)) {
            continue;
        }
        let name = dtype_name(t.elem_type);
        let hint = match dt {
            Some(DataType::Double) => {
                "flowrt computes in f32; re-export in float32 (float16 / bfloat16 are accepted)"
            }
            _ => {
                "flowrt accepts float32 / float16 / bfloat16 inputs (and int64 / int32 class \
                 labels)"
            }
        };
        dtypes.push(format!("graph input `{}` is {name}: {hint}", input.name));
    }

    for t in &graph.initializer {
        if let Some(why) = tensor_problem(t) {
            dtypes.push(format!("initializer `{}` {why}", t.name));
        }
    }
    for (ix, node) in graph.node.iter().enumerate() {
        for a in &node.attribute {
            for t in a.t.iter().chain(&a.tensors) {
                if let Some(why) = tensor_problem(t) {
                    let label = node_label(ix, node, opset_of(model, &node.domain));
                    dtypes.push(format!("{label}: attribute `{}` {why}", a.name));
                }
            }
        }
    }

    let mut problems = Vec::new();
    check_structure(graph, default_opset, &mut invalid);
    if !invalid.is_empty() {
        problems.push(format!("model is invalid: {}", invalid.join("; ")));
    }
    if !unsupported.is_empty() {
        let summary: Vec<String> = unsupported
            .iter()
            .map(|(op, _, others)| format!("{op}: {}", plural(others.len() + 1, "node")))
            .collect();
        let details: Vec<String> = unsupported
            .iter()
            .map(|(op, first, others)| {
                let mut line = format!("{first}: op `{op}` is not supported by flowrt");
                if !others.is_empty() {
                    const SHOWN: usize = 5;
                    let mut names: Vec<String> = others
                        .iter()
                        .take(SHOWN)
                        .map(|n| format!("`{n}`"))
                        .collect();
                    if others.len() > SHOWN {
                        names.push("...".into());
                    }
                    line += &format!(
                        " (also {}: {})",
                        plural(others.len(), "more node"),
                        names.join(", ")
                    );
                }
                line
            })
            .collect();
        problems.push(format!(
            "{} not supported by flowrt ({}): {}",
            plural(unsupported.len(), "op type"),
            summary.join(", "),
            details.join("; ")
        ));
    }
    problems.extend(dtypes);
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("; "))
    }
}

/// Input positions where an ONNX op allows an empty name (an absent optional input). Ops of
/// [`SUPPORTED_OPS`] not listed here allow none; ops outside it are not checked (they are
/// refused, or folded away by tract, and a panic there is contained by [`crate::contain`]).
const OPTIONAL_INPUTS: &[(&str, &[usize])] = &[
    ("Clip", &[1, 2]),
    ("Conv", &[2]),
    ("ConvTranspose", &[2]),
    ("Dropout", &[1, 2]),
    ("Gemm", &[2]),
    ("LayerNormalization", &[2]),
    ("Pad", &[2, 3]),
    ("RMSNormalization", &[]),
    ("ReduceL1", &[1]),
    ("ReduceL2", &[1]),
    ("ReduceLogSum", &[1]),
    ("ReduceLogSumExp", &[1]),
    ("ReduceMax", &[1]),
    ("ReduceMean", &[1]),
    ("ReduceMin", &[1]),
    ("ReduceProd", &[1]),
    ("ReduceSum", &[1]),
    ("ReduceSumSquare", &[1]),
    ("Resize", &[1, 2, 3]),
    ("RotaryEmbedding", &[3]),
    ("Slice", &[3, 4]),
    ("Split", &[1]),
    ("Squeeze", &[1]),
];

/// Bytes per element of a tensor stored in `raw_data` (`None`: string or unknown).
fn item_size(dt: DataType) -> Option<u64> {
    use DataType as D;
    Some(match dt {
        D::Bool | D::Int8 | D::Uint8 => 1,
        D::Int16 | D::Uint16 | D::Float16 | D::Bfloat16 => 2,
        D::Float | D::Int32 | D::Uint32 => 4,
        D::Double | D::Int64 | D::Uint64 | D::Complex64 => 8,
        D::Complex128 => 16,
        _ => return None,
    })
}

/// Why a constant tensor's stored data does not match its dims, if it does not (checked
/// arithmetic; external data is checked where it is read).
fn tensor_size_problem(t: &TensorProto) -> Option<String> {
    use tract_onnx::pb::tensor_proto::DataLocation;
    if t.data_location == Some(DataLocation::External as i32) {
        return None;
    }
    let mut count: u64 = 1;
    for &d in &t.dims {
        let Ok(d) = u64::try_from(d) else {
            return Some(format!("has a negative dim in dims {:?}", t.dims));
        };
        match count.checked_mul(d) {
            Some(c) => count = c,
            None => return Some(format!("has dims {:?} whose size overflows", t.dims)),
        }
    }
    let dt = DataType::try_from(t.data_type).ok()?;
    if !t.raw_data.is_empty() {
        let item = item_size(dt)?;
        let want = count.checked_mul(item);
        let got = t.raw_data.len() as u64;
        if want != Some(got) {
            return Some(format!(
                "has {got} bytes of raw_data, but dims {:?} of {} need {}",
                t.dims,
                dtype_name(t.data_type),
                want.map_or_else(|| "more than 2^64".to_string(), |w| w.to_string())
            ));
        }
        return None;
    }
    use DataType as D;
    let stored = match dt {
        D::Float => t.float_data.len(),
        D::Complex64 => t.float_data.len() / 2,
        D::Int32
        | D::Int16
        | D::Int8
        | D::Uint16
        | D::Uint8
        | D::Bool
        | D::Float16
        | D::Bfloat16 => t.int32_data.len(),
        D::Int64 => t.int64_data.len(),
        D::Double => t.double_data.len(),
        D::Complex128 => t.double_data.len() / 2,
        D::Uint32 | D::Uint64 => t.uint64_data.len(),
        D::String => t.string_data.len(),
        _ => return None,
    } as u64;
    (stored != count).then(|| {
        format!(
            "has {stored} stored values, but dims {:?} need {count}",
            t.dims
        )
    })
}

/// The int64 values of a constant tensor (int64_data or little-endian raw_data).
fn const_i64(t: &TensorProto) -> Option<Vec<i64>> {
    if t.data_type != DataType::Int64 as i32 {
        return None;
    }
    if !t.raw_data.is_empty() {
        if !t.raw_data.len().is_multiple_of(8) {
            return None;
        }
        return Some(
            t.raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        );
    }
    Some(t.int64_data.clone())
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a tract_onnx::pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// Structural checks of the main graph, each naming the node (or tensor) and the cause:
/// every input has a producer (a node, an initializer or a graph input) or is empty where the
/// op allows an absent optional input; every graph output is produced; initializer and
/// `Constant` sizes match their dims (checked arithmetic); Squeeze / Unsqueeze axes, Gather
/// constant indices, Transpose perms and Conv / pooling strides, pads, dilations and kernel
/// shapes are in range where the ranks involved are known from the file (declared input
/// shapes, constants, and a few shape-preserving ops).
fn check_structure(
    graph: &tract_onnx::pb::GraphProto,
    opset: Option<i64>,
    problems: &mut Vec<String>,
) {
    use std::collections::{HashMap, HashSet};
    let mut available: HashSet<&str> = HashSet::new();
    available.extend(graph.input.iter().map(|i| i.name.as_str()));
    available.extend(graph.initializer.iter().map(|t| t.name.as_str()));
    for n in &graph.node {
        available.extend(
            n.output
                .iter()
                .filter(|o| !o.is_empty())
                .map(String::as_str),
        );
    }
    // Constant tensors by name (initializers and Constant nodes' `value`).
    let mut consts: HashMap<&str, &TensorProto> = HashMap::new();
    for t in &graph.initializer {
        consts.insert(&t.name, t);
        if let Some(why) = tensor_size_problem(t) {
            problems.push(format!("initializer `{}` {why}", t.name));
        }
    }
    // Known ranks, and the values of 1-D Shape outputs' lengths.
    let mut rank: HashMap<&str, usize> = HashMap::new();
    for i in &graph.input {
        if let Some(type_proto::Value::TensorType(t)) =
            i.r#type.as_ref().and_then(|t| t.value.as_ref())
        {
            if let Some(s) = &t.shape {
                rank.insert(&i.name, s.dim.len());
            }
        }
    }
    for t in &graph.initializer {
        rank.insert(&t.name, t.dims.len());
    }
    // Length of a 1-D value (a Shape output: the rank of its input).
    let mut length: HashMap<&str, usize> = HashMap::new();
    // What the nodes so far (and the graph inputs and initializers) produce: ONNX graphs are
    // topologically sorted, and the rank checks below follow that order (a node fed by a
    // later one had its rank unknown; tract's LayerNorm rules then looped on a rank-0 input,
    // found by fuzz/onnx_import).
    let mut produced: HashSet<&str> = HashSet::new();
    produced.extend(graph.input.iter().map(|i| i.name.as_str()));
    produced.extend(graph.initializer.iter().map(|t| t.name.as_str()));
    for (ix, node) in graph.node.iter().enumerate() {
        if !is_default_domain(&node.domain) {
            produced.extend(node.output.iter().map(String::as_str));
            continue;
        }
        let label = node_label(ix, node, opset);
        let op = node.op_type.as_str();
        let optional = OPTIONAL_INPUTS
            .iter()
            .find(|(o, _)| *o == op)
            .map(|(_, ix)| *ix);
        let known = optional.is_some() || SUPPORTED_OPS.contains(&op);
        for (k, input) in node.input.iter().enumerate() {
            if input.is_empty() {
                if known && !optional.unwrap_or(&[]).contains(&k) {
                    problems.push(format!(
                        "{label}: input {k} is empty, and {op} has no optional input {k}"
                    ));
                }
            } else if !available.contains(input.as_str()) {
                problems.push(format!(
                    "{label}: input {k} `{input}` has no producer (no node, initializer or \
                     graph input of that name)"
                ));
            } else if !produced.contains(input.as_str()) {
                problems.push(format!(
                    "{label}: input {k} `{input}` is produced by a later node (ONNX graphs \
                     are topologically sorted)"
                ));
            }
        }
        produced.extend(
            node.output
                .iter()
                .filter(|o| !o.is_empty())
                .map(String::as_str),
        );
        if op == "Constant" {
            if let (Some(out), Some(t)) = (
                node.output.first(),
                attr(node, "value").and_then(|a| a.t.as_ref()),
            ) {
                if let Some(why) = tensor_size_problem(t) {
                    problems.push(format!("{label}: attribute `value` {why}"));
                } else {
                    consts.insert(out, t);
                    rank.insert(out, t.dims.len());
                }
            }
            continue;
        }
        let in_rank = |k: usize| {
            node.input
                .get(k)
                .and_then(|i| rank.get(i.as_str()).copied())
        };
        let const_ints = |k: usize| {
            node.input
                .get(k)
                .and_then(|i| consts.get(i.as_str()))
                .and_then(|t| const_i64(t))
        };
        let axes = |k: usize| {
            attr(node, "axes")
                .map(|a| a.ints.clone())
                .or_else(|| const_ints(k))
        };
        // An `axis` attribute out of range: tract loops (LayerNormalization, for a negative
        // axis below -rank) or indexes out of bounds on some of these.
        if matches!(
            op,
            "LayerNormalization"
                | "RMSNormalization"
                | "Softmax"
                | "LogSoftmax"
                | "Concat"
                | "Split"
                | "Flatten"
                | "LpNormalization"
        ) {
            // Unknown rank: flowrt runs tensors of rank <= MAX_RANK, which bounds the axis.
            let max_rank = flowrt::format::MAX_RANK as i64;
            if let Some(a) = attr(node, "axis")
                .map(|a| a.i)
                .filter(|a| *a < -max_rank || *a > max_rank)
                .filter(|_| in_rank(0).is_none())
            {
                problems.push(format!(
                    "{label}: axis {a} is out of range (flowrt tensors have rank <= {max_rank})"
                ));
            }
            // An absent `axis` is the operator's default, checked too: tract's LayerNorm
            // rules loop for the default -1 on a rank-0 input (found by fuzz/onnx_import).
            let default_axis = match op {
                "Split" => Some(0),
                "Flatten" => Some(1),
                "Concat" => None,
                _ => Some(-1),
            };
            let axis = attr(node, "axis").map(|a| a.i).or(default_axis);
            if let (Some(a), Some(r)) = (axis, in_rank(0)) {
                let r = r as i64;
                // Flatten's axis may equal the rank.
                let hi = if op == "Flatten" { r } else { r - 1 };
                if a < -r || a > hi {
                    problems.push(format!(
                        "{label}: axis {a} is out of range for input rank {r}"
                    ));
                }
            }
        }
        let mut out_rank: Option<usize> = None;
        match op {
            "Unsqueeze" | "Squeeze" => {
                let axes = axes(1);
                let r = in_rank(0);
                if let (Some(axes), Some(r)) = (&axes, r) {
                    let target = if op == "Unsqueeze" { r + axes.len() } else { r };
                    let mut seen = HashSet::new();
                    for &a in axes {
                        let norm = if a < 0 { a + target as i64 } else { a };
                        if norm < 0 || norm >= target as i64 {
                            problems.push(format!(
                                "{label}: axis {a} is out of range for {} rank {target}",
                                if op == "Unsqueeze" { "output" } else { "input" }
                            ));
                        } else if !seen.insert(norm) {
                            problems.push(format!("{label}: axis {a} is given twice"));
                        }
                    }
                    out_rank = if op == "Unsqueeze" {
                        Some(target)
                    } else {
                        target.checked_sub(axes.len())
                    };
                }
            }
            "Gather" => {
                let axis = attr(node, "axis").map_or(0, |a| a.i);
                let data = node.input.first().map(String::as_str).unwrap_or("");
                let data_dims: Option<Vec<i64>> = consts
                    .get(data)
                    .map(|t| t.dims.clone())
                    .or_else(|| length.get(data).map(|&n| vec![n as i64]));
                if let Some(dims) = &data_dims {
                    let r = dims.len() as i64;
                    let ax = if axis < 0 { axis + r } else { axis };
                    if ax < 0 || ax >= r {
                        problems.push(format!(
                            "{label}: axis {axis} is out of range for data rank {r}"
                        ));
                    } else if let Some(idx) = const_ints(1) {
                        let n = dims[ax as usize];
                        if let Some(&bad) = idx.iter().find(|&&i| i < -n || i >= n) {
                            problems.push(format!(
                                "{label}: index {bad} is out of range for axis {axis} of size {n}"
                            ));
                        }
                    }
                }
                if let (Some(d), Some(i)) = (in_rank(0), in_rank(1)) {
                    out_rank = (d + i).checked_sub(1);
                }
            }
            "Transpose" => {
                if let Some(perm) = attr(node, "perm").map(|a| &a.ints) {
                    let n = perm.len();
                    let mut sorted: Vec<i64> = perm.clone();
                    sorted.sort_unstable();
                    if sorted.iter().enumerate().any(|(i, &p)| p != i as i64) {
                        problems.push(format!(
                            "{label}: perm {perm:?} is not a permutation of 0..{n}"
                        ));
                    } else if in_rank(0).is_some_and(|r| r != n) {
                        problems.push(format!(
                            "{label}: perm {perm:?} has {n} entries for an input of rank {}",
                            in_rank(0).unwrap_or(0)
                        ));
                    }
                    out_rank = Some(n);
                } else {
                    out_rank = in_rank(0);
                }
            }
            "Conv" | "ConvTranspose" | "AveragePool" | "MaxPool" => {
                let kernel = attr(node, "kernel_shape").map(|a| a.ints.clone());
                let spatial = kernel
                    .as_ref()
                    .map(Vec::len)
                    .or_else(|| {
                        in_rank(1)
                            .filter(|_| op.starts_with("Conv"))
                            .and_then(|r| r.checked_sub(2))
                    })
                    .or_else(|| in_rank(0).and_then(|r| r.checked_sub(2)));
                if let Some(s) = spatial {
                    for (name, want) in [("strides", s), ("dilations", s), ("pads", 2 * s)] {
                        if let Some(a) = attr(node, name) {
                            if a.ints.len() != want {
                                problems.push(format!(
                                    "{label}: `{name}` has {} values, expected {want} ({s} \
                                     spatial axes)",
                                    a.ints.len()
                                ));
                            }
                        }
                    }
                    for name in ["output_padding", "output_shape"] {
                        if let Some(a) = attr(node, name) {
                            if a.ints.len() != s {
                                problems.push(format!(
                                    "{label}: `{name}` has {} values, expected {s}",
                                    a.ints.len()
                                ));
                            }
                        }
                    }
                }
                for name in ["strides", "dilations", "kernel_shape"] {
                    if let Some(a) = attr(node, name) {
                        if let Some(v) = a.ints.iter().find(|&&v| v < 1) {
                            problems.push(format!("{label}: `{name}` has a value {v} below 1"));
                        }
                    }
                }
                if let Some(v) = attr(node, "pads").and_then(|a| a.ints.iter().find(|&&v| v < 0)) {
                    problems.push(format!("{label}: `pads` has a negative value {v}"));
                }
                if let Some(g) = attr(node, "group").map(|a| a.i).filter(|&g| g < 1) {
                    problems.push(format!("{label}: `group` {g} is below 1"));
                }
                out_rank = in_rank(0);
            }
            "Shape" => {
                if attr(node, "start").is_none() && attr(node, "end").is_none() {
                    if let (Some(out), Some(r)) = (node.output.first(), in_rank(0)) {
                        length.insert(out, r);
                    }
                }
                out_rank = Some(1);
            }
            "Reshape" => {
                out_rank = const_ints(1).map(|s| s.len());
            }
            "Gemm" => out_rank = Some(2),
            // Broadcasting ops: the largest input rank (all known).
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Where" | "Equal" | "Greater"
            | "GreaterOrEqual" | "Less" | "LessOrEqual" | "Max" | "Min" | "Sum" | "Mean"
            | "PRelu" | "And" | "Or" | "Mod" => {
                let ranks: Option<Vec<usize>> = (0..node.input.len()).map(in_rank).collect();
                out_rank = ranks.and_then(|r| r.into_iter().max());
            }
            "MatMul" => {
                if let (Some(a), Some(b)) = (in_rank(0), in_rank(1)) {
                    if a >= 2 && b >= 2 {
                        out_rank = Some(a.max(b));
                    }
                }
            }
            "Abs"
            | "Cast"
            | "Ceil"
            | "Celu"
            | "Cos"
            | "Dropout"
            | "Elu"
            | "Erf"
            | "Exp"
            | "Floor"
            | "Gelu"
            | "HardSigmoid"
            | "Identity"
            | "InstanceNormalization"
            | "LayerNormalization"
            | "LeakyRelu"
            | "Log"
            | "LogSoftmax"
            | "Mish"
            | "Neg"
            | "Reciprocal"
            | "Relu"
            | "Round"
            | "Selu"
            | "Sigmoid"
            | "Sign"
            | "Sin"
            | "Softmax"
            | "Softplus"
            | "Softsign"
            | "Sqrt"
            | "Tanh"
            | "Split"
            | "Concat"
            | "BatchNormalization"
            | "GroupNormalization"
            | "Slice" => out_rank = in_rank(0),
            _ => {}
        }
        if let Some(r) = out_rank {
            let outs = if op == "Split" {
                &node.output[..]
            } else {
                &node.output[..node.output.len().min(1)]
            };
            for o in outs {
                rank.insert(o, r);
            }
        }
    }
    for o in &graph.output {
        if !available.contains(o.name.as_str()) {
            problems.push(format!(
                "graph output `{}`: no node produces it (and it is no graph input or \
                 initializer)",
                o.name
            ));
        }
    }
}
