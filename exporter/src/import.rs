//! ONNX front end: load an ONNX file with `tract-onnx`, pin the batch dimension to one symbol,
//! and return tract's decluttered typed model (shape-only subgraphs folded, constants folded).
//!
//! Some ONNX activations that tract decomposes into comparisons and selects (Selu, Elu,
//! Softplus, Gelu) — or parses with truncated default attributes — are intercepted here and
//! kept as single [`FlowrtUnary`] element-wise ops, so the lowering sees them whole and the
//! runtime computes them with the same kernel flowrt uses everywhere.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use flowrt::ir::{Role, UnaryOp};
use prost::Message as _;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::DimLike;
use tract_onnx::tract_core::ops::element_wise::ElementWiseMiniOp;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::infer::InferenceOp;
use tract_onnx::tract_hir::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_hir::ops::expandable::expand;

/// Name of the symbolic batch dimension in the imported model.
pub const BATCH_SYMBOL: &str = "B";

/// An element-wise flowrt unary op carried through tract's pipeline unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowrtUnary(pub UnaryOp);

impl Eq for FlowrtUnary {}

impl ElementWiseMiniOp for FlowrtUnary {
    fn name(&self) -> String {
        format!("Flowrt{:?}", self.0)
    }

    fn eval_in_place(&self, t: &mut Tensor, _out_dt: Option<DatumType>) -> TractResult<()> {
        let mut view = t.try_as_plain_ram_mut()?;
        for x in view.as_slice_mut::<f32>()? {
            *x = self.0.apply(*x);
        }
        Ok(())
    }
}

fn flowrt_unary(op: UnaryOp) -> Box<dyn InferenceOp> {
    expand(ElementWiseOp(Box::new(FlowrtUnary(op))))
}

fn attr_f32(node: &NodeProto, name: &str, default: f32) -> TractResult<f32> {
    Ok(node.get_attr_opt::<f32>(name)?.unwrap_or(default))
}

/// The ONNX parser with flowrt's overrides for activations tract would decompose.
pub fn onnx_parser() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    // Exporters annotate intermediate values with their own symbol names ("batch", "s0");
    // flowrt pins one batch symbol on the inputs and lets tract derive everything else.
    onnx.ignore_value_info = true;
    onnx.use_output_shapes = false;
    let reg = &mut onnx.op_register;
    reg.insert("Selu", |_, node| {
        // ONNX defaults, at full f32 precision.
        let alpha = attr_f32(node, "alpha", 1.673_263_2)?;
        let gamma = attr_f32(node, "gamma", 1.050_701)?;
        Ok((flowrt_unary(UnaryOp::Selu { alpha, gamma }), vec![]))
    });
    reg.insert("Elu", |_, node| {
        let alpha = attr_f32(node, "alpha", 1.0)?;
        Ok((flowrt_unary(UnaryOp::Elu { alpha }), vec![]))
    });
    reg.insert("Softplus", |_, _| {
        Ok((flowrt_unary(UnaryOp::Softplus), vec![]))
    });
    // The deprecated Upsample (opset 9: inputs X, scales) is Resize-10 with asymmetric
    // coordinates; its nearest mode picks floor(x_out / scale) (ONNX's reference repeats).
    reg.insert("Upsample", |ctx, node| {
        if ctx.onnx_operator_set_version < 9 {
            bail!("Upsample before opset 9 (scales as an attribute) is not supported");
        }
        let resize = *ctx
            .framework
            .op_register
            .0
            .get("Resize")
            .ok_or_else(|| anyhow!("tract has no Resize parser"))?;
        let mut n = node.clone();
        n.op_type = "Resize".into();
        n.attribute.push(tract_onnx::pb::AttributeProto {
            name: "nearest_mode".into(),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::String as i32,
            s: b"floor".to_vec(),
            ..Default::default()
        });
        let ctx10 = tract_onnx::model::ParsingContext {
            onnx_operator_set_version: 10,
            framework: ctx.framework,
            model: ctx.model,
            parent_graphs: ctx.parent_graphs.clone(),
            model_dir: ctx.model_dir,
            template: ctx.template.clone(),
        };
        resize(&ctx10, &n)
    });
    reg.insert("Gelu", |_, node| {
        let approx: Option<String> = node.get_attr_opt("approximate")?;
        match approx.as_deref() {
            None | Some("none") => Ok((flowrt_unary(UnaryOp::GeluErf), vec![])),
            Some("tanh") => Ok((flowrt_unary(UnaryOp::GeluTanh), vec![])),
            Some(other) => bail!("Gelu: unsupported approximate={other:?}"),
        }
    });
    onnx
}

