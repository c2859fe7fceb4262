//! The `.frt` writer (feature `alloc`): validates an [`ir::ModelDesc`], plans its memory and
//! serializes it ([`write()`]; [`plan_model`] stops after the plan). The result is loaded back with [`crate::Model::from_bytes`] before it is
//! returned, so a file this function returns is always one the runtime accepts.

use alloc::vec;
use alloc::vec::Vec;

use crate::format::compact;
use crate::format::{
    align_up, check_output_shape, check_role_shape, node_err, rules, section, tensor_err, NodeOp,
    Region, ScaleType, Shape, TensorKind, WeightType, ALIGN, HEADER_LEN, MAGIC, NONE_U32, NO_BATCH,
    SECTION_ENTRY_LEN, SECTION_FLAG_REQUIRED, VERSION, VERSION_COMPACT, VERSION_TYPED_WEIGHTS,
};
use crate::ir::{self, ModelDesc};
use crate::plan::{self, MemoryPlan, Request};
use crate::Error;

/// Checks an op's attributes exactly as the reader does (encode, then decode).
fn checked_op(op: &NodeOp) -> Result<NodeOp, &'static str> {
    let (code, attrs) = op.encode();
    NodeOp::decode(code, attrs)
}

/// Everything the writer derives from a desc after checking it.
pub(crate) struct Analysis {
    pub(crate) shapes: Vec<Shape>,
    pub(crate) kinds: Vec<TensorKind>,
    pub(crate) producer: Vec<Option<usize>>,
    pub(crate) ops: Vec<NodeOp>,
    pub(crate) state_dim: u32,
    pub(crate) plan: MemoryPlan,
}

