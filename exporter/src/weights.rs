//! Weight-only quantization at export (`flowrt export --weights f16|bf16|int8`): which
//! constants of a lowered model are stored in a smaller type, and along which channel axis
//! int8 scales run. The values are encoded by `flowrt::write` (f16 / bf16 rounded to nearest
//! even; int8 symmetric with one scale per output channel, `flowrt::write::quantize`).

use anyhow::{bail, Result};
use flowrt::format::{ScaleType, WeightType};
use flowrt::ir::{ModelDesc, NodeDesc, Op};
use flowrt::write::fits_f16;

/// The stored type asked for with `--weights`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightKind {
    /// Keep every constant f32 (the default).
    #[default]
    F32,
    /// IEEE half precision (2 bytes per weight).
    F16,
    /// bfloat16 (2 bytes per weight).
    Bf16,
    /// int8 with one 8-bit scale per output channel (1 byte per weight; biases int8 with
    /// one scale each).
    Int8,
}

impl WeightKind {
    /// The name `--weights` takes.
    pub fn name(self) -> &'static str {
        match self {
            WeightKind::F32 => "f32",
            WeightKind::F16 => "f16",
            WeightKind::Bf16 => "bf16",
            WeightKind::Int8 => "int8",
        }
    }

    /// Parses `f32`, `f16`, `bf16` or `int8`.
    ///
    /// Errors: any other name.
    pub fn parse(s: &str) -> Result<WeightKind> {
        Ok(match s {
            "f32" => WeightKind::F32,
            "f16" => WeightKind::F16,
            "bf16" => WeightKind::Bf16,
            "int8" => WeightKind::Int8,
            _ => bail!("--weights {s}: expected f32, f16, bf16 or int8"),
        })
    }
}

/// What `--weights` and `--keep-f32` ask for.
#[derive(Debug, Clone, Default)]
pub struct WeightChoice {
    /// The stored type of the weights.
    pub kind: WeightKind,
    /// Constants that stay f32: a weight whose tensor name or consuming node's name equals
    /// one of these (or starts with it followed by `.` or `/`) is kept.
    pub keep_f32: Vec<String>,
}

/// One weight the choice stored in another type (for the export report).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWeight {
    /// The constant's name.
    pub tensor: String,
    /// The type it is stored in.
    pub stored: WeightType,
    /// Its element count.
    pub elements: usize,
}