/// One declared ONNX graph input: its name and its declared shape (None = symbolic/unknown dim).
#[derive(Debug, Clone)]
pub struct DeclaredInput {
    /// ONNX input name.
    pub name: String,
    /// Declared dims; `None` for a symbolic or unknown dim.
    pub dims: Vec<Option<usize>>,
    /// The declared element type is an integer type (e.g. int64 class labels).
    pub integer: bool,
}

/// Reads the declared inputs and outputs of an ONNX model (before analysis).
pub fn declared_io(model: &InferenceModel) -> Result<(Vec<DeclaredInput>, Vec<DeclaredInput>)> {
    let read = |outlets: Vec<OutletId>, inputs: bool| -> Result<Vec<DeclaredInput>> {
        outlets
            .iter()
            .enumerate()
            .map(|(ix, outlet)| {
                let fact = if inputs {
                    model.input_fact(ix)?
                } else {
                    model.output_fact(ix)?
                };
                let name = model.node(outlet.node).name.clone();
                let dims = match fact.shape.concretize() {
                    Some(dims) => dims.iter().map(|d| d.to_usize().ok()).collect(),
                    None => {
                        // rank known?
                        let rank = match fact.shape.rank().concretize() {
                            Some(rank) => rank,
                            // Outputs often carry no shape before analysis.
                            None if !inputs => 0,
                            None => {
                                bail!("input `{name}` has no declared rank; re-export with shapes")
                            }
                        };
                        let mut dims = vec![None; rank as usize];
                        for (d, f) in dims.iter_mut().zip(fact.shape.dims()) {
                            *d = f.concretize().and_then(|d| d.to_usize().ok());
                        }
                        dims
                    }
                };
                let integer = fact
                    .datum_type
                    .concretize()
                    .is_some_and(|dt| dt.is_integer());
                Ok(DeclaredInput {
                    name,
                    dims,
                    integer,
                })
            })
            .collect()
    };
    let ins = read(model.input_outlets()?.to_vec(), true)?;
    let outs = read(model.output_outlets()?.to_vec(), false)?;
    Ok((ins, outs))
}

/// Loads `path` (external data files are resolved next to it) as an inference model.
///
/// float16 / bfloat16 weights, `Constant` values, graph inputs / outputs and `Cast` targets
/// are widened to float32 in the `ModelProto` first ([`crate::half::widen_model`]): flowrt
/// computes in f32, and tract has no bfloat16.
///
/// Errors: unreadable or undecodable file, malformed half-precision data, or tract cannot
/// parse the graph.
pub fn load_inference_model(path: &Path) -> Result<InferenceModel> {
    let load = || -> Result<InferenceModel> {
        let bytes = crate::read_onnx(path)?;
        let mut proto =
            tract_onnx::pb::ModelProto::decode(&bytes[..]).context("not an ONNX ModelProto")?;
        let dir = path.parent().unwrap_or(Path::new(""));
        crate::half::widen_model(&mut proto, dir)?;
        // External data is read here, confined to the model's folder (`crate::external`),
        // so tract never opens a file the ONNX names.
        if let Some(g) = proto.graph.as_mut() {
            crate::embed::inline_graph(g, dir, &mut std::collections::HashMap::new())?;
        }
        drop_trailing_absent_inputs(&mut proto);
        let parsed = onnx_parser()
            .parse(&proto, dir.to_str())
            .map_err(|e| anyhow!("{e:#}"))?;
        if !parsed.unresolved_inputs.is_empty() {
            bail!(
                "could not resolve inputs at top level: {:?}",
                parsed.unresolved_inputs
            );
        }
        Ok(parsed.model)
    };
    load().with_context(|| format!("cannot read ONNX model {}", path.display()))
}

/// Removes trailing empty input names (absent optional inputs, e.g. a Conv without bias
/// written as `["x", "w", ""]`): the same ONNX graph, in the form tract's parsers expect
/// (tract-hir's Conv indexes the bias slot it is told exists and panics).
fn drop_trailing_absent_inputs(proto: &mut tract_onnx::pb::ModelProto) {
    if let Some(graph) = proto.graph.as_mut() {
        for node in &mut graph.node {
            while node.input.last().is_some_and(String::is_empty) {
                node.input.pop();
            }
        }
    }
}