/// Validates a desc with the same rules as the reader and plans its memory.
pub(crate) fn analyze(desc: &ModelDesc) -> Result<Analysis, Error> {
    let n_t = desc.tensors.len();
    let n_n = desc.nodes.len();
    if u32::try_from(n_t).is_err() || n_t == NONE_U32 as usize {
        return Err(Error::Invalid {
            what: "too many tensors",
        });
    }
    if u32::try_from(n_n).is_err() || n_n == NONE_U32 as usize {
        return Err(Error::Invalid {
            what: "too many nodes",
        });
    }
    // Shapes and constants.
    let mut shapes = Vec::with_capacity(n_t);
    let mut kinds = vec![TensorKind::Intermediate; n_t];
    for (i, (t, kind)) in desc.tensors.iter().zip(kinds.iter_mut()).enumerate() {
        let dims: Vec<crate::format::Dim> = t.shape.to_vec();
        let shape = Shape::new(&dims).map_err(|w| tensor_err(i, w))?;
        let row = shape
            .row_elements()
            .ok_or(tensor_err(i, "tensor is too large"))?;
        row.checked_mul(4)
            .and_then(|b| u32::try_from(b / 4).ok().map(|_| b))
            .and_then(|b| usize::try_from(b).ok())
            .ok_or(tensor_err(i, "tensor is too large"))?;
        if let Some(data) = &t.data {
            if shape.has_batch() {
                return Err(tensor_err(i, "constant has a batch dim"));
            }
            if data.len() as u64 != row {
                return Err(tensor_err(
                    i,
                    "constant data length does not match its shape",
                ));
            }
            *kind = TensorKind::Const;
            if let WeightType::Int8 { axis, .. } = t.stored {
                // The rank itself: one scale for the whole tensor (version 3; the reader
                // refuses it in fixed-record files, so `write_with` does too).
                if usize::from(axis) > shape.rank() {
                    return Err(tensor_err(i, "int8 channel axis is above the rank"));
                }
            }
        } else if t.stored != WeightType::F32 {
            return Err(tensor_err(
                i,
                "only constants may be stored as f16, bf16 or int8",
            ));
        }
        shapes.push(shape);
    }
    // Inputs.
    let mut roles = [false; ir::Role::ALL.len()];
    let mut dim: Option<u64> = None;
    if desc.inputs.is_empty() || desc.inputs.len() > crate::model::MAX_INPUTS {
        return Err(Error::Invalid {
            what: "a model has 1 to 16 inputs",
        });
    }
    for (k, inp) in desc.inputs.iter().enumerate() {
        let ti = inp.tensor as usize;
        let role = inp.role;
        let shape = shapes
            .get(ti)
            .ok_or(tensor_err(ti, "input tensor id out of range"))?;
        if kinds.get(ti) == Some(&TensorKind::Const) {
            return Err(tensor_err(ti, "an input cannot be a constant"));
        }
        if desc.inputs.iter().take(k).any(|o| o.tensor == inp.tensor) {
            return Err(tensor_err(ti, "a tensor appears twice in the inputs"));
        }
        let seen = roles
            .get_mut(role.code() as usize)
            .ok_or(Error::Invalid { what: "role" })?;
        if *seen && role != ir::Role::Data {
            return Err(Error::Invalid {
                what: "an input role appears twice",
            });
        }
        *seen = true;
        if let Some(d) = check_role_shape(role, shape).map_err(|w| tensor_err(ti, w))? {
            dim = Some(d);
        }
        if let Some(kd) = kinds.get_mut(ti) {
            *kd = TensorKind::Input;
        }
    }
    let seen = |r: ir::Role| roles.get(r.code() as usize).copied();
    let plain = seen(ir::Role::Data) == Some(true);
    if plain && roles.iter().filter(|s| **s).count() > 1 {
        return Err(Error::Invalid {
            what: "a plain graph's inputs are all `data`",
        });
    }
    if plain {
        dim = Some(0);
    } else if seen(ir::Role::X) == seen(ir::Role::Xt) {
        return Err(Error::Invalid {
            what: "a model has exactly one of the inputs `x` and `xt`",
        });
    }
    let d = dim.ok_or(Error::Invalid {
        what: "a model has exactly one of the inputs `x` and `xt`",
    })?;
    let state_dim = u32::try_from(d).map_err(|_| Error::Invalid {
        what: "state dimension is too large",
    })?;
    // Output.
    let out_i = desc.output as usize;
    match kinds.get_mut(out_i) {
        Some(k @ TensorKind::Intermediate) => *k = TensorKind::Output,
        Some(_) => return Err(tensor_err(out_i, "the output must be computed by a node")),
        None => return Err(tensor_err(out_i, "output tensor id out of range")),
    }
    // Nodes, in order.
    let mut producer: Vec<Option<usize>> = vec![None; n_t];
    let mut last_use: Vec<usize> = vec![0; n_t];
    let mut ops = Vec::with_capacity(n_n);
    let mut edges = 0usize;
    for (i, node) in desc.nodes.iter().enumerate() {
        let err = |w| node_err(i, w);
        let op = checked_op(&node.op).map_err(err)?;
        let o = node.output as usize;
        match kinds.get(o) {
            None => return Err(err("output tensor id out of range")),
            Some(TensorKind::Input | TensorKind::Const) => {
                return Err(err("output tensor is a graph input or a constant"));
            }
            Some(_) => {}
        }
        if node.inputs.len() > u16::MAX as usize {
            return Err(err("too many inputs"));
        }
        edges = edges.saturating_add(node.inputs.len());
        for &t in &node.inputs {
            let t = t as usize;
            match kinds.get(t) {
                None => return Err(err("input tensor id out of range")),
                Some(TensorKind::Input | TensorKind::Const) => {}
                Some(_) => {
                    if producer.get(t).copied().flatten().is_none() {
                        return Err(err("input is used before it is computed"));
                    }
                }
            }
            if let Some(l) = last_use.get_mut(t) {
                *l = i;
            }
        }
        match producer.get_mut(o) {
            Some(p @ None) => *p = Some(i),
            _ => return Err(err("output tensor is computed by two nodes")),
        }
        let out = shapes.get(o).ok_or(err("output tensor id out of range"))?;
        let shape_of = |j: usize| {
            node.inputs
                .get(j)
                .and_then(|t| shapes.get(*t as usize))
                .copied()
        };
        rules::check_node(&op, node.inputs.len(), shape_of, out).map_err(err)?;
        ops.push(op);
    }
    let out_shape = shapes
        .get(out_i)
        .ok_or(tensor_err(out_i, "output tensor id out of range"))?;
    let velocity = seen(ir::Role::T) == Some(true)
        || seen(ir::Role::Xt) == Some(true)
        || seen(ir::Role::Step) == Some(true);
    check_output_shape(out_shape, d, velocity).map_err(|w| tensor_err(out_i, w))?;
    if u32::try_from(edges).is_err() {
        return Err(Error::Invalid {
            what: "too many node inputs",
        });
    }
    for (i, (k, p)) in kinds.iter().zip(&producer).enumerate() {
        if k.in_arena() && p.is_none() {
            return Err(tensor_err(
                i,
                "tensor is neither an input, a constant, nor computed by a node",
            ));
        }
    }
    // Lifetimes -> memory plan.
    let reqs: Vec<Option<(Region, Request)>> = (0..n_t)
        .map(|i| {
            let first = producer.get(i).copied().flatten()?;
            let shape = shapes.get(i)?;
            let size = usize::try_from(shape.row_elements()?.checked_mul(4)?).ok()?;
            let last = if i == out_i {
                n_n
            } else {
                last_use.get(i).copied()?.max(first)
            };
            let region = if shape.has_batch() {
                Region::PerRow
            } else {
                Region::Fixed
            };
            Some((region, Request { size, first, last }))
        })
        .collect();
    let plan = plan::plan(&reqs);
    Ok(Analysis {
        shapes,
        kinds,
        producer,
        ops,
        state_dim,
        plan,
    })
}