/// Marks the weights of `desc` with the stored type `choice` asks for and returns them.
///
/// A constant is a weight when every node that reads it reads it as its weight input
/// (Dense's and Conv's kernel, ConvTranspose's kernel, Gather's table:
/// [`flowrt::format::NodeOp::reads_typed_weights`]), and a bias when every reader reads it
/// as its bias ([`flowrt::format::NodeOp::reads_typed_bias`]); a constant any node reads as
/// a plain f32 operand (an Add operand) stays f32. Weights take the asked type; biases are
/// stored as bf16 in bf16 models, as f16 in f16 models (f32 when a value does not fit f16),
/// and in int8 models as int8 with one 8-bit scale for the whole bias (version 3; f16 with
/// fixed records). With compact records the constants that only element-wise ops read are
/// stored as f16 (bf16) too, behind a `Widen` node. The int8 channel axis of weights is the
/// output channel: Dense `w[K, N]`
/// axis 1, Conv's channel-last kernel its last axis, ConvTranspose `w[M, ..]` axis 0, a
/// Gather table one scale per row (axis 0); the scales are 8-bit ([`ScaleType::Mini`],
/// version 3) or bfloat16 with fixed records ([`ScaleType::Bf16`]).
///
/// Errors: a `--keep-f32` name that matches no weight (a typo would silently quantize).
pub fn assign(
    desc: &mut ModelDesc,
    choice: &WeightChoice,
    layout: flowrt::write::Layout,
) -> Result<Vec<StoredWeight>> {
    let compact = layout == flowrt::write::Layout::Compact;
    let scales = if compact {
        ScaleType::Mini
    } else {
        ScaleType::Bf16
    };
    if choice.kind == WeightKind::F32 {
        if let Some(name) = choice.keep_f32.first() {
            bail!("--keep-f32 {name} needs --weights f16, bf16 or int8");
        }
        return Ok(Vec::new());
    }
    // Per tensor: how every node reads it (`None` = unseen).
    let n = desc.tensors.len();
    let concat_fed = concat_fed(desc);
    let mut role: Vec<Option<Role>> = vec![None; n];
    let mut kept_by_name = vec![false; n];
    let mut matched = vec![false; choice.keep_f32.len()];
    for node in &desc.nodes {
        for (j, &t) in node.inputs.iter().enumerate() {
            let Some(tensor) = desc.tensors.get(t as usize) else {
                continue;
            };
            if tensor.data.is_none() {
                continue;
            }
            let here = if node.op.reads_typed_weights(j) {
                channel_axis(&node.op, tensor.shape.len()).map_or(Role::Plain, Role::Weight)
            } else if node.op.reads_typed_bias(j) {
                let first = node.inputs.first().is_some_and(|&x| concat_fed[x as usize]);
                Role::Bias { first }
            } else {
                Role::Plain
            };
            let slot = &mut role[t as usize];
            *slot = Some(match *slot {
                None => here,
                Some(prev) if prev == here => here,
                Some(_) => Role::Plain,
            });
            for (k, name) in choice.keep_f32.iter().enumerate() {
                if names(name, &node.name) || names(name, &tensor.name) {
                    matched[k] = true;
                    kept_by_name[t as usize] = true;
                }
            }
        }
    }
    if let Some(k) = matched.iter().position(|m| !m) {
        let known: Vec<&str> = desc
            .tensors
            .iter()
            .zip(&role)
            .filter(|(_, r)| matches!(r, Some(Role::Weight(_))))
            .map(|(t, _)| t.name.as_str())
            .collect();
        bail!(
            "--keep-f32 {}: no weight or node of that name (the weights: {})",
            choice.keep_f32[k],
            known.join(", ")
        );
    }
    let mut stored = Vec::new();
    for (i, t) in desc.tensors.iter_mut().enumerate() {
        let (Some(r), Some(data)) = (role[i], &t.data) else {
            continue;
        };
        if kept_by_name[i] {
            continue;
        }
        t.stored = match (r, choice.kind) {
            (Role::Plain, _) | (_, WeightKind::F32) => continue,
            (Role::Weight(_), WeightKind::F16) => WeightType::F16,
            (_, WeightKind::Bf16) => WeightType::Bf16,
            (Role::Weight(axis), WeightKind::Int8) => WeightType::Int8 { axis, scales },
            // Biases of int8 models: int8 with one 8-bit scale for the whole bias (axis =
            // rank; version 3), except the first layers' (f16 below): a step of the
            // bias's scale moves every later activation, and one 8-bit scale for a layer
            // that sees the raw inputs cost 2-3 % of W2 at 32 steps on moons_opzoo and
            // moons_gelu_tanh (docs/quantization.md).
            (Role::Bias { first: false }, WeightKind::Int8) if compact => WeightType::Int8 {
                axis: u8::try_from(t.shape.len()).unwrap_or(u8::MAX),
                scales,
            },
            // Biases of f16 (and fixed-record int8) models: f16 where every value fits.
            (Role::Bias { .. }, WeightKind::F16 | WeightKind::Int8) if fits_f16(data) => {
                WeightType::F16
            }
            (Role::Bias { .. }, _) => continue,
        };
        stored.push(StoredWeight {
            tensor: t.name.clone(),
            stored: t.stored,
            elements: data.len(),
        });
    }
    if compact {
        let half = match choice.kind {
            WeightKind::Bf16 => WeightType::Bf16,
            _ => WeightType::F16,
        };
        widen_elementwise(desc, half, &kept_by_name, &mut stored);
    }
    Ok(stored)
}

/// Fewest values an element-wise constant needs to be stored typed: below it the `Widen`
/// node and the extra tensor record cost more than the bytes saved.
const MIN_WIDENED: usize = 8;