/// Pins each input of a plain graph (every dim fixed, as declared; the declared dtype) and
/// runs tract's analysis and decluttering.
///
/// Errors: an input with a symbolic dim, or tract cannot type the model.
pub fn into_typed_fixed(mut model: InferenceModel, inputs: &[DeclaredInput]) -> Result<TypedModel> {
    for (ix, input) in inputs.iter().enumerate() {
        let dims: TVec<TDim> = input
            .dims
            .iter()
            .map(|d| {
                d.map(|n| (n as i64).into())
                    .ok_or_else(|| anyhow!("input `{}` has a symbolic dim", input.name))
            })
            .collect::<Result<_>>()?;
        let dt = model
            .input_fact(ix)
            .ok()
            .and_then(|f| f.datum_type.concretize())
            .unwrap_or(f32::datum_type());
        model
            .set_input_fact(ix, InferenceFact::dt_shape(dt, dims))
            .map_err(|e| anyhow!("{e:#}"))?;
    }
    model
        .into_typed()
        .map_err(|e| anyhow!("{e:#}"))?
        .into_decluttered()
        .map_err(|e| anyhow!("{e:#}"))
        .context("tract could not declutter the model")
}

/// Pins each input's facts (f32 — or, for a `label` declared as an integer type, that type —
/// batch dim = the one `B` symbol, other dims as declared) and runs tract's analysis and
/// decluttering.
///
/// Errors: the model cannot be typed for a symbolic batch (e.g. it was exported with a fixed
/// batch size baked into reshapes), or an op is unknown to tract.
pub fn into_typed(
    mut model: InferenceModel,
    inputs: &[DeclaredInput],
    roles: &[Role],
) -> Result<TypedModel> {
    let batch = model.symbols.sym(BATCH_SYMBOL);
    for (ix, (input, role)) in inputs.iter().zip(roles).enumerate() {
        let mut dims: TVec<TDim> = TVec::new();
        for (axis, d) in input.dims.iter().enumerate() {
            // Axis 0 of x / xt (and of label / cond) is the batch even if the export baked a
            // fixed size; a time or guidance input is batched only where it was exported
            // with a dynamic axis 0.
            let one_value = matches!(role, Role::T | Role::Guidance | Role::Step);
            let batched_axis = axis == 0 && (d.is_none() || !one_value);
            match (d, batched_axis) {
                (_, true) => dims.push(TDim::Sym(batch.clone())),
                (Some(n), false) => dims.push((*n as i64).into()),
                (None, false) => bail!(
                    "input `{}` has a symbolic dimension at axis {axis}; only the batch \
                     (axis 0) may be dynamic",
                    input.name
                ),
            }
        }
        // Integer labels keep their type so tract types the Gather (or Cast) they feed.
        let declared = model
            .input_fact(ix)
            .ok()
            .and_then(|f| f.datum_type.concretize());
        let dt = match declared {
            Some(dt) if *role == Role::Label && dt.is_integer() => dt,
            _ => f32::datum_type(),
        };
        let fact = InferenceFact::dt_shape(dt, dims);
        model
            .set_input_fact(ix, fact)
            .map_err(|e| anyhow!("{e:#}"))?;
    }
    let fixed_batch: Vec<String> = inputs
        .iter()
        .zip(roles)
        .filter(|(i, r)| {
            !matches!(r, Role::T | Role::Guidance) && matches!(i.dims.first(), Some(Some(_)))
        })
        .map(|(i, _)| format!("`{}` {:?}", i.name, i.dims))
        .collect();
    let typed = model.into_typed().map_err(|e| anyhow!("{e:#}")).with_context(|| {
        if fixed_batch.is_empty() {
            "shape/type analysis failed for a symbolic batch size B".to_string()
        } else {
            format!(
                "shape/type analysis failed for a symbolic batch size B; the model was exported \
                 with a fixed batch size ({}): re-export with a dynamic batch axis \
                 (torch.onnx.export(..., dynamic_axes={{name: {{0: \"batch\"}}}}) or dynamic_shapes)",
                fixed_batch.join(", ")
            )
        }
    })?;
    typed
        .into_decluttered()
        .map_err(|e| anyhow!("{e:#}"))
        .context("tract could not declutter the model")
}