fn put_u16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put_u64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put_str(v: &mut Vec<u8>, s: &str) -> Result<(), Error> {
    put_u32(
        v,
        u32::try_from(s.len()).map_err(|_| Error::Invalid {
            what: "string is too long",
        })?,
    );
    v.extend_from_slice(s.as_bytes());
    Ok(())
}
/// Appends constant `data` of `shape` in the stored type `stored` (docs/frt-format.md,
/// "Weight types"): f32 / f16 / bf16 little-endian (half types rounded to nearest even), or
/// int8 values padded to 4 bytes followed by the channels' f32 or bfloat16 scales
/// ([`quantize`], or against the `given` scales the exporter chose).
///
/// Errors: given scales that do not fit the channels or the scale type, a non-finite value in a typed constant, an int8 axis outside the shape, or a
/// type this build lacks.
fn encode_const(
    out: &mut Vec<u8>,
    data: &[f32],
    shape: &Shape,
    stored: WeightType,
    given: Option<&[f32]>,
) -> Result<(), &'static str> {
    if stored != WeightType::F32 && !data.iter().all(|v| v.is_finite()) {
        return Err("a constant stored as f16, bf16 or int8 must be finite");
    }
    match stored {
        WeightType::F32 => {
            for v in data {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        #[cfg(feature = "weights-f16")]
        WeightType::F16 => {
            if !fits_f16(data) {
                return Err("a constant stored as f16 must lie within +-65504");
            }
            for v in data {
                out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes());
            }
        }
        #[cfg(feature = "weights-f16")]
        WeightType::Bf16 => {
            for v in data {
                out.extend_from_slice(&half::bf16::from_f32(*v).to_le_bytes());
            }
        }
        WeightType::Int8 { axis, scales } => {
            let (channels, inner) = shape
                .channel_layout(usize::from(axis))
                .ok_or("int8 channel axis is above the rank")?;
            let (q, values) = match given {
                None => quantize(data, channels, inner, scales),
                Some(g) => {
                    let exact = |s: &f32| match scales {
                        ScaleType::F32 | ScaleType::Mini => true,
                        ScaleType::Bf16 => s.to_bits() & 0xFFFF == 0,
                    };
                    if g.len() != channels
                        || !g.iter().all(|s| s.is_finite() && *s >= 0.0 && exact(s))
                        || (scales == ScaleType::Mini && mini_codes(g).is_none())
                    {
                        return Err("given int8 scales must be one finite, non-negative, storable scale per channel");
                    }
                    (quantize_with(data, inner, g), g.to_vec())
                }
            };
            out.extend(q.iter().map(|v| *v as u8));
            pad4(out);
            match scales {
                ScaleType::F32 => values
                    .iter()
                    .for_each(|s| out.extend_from_slice(&s.to_le_bytes())),
                // Exact: `quantize` returns bfloat16 values.
                ScaleType::Bf16 => values.iter().for_each(|s| {
                    out.extend_from_slice(&((s.to_bits() >> 16) as u16).to_le_bytes())
                }),
                // Exact: `quantize` returns scales of one tensor exponent.
                ScaleType::Mini => {
                    let (base, codes) =
                        mini_codes(&values).ok_or("int8 scales do not fit 8-bit scales")?;
                    out.push(base);
                    out.extend_from_slice(&codes);
                }
            }
        }
        #[allow(unreachable_patterns)]
        _ => return Err("this build cannot write the requested weight type"),
    }
    Ok(())
}

