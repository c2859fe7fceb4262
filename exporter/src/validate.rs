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
//!    `raw_data` — named, instead of tract's "Unknown DatumType" without a name.
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
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
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