/// Stores the constants that only element-wise binary ops read (biases added after a
/// split `MatMul`, norm scales and shifts, position embeddings) in `half` (f16 or bf16),
/// each read through a `Widen` node placed just before its first reader; version 3 only.
/// Skips constants kept by name, those under [`MIN_WIDENED`] values, and (f16) those
/// outside f16's range. Appends what it stored to `stored`.
fn widen_elementwise(
    desc: &mut ModelDesc,
    half: WeightType,
    kept_by_name: &[bool],
    stored: &mut Vec<StoredWeight>,
) {
    let n = desc.tensors.len();
    let (mut read, mut only_binary) = (vec![false; n], vec![true; n]);
    for node in &desc.nodes {
        for &t in &node.inputs {
            if let Some(r) = read.get_mut(t as usize) {
                *r = true;
            }
            if !matches!(node.op, Op::Binary(_)) {
                if let Some(b) = only_binary.get_mut(t as usize) {
                    *b = false;
                }
            }
        }
    }
    for t in 0..n {
        let tensor = &desc.tensors[t];
        let Some(data) = &tensor.data else {
            continue;
        };
        if !read[t]
            || !only_binary[t]
            || kept_by_name.get(t).copied().unwrap_or(true)
            || tensor.stored != WeightType::F32
            || data.len() < MIN_WIDENED
            || (half == WeightType::F16 && !fits_f16(data))
        {
            continue;
        }
        let Some(first) = desc
            .nodes
            .iter()
            .position(|node| node.inputs.contains(&(t as u32)))
        else {
            continue;
        };
        let widened = u32::try_from(desc.tensors.len()).unwrap_or(u32::MAX);
        let mut f32_copy = tensor.clone();
        f32_copy.name = format!("{}.f32", tensor.name);
        f32_copy.data = None;
        stored.push(StoredWeight {
            tensor: tensor.name.clone(),
            stored: half,
            elements: data.len(),
        });
        let name = format!("{}.widen", tensor.name);
        desc.tensors[t].stored = half;
        desc.tensors.push(f32_copy);
        for node in &mut desc.nodes {
            for input in &mut node.inputs {
                if *input == t as u32 {
                    *input = widened;
                }
            }
        }
        desc.nodes.insert(
            first,
            NodeDesc {
                name,
                op: Op::Widen,
                inputs: vec![t as u32],
                output: widened,
            },
        );
    }
}

/// How the nodes read a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Every reader reads it as its weight, with this output-channel axis.
    Weight(u8),
    /// Every reader reads it as its bias; `first` when a reader's data input is the
    /// network's input or a `Concat` ([`concat_fed`]).
    Bias { first: bool },
    /// Some reader reads it as a plain f32 operand (or the readers disagree).
    Plain,
}

/// Per tensor: whether it is a graph input or a `Concat`'s output (tract's split first
/// layers, merged again over a `Concat` by the lowering) — what a first layer reads.
fn concat_fed(desc: &ModelDesc) -> Vec<bool> {
    let mut fed = vec![false; desc.tensors.len()];
    for node in &desc.nodes {
        if matches!(node.op, Op::Concat { .. }) {
            fed[node.output as usize] = true;
        }
    }
    fed
}

/// The output-channel axis of a weight of `rank` read by `op`.
fn channel_axis(op: &Op, rank: usize) -> Option<u8> {
    let last = u8::try_from(rank.checked_sub(1)?).ok()?;
    match op {
        Op::Dense | Op::Conv { .. } => Some(last),
        Op::ConvTranspose { .. } | Op::Gather => Some(0),
        _ => None,
    }
}

/// Whether `pattern` names `name` or a part of it: `pattern` stands at the start of `name`
/// or after a `/`, and is followed by the end, `.` or `/` — so `net.0` (a PyTorch module)
/// names `/net/net.0/Gemm.ab.weight` and `net.0.weight`, but not `net.01`.
fn names(pattern: &str, name: &str) -> bool {
    !pattern.is_empty()
        && name.match_indices(pattern).any(|(at, _)| {
            let before = name[..at].chars().next_back();
            let after = name[at + pattern.len()..].chars().next();
            matches!(before, None | Some('/')) && matches!(after, None | Some('.' | '/'))
        })
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn keep_names_match_modules_and_tensors() {
        assert!(names("net.0", "/net/net.0/Gemm.ab.weight"));
        assert!(names("net.0", "net.0.weight"));
        assert!(names(
            "/net/net.0/Gemm.ab.weight",
            "/net/net.0/Gemm.ab.weight"
        ));
        assert!(!names("net.0", "/net/net.01/Gemm.ab.weight"));
        assert!(!names("et.0", "/net/net.0/Gemm"));
        assert!(!names("", "net.0"));
    }
}