/// Symmetric int8 quantization with one scale per channel: element `e` belongs to channel
/// `(e / inner) % channels`; a channel's scale is [`int8_scale`] of its `max |w|`, and its
/// values `round(w / scale)` (ties away from zero, against the stored scale) in
/// `-127..=127` ([`quantize_with`]). Returns the values and the scales as stored (bfloat16
/// ones exactly representable). The runtime computes with `q * scale`.
pub fn quantize(
    data: &[f32],
    channels: usize,
    inner: usize,
    stored: ScaleType,
) -> (Vec<i8>, Vec<f32>) {
    let scales = channel_scales(data, channels, inner, stored);
    (quantize_with(data, inner, &scales), scales)
}

/// The [`int8_scale`] of every channel's `max |w|`, element `e` in channel
/// `(e / inner) % channels`.
pub fn channel_scales(data: &[f32], channels: usize, inner: usize, stored: ScaleType) -> Vec<f32> {
    let mut amax = vec![0f32; channels.max(1)];
    for (e, v) in data.iter().enumerate() {
        if let Some(m) = amax.get_mut((e / inner.max(1)) % channels.max(1)) {
            *m = m.max(v.abs());
        }
    }
    if stored == ScaleType::Mini {
        // One tensor exponent for every channel: each scale rounded up under it.
        let exact: Vec<f32> = amax.iter().map(|m| m / 127.0).collect();
        let base = mini_base(exact.iter().fold(0f32, |a, s| a.max(*s)));
        return exact.iter().map(|s| mini_up(base, *s).1).collect();
    }
    amax.iter().map(|m| int8_scale(*m, stored)).collect()
}

/// The int8 scale of a channel whose largest magnitude is `amax`: `amax / 127` (0 for an
/// all-zero channel), for [`ScaleType::Bf16`] rounded up to the next bfloat16 so that no
/// value clips, for [`ScaleType::Mini`] to the next 8-bit scale of its own exponent (a
/// tensor of several channels shares one: [`channel_scales`]).
pub fn int8_scale(amax: f32, stored: ScaleType) -> f32 {
    match stored {
        ScaleType::F32 => amax / 127.0,
        ScaleType::Bf16 => bf16_up(amax / 127.0),
        ScaleType::Mini => {
            let s = amax / 127.0;
            mini_up(mini_base(s), s).1
        }
    }
}

/// The tensor exponent of 8-bit scales whose largest is `max`: the exponent field of `max`
/// rounded up to four mantissa bits, within [`crate::format::MINI_BASE_RANGE`].
fn mini_base(max: f32) -> u8 {
    let bits = max.to_bits();
    let up = if bits & 0x7FFFF == 0 {
        bits
    } else {
        (bits & !0x7FFFF).saturating_add(0x80000)
    };
    let range = crate::format::MINI_BASE_RANGE;
    ((up >> 23) & 0xFF).clamp(u32::from(*range.start()), u32::from(*range.end())) as u8
}

/// The code of the smallest 8-bit scale under `base` that is `>= s` (the largest one when
/// none is), and that scale.
fn mini_up(base: u8, s: f32) -> (u8, f32) {
    let mut best = (0x0Fu8, crate::format::mini_scale(base, 0x0F));
    for code in 0..=255u8 {
        let v = crate::format::mini_scale(base, code);
        if v >= s && v < best.1 {
            best = (code, v);
        }
    }
    best
}

/// The tensor exponent and the codes of scales that are all 8-bit scales of one exponent
/// (the one [`channel_scales`] picks for their largest); `None` when one is not.
fn mini_codes(scales: &[f32]) -> Option<(u8, Vec<u8>)> {
    let base = mini_base(scales.iter().fold(0f32, |a, s| a.max(*s)));
    let codes = scales
        .iter()
        .map(|s| {
            let (code, v) = mini_up(base, *s);
            (v == *s || (*s == 0.0 && code == 0xF0)).then_some(code)
        })
        .collect::<Option<Vec<u8>>>()?;
    Some((base, codes))
}

/// `round(w / scale[c])` clamped to `-127..=127` (ties away from zero; 0 where the scale is
/// 0), element `e` in channel `c = (e / inner) % scales.len()`.
pub fn quantize_with(data: &[f32], inner: usize, scales: &[f32]) -> Vec<i8> {
    let channels = scales.len().max(1);
    data.iter()
        .enumerate()
        .map(|(e, v)| {
            let s = scales
                .get((e / inner.max(1)) % channels)
                .copied()
                .unwrap_or(0.0);
            if s == 0.0 {
                0
            } else {
                libm::roundf(v / s).clamp(-127.0, 127.0) as i8
            }
        })
        .collect()
}

/// Whether every value rounds to a finite f16 (what [`WeightType::F16`] can store).
pub fn fits_f16(data: &[f32]) -> bool {
    // f16::MAX = 65504; values up to the midpoint to the next (unrepresentable) step round
    // down to it, so anything below 65520 stays finite.
    data.iter().all(|v| v.abs() < 65520.0)
}

/// The smallest bfloat16 value (as f32) that is `>= s`, for a finite `s >= 0`.
fn bf16_up(s: f32) -> f32 {
    let bits = s.to_bits();
    if bits & 0xFFFF == 0 {
        s
    } else {
        f32::from_bits((bits & 0xFFFF_0000) + 0x1_0000)
    }
}

fn pad4(v: &mut Vec<u8>) {
    while v.len() & 3 != 0 {
        v.push(0);
    }
}

/// Pads `v` with zeros to a multiple of `align` (a power of two).
fn pad_to(v: &mut Vec<u8>, align: usize) {
    while v.len() & (align - 1) != 0 {
        v.push(0);
    }
}

/// The record layout a file is written in (docs/frt-format.md, "Versioning").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Version 3 (the default): compact records behind an index, 4-byte alignment. A few
    /// bytes per tensor and node instead of 64 and 48.
    #[default]
    Compact,
    /// Versions 1 (every constant f32) and 2 (typed weights): fixed-size records, 16-byte
    /// alignment. For runtimes that predate version 3.
    Fixed,
}

/// Validates `desc`, plans its memory and serializes it as a `.frt` image in the default
/// layout ([`Layout::Compact`], version 3).
///
/// Errors: [`Error::InvalidTensor`] / [`Error::InvalidNode`] with the index of the offending
/// tensor or node in `desc` (and the broken rule), or [`Error::Invalid`] for model-wide rules.
pub fn write(desc: &ModelDesc) -> Result<Vec<u8>, Error> {
    write_with(desc, Layout::Compact)
}

/// [`write()`] in the record layout `layout`.
///
/// Errors: as [`write()`].
pub fn write_with(desc: &ModelDesc, layout: Layout) -> Result<Vec<u8>, Error> {
    let a = analyze(desc)?;
    let compact = layout == Layout::Compact;
    let align = if compact {
        crate::format::ALIGN_COMPACT
    } else {
        ALIGN
    };
    let too_big = Error::Invalid {
        what: "model is too large",
    };
    let u32_of = |n: usize| u32::try_from(n).map_err(|_| too_big);

    // Typed weights only where a kernel reads them.
    for (j, node) in desc.nodes.iter().enumerate() {
        for (k, t) in node.inputs.iter().enumerate() {
            let stored = desc
                .tensors
                .get(*t as usize)
                .map_or(WeightType::F32, |t| t.stored);
            if !node.op.accepts_stored(k, stored) {
                return Err(Error::InvalidNode {
                    node: u32_of(j)?,
                    what: crate::format::TYPED_INPUT_RULE,
                });
            }
        }
    }

    // Weights: each constant aligned (16 bytes, 4 compact), in its stored type.
    let mut weights = Vec::new();
    let mut data_pos = vec![(0u64, 0u64); desc.tensors.len()];
    for (i, (t, pos)) in desc.tensors.iter().zip(data_pos.iter_mut()).enumerate() {
        if let Some(data) = &t.data {
            pad_to(&mut weights, align);
            let off = weights.len() as u64;
            let shape = a.shapes.get(i).ok_or(too_big)?;
            encode_const(
                &mut weights,
                data,
                shape,
                t.stored,
                t.int8_scales.as_deref(),
            )
            .map_err(|w| tensor_err(i, w))?;
            *pos = (off, weights.len() as u64 - off);
        }
    }
    // The section stays a whole number of words (f16 data may end on a half word).
    pad4(&mut weights);
    let version = if compact {
        VERSION_COMPACT
    } else if desc.tensors.iter().all(|t| t.stored == WeightType::F32) {
        VERSION
    } else {
        VERSION_TYPED_WEIGHTS
    };

    // Plan entries, in tensor order; slot index per tensor.
    let mut plan_sec = Vec::new();
    put_u64(&mut plan_sec, a.plan.fixed_bytes as u64);
    put_u64(&mut plan_sec, a.plan.per_row_bytes as u64);
    let n_slots = a.plan.slots.iter().filter(|s| s.is_some()).count();
    if !compact {
        put_u32(&mut plan_sec, u32_of(n_slots)?);
        put_u32(&mut plan_sec, 0);
    }
    let mut slot_of = vec![NONE_U32; desc.tensors.len()];
    let mut next = 0u32;
    for (i, s) in a.plan.slots.iter().enumerate() {
        if let Some(s) = s.as_ref().filter(|_| !compact) {
            put_u32(&mut plan_sec, u32_of(i)?);
            put_u32(&mut plan_sec, s.region.code());
            put_u64(&mut plan_sec, s.offset as u64);
            if let Some(x) = slot_of.get_mut(i) {
                *x = next;
            }
            next += 1;
        }
    }

    // Tensors: fixed 64-byte records, or compact ones behind an index.
    let mut tensors = Vec::new();
    let mut compact_records = Vec::new();
    if !compact {
        put_u32(&mut tensors, u32_of(desc.tensors.len())?);
        put_u32(&mut tensors, 0);
    }
    for i in 0..desc.tensors.len() {
        let shape = a.shapes.get(i).copied().ok_or(too_big)?;
        let kind = a.kinds.get(i).copied().ok_or(too_big)?;
        let (rank, batch_axis, dims) = shape.raw();
        let batch_axis = if shape.has_batch() {
            batch_axis
        } else {
            NO_BATCH
        };
        let stored = desc.tensors.get(i).map(|t| t.stored).unwrap_or_default();
        let axis = match stored {
            WeightType::Int8 { axis, .. } => axis,
            _ => 0,
        };
        let producer = a
            .producer
            .get(i)
            .copied()
            .flatten()
            .map_or(Ok(NONE_U32), u32_of)?;
        let (off, len) = data_pos.get(i).copied().unwrap_or((0, 0));
        if compact {
            let plan_offset = a
                .plan
                .slots
                .get(i)
                .and_then(|s| s.as_ref())
                .map_or(0, |s| s.offset as u64);
            let fields = compact::TensorFields {
                kind: kind.code(),
                dtype: stored.code(),
                rank,
                batch_axis,
                dims,
                data_off: off,
                axis,
                producer,
                plan_offset,
            };
            compact_records.push(compact::encode_tensor(&fields).ok_or(too_big)?);
            continue;
        }
        tensors.push(kind.code());
        tensors.push(stored.code());
        tensors.push(rank);
        tensors.push(batch_axis);
        put_u32(&mut tensors, producer);
        for d in dims {
            put_u32(&mut tensors, d);
        }
        put_u32(&mut tensors, slot_of.get(i).copied().unwrap_or(NONE_U32));
        put_u32(&mut tensors, u32::from(axis));
        put_u64(&mut tensors, off);
        put_u64(&mut tensors, len);
        put_u64(&mut tensors, 0);
    }
    if compact {
        tensors = compact::table(&compact_records).ok_or(too_big)?;
    }

    // Nodes: fixed 48-byte records then the edge table, or compact records behind an index.
    let mut nodes = Vec::new();
    if compact {
        let records: Vec<Vec<u8>> = desc
            .nodes
            .iter()
            .zip(&a.ops)
            .map(|(node, op)| {
                let (code, attrs) = op.encode();
                compact::encode_node(code, &node.inputs, node.output, &attrs)
            })
            .collect();
        nodes = compact::table(&records).ok_or(too_big)?;
    } else {
        let n_edges: usize = desc.nodes.iter().map(|n| n.inputs.len()).sum();
        put_u32(&mut nodes, u32_of(desc.nodes.len())?);
        put_u32(&mut nodes, u32_of(n_edges)?);
        let mut first = 0usize;
        for (node, op) in desc.nodes.iter().zip(&a.ops) {
            let (code, attrs) = op.encode();
            put_u16(&mut nodes, code);
            put_u16(
                &mut nodes,
                u16::try_from(node.inputs.len()).map_err(|_| too_big)?,
            );
            put_u32(&mut nodes, u32_of(first)?);
            put_u32(&mut nodes, node.output);
            put_u32(&mut nodes, 0);
            for w in attrs {
                put_u32(&mut nodes, w);
            }
            first += node.inputs.len();
        }
        for node in &desc.nodes {
            for t in &node.inputs {
                put_u32(&mut nodes, *t);
            }
        }
    }

    // Signature.
    let mut sig = Vec::new();
    put_u32(&mut sig, u32_of(desc.inputs.len())?);
    put_u32(&mut sig, desc.output);
    put_u32(&mut sig, a.state_dim);
    put_u32(&mut sig, 0);
    for inp in &desc.inputs {
        put_u32(&mut sig, inp.tensor);
        put_u32(&mut sig, inp.role.code());
    }

    // Metadata.
    let mut meta = Vec::new();
    put_u32(&mut meta, u32_of(desc.metadata.len())?);
    for (k, v) in &desc.metadata {
        if compact {
            for s in [k, v] {
                compact::put_varint(&mut meta, s.len() as u64);
                meta.extend_from_slice(s.as_bytes());
            }
            continue;
        }
        put_u32(&mut meta, u32_of(k.len())?);
        put_u32(&mut meta, u32_of(v.len())?);
        meta.extend_from_slice(k.as_bytes());
        meta.extend_from_slice(v.as_bytes());
    }

    // Names: tensors, then nodes; version 3 only the non-empty ones, each behind its number.
    let mut names = Vec::new();
    let all_names = desc
        .tensors
        .iter()
        .map(|t| &t.name)
        .chain(desc.nodes.iter().map(|n| &n.name));
    if compact {
        let named: Vec<(usize, &alloc::string::String)> = all_names
            .enumerate()
            .filter(|(_, n)| !n.is_empty())
            .collect();
        compact::put_varint(&mut names, named.len() as u64);
        for (i, name) in named {
            compact::put_varint(&mut names, i as u64);
            compact::put_varint(&mut names, name.len() as u64);
            names.extend_from_slice(name.as_bytes());
        }
    } else {
        put_u32(&mut names, u32_of(desc.tensors.len())?);
        put_u32(&mut names, u32_of(desc.nodes.len())?);
        for name in all_names {
            put_str(&mut names, name)?;
        }
    }

    // Assemble: header, section table, 16-aligned sections.
    let mut sections: Vec<(u16, u16, &[u8])> = vec![
        (section::TENSORS, SECTION_FLAG_REQUIRED, &tensors),
        (section::NODES, SECTION_FLAG_REQUIRED, &nodes),
        (section::WEIGHTS, SECTION_FLAG_REQUIRED, &weights),
        (section::PLAN, SECTION_FLAG_REQUIRED, &plan_sec),
        (section::SIGNATURE, SECTION_FLAG_REQUIRED, &sig),
        (section::METADATA, 0, &meta),
    ];
    // Names only when some tensor or node has one (an export with `--strip-names` has none).
    let named = desc.tensors.iter().any(|t| !t.name.is_empty())
        || desc.nodes.iter().any(|n| !n.name.is_empty());
    if named {
        sections.push((section::NAMES, 0, &names));
    }
    // Optional: the source ONNX bytes, for flowrt-ort.
    if let Some(onnx) = &desc.onnx {
        sections.push((section::ONNX, 0, onnx));
    }
    // The time convention: required when present, so readers that predate it refuse the file
    // rather than sample it on the wrong axis; absent for the default convention.
    desc.time.validate()?;
    let time = crate::format::sampling::encode_time(&desc.time);
    if !desc.time.is_default() {
        sections.push((section::TIME, SECTION_FLAG_REQUIRED, &time));
    }
    let defaults = match &desc.solver_defaults {
        None => None,
        Some(d) => Some(crate::format::sampling::encode_defaults(
            &crate::format::sampling::SolverDefaults {
                method: d.method,
                steps: d.steps,
                grid: match &d.grid_points {
                    Some(p) => Some(crate::grid::GridSpec::Explicit(p)),
                    None => d.grid,
                },
                guidance: d.guidance,
            },
        )?),
    };
    if let Some(d) = &defaults {
        sections.push((section::SOLVER_DEFAULTS, 0, d));
    }
    // Multi-network files: the stage table, then each nested file 16-byte aligned.
    let mut pipe = Vec::new();
    if !desc.pipeline.is_empty() {
        let n = desc.pipeline.len();
        put_u32(&mut pipe, u32_of(n)?);
        put_u32(&mut pipe, 0);
        let mut off = align_up(8 + crate::format::pipeline::STAGE_RECORD_LEN * n).ok_or(too_big)?;
        let mut offsets = Vec::with_capacity(n);
        for (_, file) in &desc.pipeline {
            offsets.push(off);
            off = align_up(off.checked_add(file.len()).ok_or(too_big)?).ok_or(too_big)?;
        }
        for ((kind, file), o) in desc.pipeline.iter().zip(&offsets) {
            let (a, b) = kind.params();
            put_u16(&mut pipe, kind.code());
            put_u16(&mut pipe, 0);
            put_u32(&mut pipe, 0);
            put_u32(&mut pipe, a.to_bits());
            put_u32(&mut pipe, b.to_bits());
            put_u64(&mut pipe, *o as u64);
            put_u64(&mut pipe, file.len() as u64);
        }
        for ((_, file), o) in desc.pipeline.iter().zip(&offsets) {
            pipe.resize(*o, 0);
            pipe.extend_from_slice(file);
        }
        sections.push((section::PIPELINE, SECTION_FLAG_REQUIRED, &pipe));
    }
    let entry_len = if compact {
        crate::format::SECTION_ENTRY_LEN_COMPACT
    } else {
        SECTION_ENTRY_LEN
    };
    let table_end = HEADER_LEN + sections.len() * entry_len;
    let mut offsets = Vec::with_capacity(sections.len());
    let up = |n: usize| n.checked_add(align - 1).map(|n| n & !(align - 1));
    let mut pos = up(table_end).ok_or(too_big)?;
    for (_, _, body) in &sections {
        offsets.push(pos);
        pos = up(pos.checked_add(body.len()).ok_or(too_big)?).ok_or(too_big)?;
    }
    let mut out = Vec::with_capacity(pos);
    out.extend_from_slice(&MAGIC);
    put_u16(&mut out, version);
    put_u16(&mut out, 0);
    put_u64(&mut out, 0); // total length, patched below
    put_u32(&mut out, 0); // checksum, patched below
    put_u32(&mut out, sections.len() as u32);
    put_u64(&mut out, 0);
    for ((kind, flags, body), off) in sections.iter().zip(&offsets) {
        put_u16(&mut out, *kind);
        put_u16(&mut out, *flags);
        if !compact {
            // Version 3 implies the offsets: each section at the next multiple of 4.
            put_u32(&mut out, 0);
            put_u64(&mut out, *off as u64);
        }
        put_u64(&mut out, body.len() as u64);
    }
    for (_, _, body) in &sections {
        pad_to(&mut out, align);
        out.extend_from_slice(body);
    }
    let total = (out.len() as u64).to_le_bytes();
    if let Some(dst) = out.get_mut(8..16) {
        dst.copy_from_slice(&total);
    }
    let crc = crate::format::file_checksum(&out).to_le_bytes();
    if let Some(dst) = out.get_mut(16..20) {
        dst.copy_from_slice(&crc);
    }

    // The reader must accept what we wrote.
    let check = crate::format::AlignedBytes::copy_from(&out);
    crate::Model::from_bytes(check.as_slice())?;
    Ok(out)
}

/// Validates `desc` (the same rules as [`write()`]) and plans its memory.
///
/// Errors: as [`write()`].
pub fn plan_model(desc: &ModelDesc) -> Result<MemoryPlan, Error> {
    Ok(analyze(desc)?.plan)
}
