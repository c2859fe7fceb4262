//! Loading a `.frt` file: [`Model::from_bytes`] validates everything once, then borrows the
//! weights zero-copy. After a successful load no accessor or kernel can index out of bounds.

use core::ops::Range;

use crate::format::compact::{self, Table};
use crate::format::{
    self, align_up, check_output_shape, check_role_shape, le_u16, le_u32, le_u64, node_err, rules,
    section, tensor_err, InputRole, NodeOp, Region, ScaleType, Shape, TensorKind, WeightType,
    DTYPE_BF16, DTYPE_F16, DTYPE_F32, DTYPE_I8, DTYPE_I8_BF16_SCALES, DTYPE_I8_MINI_SCALES,
    HEADER_LEN, MAGIC, MAX_RANK, MAX_SECTIONS, NODE_ATTRS, NODE_RECORD_LEN, NONE_U32,
    PLAN_ENTRY_LEN, SECTION_ENTRY_LEN, SECTION_FLAG_REQUIRED, SIGNATURE_ENTRY_LEN,
    TENSOR_RECORD_LEN, TYPED_INPUT_RULE, VERSION, VERSION_COMPACT, VERSION_TYPED_WEIGHTS,
};
use crate::linked::{self, All, Selection};
use crate::ops::Weights;
use crate::Error;

mod load;
pub mod pipeline;

/// Most graph inputs a model can have (one per [`InputRole`]).
pub const MAX_INPUTS: usize = 16;

/// Number of input roles (the size of per-role tables).
const N_ROLES: usize = InputRole::ALL.len();

const fn invalid(what: &'static str) -> Error {
    Error::Invalid { what }
}

/// A validated `.frt` model borrowing its bytes (weights are not copied).
///
/// `Model` is `Copy`: it is a handful of slices into the file.
#[derive(Clone, Copy)]
pub struct Model<'a> {
    file_len: usize,
    tensors: &'a [u8],
    n_tensors: u32,
    nodes: &'a [u8],
    n_nodes: u32,
    edges: &'a [u8],
    /// Version 3: the tensor and node records behind their indexes (`tensors`, `nodes`
    /// and `edges` are then empty).
    tensor_table: Table<'a>,
    node_table: Table<'a>,
    /// The `WEIGHTS` section (4-aligned in a 4-aligned buffer).
    weights: &'a [u8],
    /// The file's format version (1: f32 constants only; 2: typed weights; 3: compact
    /// records).
    version: u16,
    plan: &'a [u8],
    n_plan: u32,
    fixed_bytes: usize,
    per_row_bytes: usize,
    signature: &'a [u8],
    /// At most 16 (checked by the loader); a `u16` so that `lut_codes` costs no size.
    n_inputs: u16,
    output: u32,
    state_dim: usize,
    metadata: &'a [u8],
    n_meta: u32,
    names: Option<&'a [u8]>,
    onnx: Option<&'a [u8]>,
    time: crate::time::TimeConvention,
    defaults: Option<&'a [u8]>,
    pipeline: Option<&'a [u8]>,
    /// Bit `j` (nodes 1 to 31): node `j` is a full-integer Dense whose input 0 is computed by
    /// node `j − 1`, a `Lut` read by nothing else, so the two pass int8 codes instead of f32
    /// values ([`Model::reads_lut_codes`]). Set by the loader. A `u32`: a `u64` made `Model`
    /// 8-aligned, and the pipeline's stage array of models grew the edge firmware's stack by
    /// 640 bytes.
    #[cfg(feature = "weights-int8")]
    lut_codes: u32,
}

impl core::fmt::Debug for Model<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Model")
            .field("file_len", &self.file_len)
            .field("tensors", &self.n_tensors)
            .field("nodes", &self.n_nodes)
            .field("inputs", &self.n_inputs)
            .field("state_dim", &self.state_dim)
            .field("weight_bytes", &self.weight_bytes())
            .field("fixed_arena_bytes", &self.fixed_bytes)
            .field("per_row_arena_bytes", &self.per_row_bytes)
            .finish()
    }
}

/// Decoded tensor record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TensorRec {
    pub(crate) kind: TensorKind,
    pub(crate) dtype: WeightType,
    pub(crate) shape: Shape,
    pub(crate) producer: u32,
    pub(crate) slot: u32,
    pub(crate) data_off: u64,
    pub(crate) data_len: u64,
    /// Version 3: the arena tensor's offset in its region (its own plan entry).
    pub(crate) plan_offset: usize,
}

/// Decoded node record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeRec {
    pub(crate) op: NodeOp,
    pub(crate) n_inputs: usize,
    /// Versions 1 and 2: the index of the first input in the edge table; version 3: the
    /// byte position of the first (coded) input in the node records.
    pub(crate) first_input: usize,
    pub(crate) output: u32,
}

/// Decoded plan entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlanEntry {
    pub(crate) tensor: u32,
    pub(crate) region: Region,
    pub(crate) offset: usize,
}

/// A graph input: position in the signature, tensor, role and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputInfo {
    /// Position in the signature (the order [`crate::exec::run`] expects inputs in).
    pub index: usize,
    /// Tensor index.
    pub tensor: u32,
    /// Role in `v(x, t)`.
    pub role: InputRole,
    /// Shape.
    pub shape: Shape,
}

/// A tensor, for `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorInfo<'a> {
    /// Tensor index.
    pub index: u32,
    /// Input, constant, intermediate or output.
    pub kind: TensorKind,
    /// Shape.
    pub shape: Shape,
    /// Name from the names section, if present.
    pub name: Option<&'a str>,
}

/// A node, for `inspect`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeInfo<'a> {
    /// Node index (execution order).
    pub index: u32,
    /// Operation and attributes.
    pub op: NodeOp,
    /// Output tensor index.
    pub output: u32,
    /// Name from the names section, if present.
    pub name: Option<&'a str>,
    inputs: NodeInputs<'a>,
}

/// Where a node's input list is: `u32`s (versions 1 and 2) or `n` varints (version 3).
#[derive(Debug, Clone, Copy, PartialEq)]
enum NodeInputs<'a> {
    Words(&'a [u8]),
    Coded(&'a [u8], usize),
}

impl<'a> NodeInfo<'a> {
    /// Input tensor indices.
    pub fn inputs(&self) -> impl Iterator<Item = u32> + 'a {
        let (words, coded, mut n) = match self.inputs {
            NodeInputs::Words(w) => (w, &[][..], 0),
            NodeInputs::Coded(c, n) => (&[][..], c, n),
        };
        let mut pos = 0usize;
        words
            .chunks_exact(4)
            .filter_map(|c| le_u32(c, 0))
            .chain(core::iter::from_fn(move || {
                n = n.checked_sub(1)?;
                compact::read_varint_u32(coded, &mut pos)
            }))
    }

    /// Operation name (`"Dense"`, `"Add"`, ...).
    pub fn op_name(&self) -> &'static str {
        self.op.name()
    }
}

/// Reads one length-prefixed UTF-8 string at `*pos`: a `u32` length (a varint length when
/// `compact`, version 3's names), then the bytes.
fn read_str<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    compact: bool,
    what: &'static str,
) -> Result<&'a str, Error> {
    let mut start = *pos;
    let len = if compact {
        compact::read_varint(buf, &mut start).ok_or(Error::Truncated { what })?
    } else {
        start = pos.checked_add(4).ok_or(invalid(what))?;
        u64::from(le_u32(buf, *pos).ok_or(Error::Truncated { what })?)
    };
    let len = to_usize(len, what)?;
    let end = start.checked_add(len).ok_or(invalid(what))?;
    let bytes = buf.get(start..end).ok_or(Error::Truncated { what })?;
    let s = core::str::from_utf8(bytes).map_err(|_| invalid("string is not valid UTF-8"))?;
    *pos = end;
    Ok(s)
}

/// Whether a file of format `version` has compact records (version 3). Without the
/// `fixed-records` feature the loader accepts version 3 only, so this is `true` and the
/// compiler drops the version-1/2 record code (firmware for a version-3 file).
pub(crate) const fn compact_version(version: u16) -> bool {
    !cfg!(feature = "fixed-records") || version >= VERSION_COMPACT
}

/// The number of the next named tensor or node in a version-3 `NAMES` section (a varint
/// at `pos`), or `None` at the end of the section.
fn read_name_index(buf: &[u8], pos: &mut usize) -> Option<usize> {
    if *pos >= buf.len() {
        return None;
    }
    usize::try_from(compact::read_varint(buf, pos)?).ok()
}

/// `a * b + c` with overflow checks, as usize.
fn mul_add(a: usize, b: usize, c: usize) -> Option<usize> {
    a.checked_mul(b)?.checked_add(c)
}

fn to_usize(v: u64, what: &'static str) -> Result<usize, Error> {
    usize::try_from(v).map_err(|_| invalid(what))
}

/// Checks that `S` links the stored weight type `t` (f32 always): `Ok(())`, or
/// [`Error::NotLinked`] naming it.
#[inline(always)]
pub(crate) fn check_weight_type<S: Selection + ?Sized>(t: WeightType) -> Result<(), Error> {
    let (bit, what) = match t {
        WeightType::F32 => return Ok(()),
        WeightType::F16 => (linked::weight::F16, "f16 weights"),
        WeightType::Bf16 => (linked::weight::BF16, "bf16 weights"),
        WeightType::Int8 { .. } => (linked::weight::INT8, "int8 weights"),
    };
    if S::WEIGHTS & bit != 0 {
        Ok(())
    } else {
        Err(linked::not_linked(what))
    }
}

impl<'a> Model<'a> {
    /// Whether the file has compact records (version 3; [`compact_version`]).
    #[inline(always)]
    fn compact(&self) -> bool {
        compact_version(self.version)
    }

    /// Validates a `.frt` image and borrows it. The buffer must start at a 4-byte aligned
    /// address (16 recommended: `format::AlignedBytes` (feature `alloc`), [`crate::include_frt!`]);
    /// bytes after the file's recorded length are ignored.
    ///
    /// Checks, in order: alignment, magic, version, header flags, length, checksum, the
    /// section table, every section's layout, and then the whole graph: tensor records
    /// (kind, dtype, shape, constant data in bounds and 16-aligned), node records (op code,
    /// attributes, arity, tensor ids, topological order, shape rules per op), the memory plan
    /// (every arena tensor has a slot inside its region, no node's output overlaps its
    /// inputs), the signature (roles, shapes, output) and all strings (UTF-8).
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Model<'a>, Error> {
        Model::from_bytes_with::<All>(bytes)
    }

    /// [`Model::from_bytes`] for a build that links only what `S` selects
    /// ([`crate::select`]): a file with an op kind, a weight type or a section (`PIPELINE`)
    /// that `S` leaves out is refused with [`Error::NotLinked`] naming it, before any of
    /// that item's checks (which the build does not contain); everything else is checked
    /// exactly as [`Model::from_bytes`] checks it. With [`All`] it is [`Model::from_bytes`].
    pub fn from_bytes_with<S: Selection + ?Sized>(bytes: &'a [u8]) -> Result<Model<'a>, Error> {
        let model = Model::load::<S>(bytes);
        #[cfg(feature = "defmt")]
        if let Err(e) = &model {
            defmt::error!("flowrt: loading the model failed: {}", e);
        }
        model
    }

    pub(crate) fn tensor_rec(&self, i: u32) -> Result<TensorRec, Error> {
        if self.compact() {
            return self.compact_tensor_rec(i);
        }
        let e = tensor_err(i as usize, "tensor id out of range");
        let off = (i as usize).checked_mul(TENSOR_RECORD_LEN).ok_or(e)?;
        let r = self
            .tensors
            .get(off..off.checked_add(TENSOR_RECORD_LEN).ok_or(e)?)
            .ok_or(e)?;
        let b = |o: usize| r.get(o).copied().unwrap_or(0);
        let kind =
            TensorKind::from_code(b(0)).ok_or(tensor_err(i as usize, "unknown tensor kind"))?;
        let mut dims = [0u32; MAX_RANK];
        for (j, d) in dims.iter_mut().enumerate() {
            *d = le_u32(r, 8 + 4 * j).unwrap_or(0);
        }
        let shape = Shape::from_raw(b(2), b(3), dims).map_err(|w| tensor_err(i as usize, w))?;
        // Word 36: the channel axis of an int8 constant, reserved (0) otherwise.
        let word36 = le_u32(r, 36).unwrap_or(u32::MAX);
        let dtype = self.weight_type(i, b(1), word36, &shape)?;
        if (word36 != 0 && !matches!(dtype, WeightType::Int8 { .. })) || le_u64(r, 56) != Some(0) {
            return Err(tensor_err(i as usize, "reserved field is not zero"));
        }
        Ok(TensorRec {
            kind,
            dtype,
            shape,
            producer: le_u32(r, 4).unwrap_or(NONE_U32),
            slot: le_u32(r, 32).unwrap_or(NONE_U32),
            data_off: le_u64(r, 40).unwrap_or(0),
            data_len: le_u64(r, 48).unwrap_or(0),
            plan_offset: 0,
        })
    }

    /// [`Model::tensor_rec`] of a version-3 file: the compact record decoded, the data length
    /// derived from the shape and type, the tensor's own index as its plan slot.
    fn compact_tensor_rec(&self, i: u32) -> Result<TensorRec, Error> {
        let err = |w| tensor_err(i as usize, w);
        let (_, r) = self
            .tensor_table
            .record(i)
            .ok_or(err("tensor id out of range or its index is not increasing"))?;
        let f = compact::decode_tensor(r).map_err(err)?;
        let kind = TensorKind::from_code(f.kind).ok_or(err("unknown tensor kind"))?;
        let shape = Shape::from_raw(f.rank, f.batch_axis, f.dims).map_err(err)?;
        let dtype = self.weight_type(i, f.dtype, u32::from(f.axis), &shape)?;
        let (data_len, slot) = match kind {
            TensorKind::Const => {
                let elements = shape.row_elements().ok_or(err("tensor is too large"))?;
                let channels = dtype.channels(&shape).map_err(err)?;
                let len = dtype
                    .data_len(elements, channels)
                    .ok_or(err("tensor is too large"))?;
                (len, NONE_U32)
            }
            TensorKind::Intermediate | TensorKind::Output => (0, i),
            TensorKind::Input => (0, NONE_U32),
        };
        Ok(TensorRec {
            kind,
            dtype,
            shape,
            producer: f.producer,
            slot,
            data_off: f.data_off,
            data_len,
            plan_offset: to_usize(f.plan_offset, "plan offset is too large")?,
        })
    }

    /// The stored type of tensor `i` from its record's `dtype` code and word 36.
    ///
    /// Errors: an unknown code, a typed constant in a version-1 file, an int8 axis outside
    /// the rank ([`Error::InvalidTensor`]); a type this build lacks
    /// ([`Error::UnsupportedWeightType`]).
    fn weight_type(
        &self,
        i: u32,
        code: u8,
        word36: u32,
        shape: &Shape,
    ) -> Result<WeightType, Error> {
        let t = match code {
            DTYPE_F32 => return Ok(WeightType::F32),
            DTYPE_F16 => WeightType::F16,
            DTYPE_BF16 => WeightType::Bf16,
            DTYPE_I8 | DTYPE_I8_BF16_SCALES | DTYPE_I8_MINI_SCALES => {
                // Version 3 adds one scale for the whole tensor (axis = rank) and 8-bit
                // scales.
                let compact = self.compact();
                let axis = word36 as usize;
                if axis > shape.rank() || (axis == shape.rank() && !compact) {
                    return Err(tensor_err(
                        i as usize,
                        "int8 channel axis is not below the rank (nor, in version 3, the rank)",
                    ));
                }
                let scales = match code {
                    DTYPE_I8 => ScaleType::F32,
                    DTYPE_I8_BF16_SCALES => ScaleType::Bf16,
                    _ if compact => ScaleType::Mini,
                    _ => {
                        return Err(tensor_err(
                            i as usize,
                            "8-bit int8 scales (dtype 5) need format version 3",
                        ))
                    }
                };
                WeightType::Int8 {
                    axis: word36 as u8,
                    scales,
                }
            }
            _ => return Err(tensor_err(i as usize, "unknown dtype")),
        };
        if self.version < VERSION_TYPED_WEIGHTS {
            return Err(tensor_err(
                i as usize,
                "a version-1 file stores f32 only (dtype must be 0)",
            ));
        }
        let built = match t {
            WeightType::F16 | WeightType::Bf16 => cfg!(feature = "weights-f16"),
            _ => cfg!(feature = "weights-int8"),
        };
        if !built {
            return Err(Error::UnsupportedWeightType {
                tensor: i,
                dtype: t.name(),
            });
        }
        Ok(t)
    }

    /// Whether node `j`, a full-integer Dense, reads int8 codes that node `j − 1`, a `Lut`
    /// only it reads, writes in place of f32 values (`ops::lut_codes`; the same bits as
    /// f32 values quantized by the Dense). Only among the first 32 nodes; `false` for a
    /// `Lut` table holding a NaN (a code cannot carry it).
    #[cfg(feature = "weights-int8")]
    pub(crate) fn reads_lut_codes(&self, j: u32) -> bool {
        j < 32 && self.lut_codes >> j & 1 != 0
    }

    pub(crate) fn node_rec(&self, i: u32) -> Result<NodeRec, Error> {
        self.node_rec_with::<All>(i)
    }

    /// [`Model::node_rec`] decoding only the op kinds `S` links: a node of another kind is
    /// [`Error::NotLinked`] naming it.
    pub(crate) fn node_rec_with<S: Selection + ?Sized>(&self, i: u32) -> Result<NodeRec, Error> {
        if self.compact() {
            let err = |w| node_err(i as usize, w);
            let (start, r) = self
                .node_table
                .record(i)
                .ok_or(err("node id out of range or its index is not increasing"))?;
            let f = compact::decode_node(r).map_err(err)?;
            format::opcode_linked::<S>(f.code, f.n_inputs)?;
            let op = NodeOp::decode_linked::<S>(f.code, f.attrs).map_err(err)?;
            return Ok(NodeRec {
                op,
                n_inputs: f.n_inputs,
                first_input: start + f.inputs_at,
                output: f.output,
            });
        }
        let e = node_err(i as usize, "node id out of range");
        let off = (i as usize).checked_mul(NODE_RECORD_LEN).ok_or(e)?;
        let r = self
            .nodes
            .get(off..off.checked_add(NODE_RECORD_LEN).ok_or(e)?)
            .ok_or(e)?;
        let code = le_u16(r, 0).ok_or(e)?;
        let mut attrs = [0u32; NODE_ATTRS];
        for (j, a) in attrs.iter_mut().enumerate() {
            *a = le_u32(r, 16 + 4 * j).unwrap_or(0);
        }
        let n_inputs = usize::from(le_u16(r, 2).ok_or(e)?);
        format::opcode_linked::<S>(code, n_inputs)?;
        let op = NodeOp::decode_linked::<S>(code, attrs).map_err(|w| node_err(i as usize, w))?;
        if le_u32(r, 12) != Some(0) {
            return Err(node_err(i as usize, "reserved field is not zero"));
        }
        Ok(NodeRec {
            op,
            n_inputs,
            first_input: le_u32(r, 4).ok_or(e)? as usize,
            output: le_u32(r, 8).ok_or(e)?,
        })
    }

    /// Tensor id of input `j` of a node.
    pub(crate) fn node_input(&self, node: &NodeRec, j: usize) -> Result<u32, Error> {
        if j >= node.n_inputs {
            return Err(invalid("edge index out of range"));
        }
        if self.compact() {
            return compact::node_input(self.node_table.records(), node.first_input, j)
                .ok_or(invalid("edge index out of range"));
        }
        let idx = node
            .first_input
            .checked_add(j)
            .ok_or(invalid("edge index"))?;
        le_u32(self.edges, idx.checked_mul(4).ok_or(invalid("edge index"))?)
            .ok_or(invalid("edge index out of range"))
    }

    /// Plan entry `i` (version 3: of tensor `i`, from its record).
    ///
    /// Errors: `i` out of range; in version 3, tensor `i` not in the arena.
    pub(crate) fn plan_entry(&self, i: u32) -> Result<PlanEntry, Error> {
        if self.compact() {
            let rec = self.tensor_rec(i)?;
            if !rec.kind.in_arena() {
                return Err(invalid("plan slot of a tensor outside the arena"));
            }
            return Ok(Self::compact_plan_entry(i, &rec));
        }
        let off = (i as usize)
            .checked_mul(PLAN_ENTRY_LEN)
            .ok_or(invalid("plan slot"))?;
        let tensor = le_u32(self.plan, off).ok_or(invalid("plan slot out of range"))?;
        let region = le_u32(self.plan, off + 4)
            .and_then(Region::from_code)
            .ok_or(invalid("unknown plan region"))?;
        let offset = le_u64(self.plan, off + 8).ok_or(invalid("plan slot out of range"))?;
        Ok(PlanEntry {
            tensor,
            region,
            offset: to_usize(offset, "plan offset is too large")?,
        })
    }

    fn sig_entry(&self, i: usize) -> Result<(u32, InputRole), Error> {
        let off = i
            .checked_mul(SIGNATURE_ENTRY_LEN)
            .ok_or(invalid("signature"))?;
        let tensor = le_u32(self.signature, off).ok_or(invalid("signature entry out of range"))?;
        let role = le_u32(self.signature, off + 4)
            .and_then(InputRole::from_code)
            .ok_or(invalid("unknown input role"))?;
        Ok((tensor, role))
    }

    /// A version-3 tensor's plan entry: the region follows from its batch dim.
    fn compact_plan_entry(i: u32, rec: &TensorRec) -> PlanEntry {
        PlanEntry {
            tensor: i,
            region: if rec.shape.has_batch() {
                Region::PerRow
            } else {
                Region::Fixed
            },
            offset: rec.plan_offset,
        }
    }

    /// Size of an arena tensor in its region's unit (bytes, or bytes per batch row).
    fn slot_size(shape: &Shape) -> Option<usize> {
        usize::try_from(shape.row_elements()?.checked_mul(4)?).ok()
    }

    /// Position of an arena tensor in its region: `(region, start, end)` in region units.
    fn slot_range(&self, rec: &TensorRec) -> Result<(Region, usize, usize), Error> {
        let p = if self.compact() {
            Self::compact_plan_entry(rec.slot, rec)
        } else {
            self.plan_entry(rec.slot)?
        };
        let size = Self::slot_size(&rec.shape).ok_or(invalid("tensor too large"))?;
        Ok((
            p.region,
            p.offset,
            p.offset
                .checked_add(size)
                .ok_or(invalid("plan slot overflows"))?,
        ))
    }

    /// Element range (f32 units) of an arena tensor for batch size `batch`.
    pub(crate) fn arena_range(&self, rec: &TensorRec, batch: usize) -> Result<Range<usize>, Error> {
        let (region, start, end) = self.slot_range(rec)?;
        let e = invalid("arena offset overflows");
        let (s, t) = match region {
            Region::Fixed => (start, end),
            Region::PerRow => (
                mul_add(start, batch, self.fixed_bytes).ok_or(e)?,
                mul_add(end, batch, self.fixed_bytes).ok_or(e)?,
            ),
        };
        Ok(s / 4..t / 4)
    }

    /// The bytes of a `Const` tensor's data.
    fn const_bytes(&self, rec: &TensorRec) -> Result<&'a [u8], Error> {
        let e = invalid("constant data out of range");
        let s = usize::try_from(rec.data_off).map_err(|_| e)?;
        let n = usize::try_from(rec.data_len).map_err(|_| e)?;
        self.weights.get(s..s.checked_add(n).ok_or(e)?).ok_or(e)
    }

    /// Constant data of an f32 `Const` tensor.
    ///
    /// Errors: a constant stored in another type ([`Error::Invalid`]: only the weight inputs
    /// of Dense, Conv, ConvTranspose and Gather may be typed, see [`Model::const_weights`]).
    pub(crate) fn const_data(&self, rec: &TensorRec) -> Result<&'a [f32], Error> {
        if rec.dtype != WeightType::F32 {
            return Err(invalid(
                "an f16 / bf16 / int8 constant feeds an input that reads f32",
            ));
        }
        bytemuck::try_cast_slice(self.const_bytes(rec)?).map_err(|_| Error::Misaligned)
    }

    /// A `Const` tensor's data in its stored type.
    pub(crate) fn const_weights_of(&self, rec: &TensorRec) -> Result<Weights<'a>, Error> {
        self.const_weights_with::<All>(rec)
    }

    /// [`Model::const_weights_of`] for the weight types `S` links: another type is
    /// [`Error::NotLinked`].
    pub(crate) fn const_weights_with<S: Selection + ?Sized>(
        &self,
        rec: &TensorRec,
    ) -> Result<Weights<'a>, Error> {
        check_weight_type::<S>(rec.dtype)?;
        let bytes = self.const_bytes(rec)?;
        let cast = |_| Error::Misaligned;
        Ok(match rec.dtype {
            WeightType::F32 => Weights::F32(bytemuck::try_cast_slice(bytes).map_err(cast)?),
            #[cfg(feature = "weights-f16")]
            WeightType::F16 if S::WEIGHTS & linked::weight::F16 != 0 => {
                Weights::F16(bytemuck::try_cast_slice(bytes).map_err(cast)?)
            }
            #[cfg(feature = "weights-f16")]
            WeightType::Bf16 if S::WEIGHTS & linked::weight::BF16 != 0 => {
                Weights::Bf16(bytemuck::try_cast_slice(bytes).map_err(cast)?)
            }
            #[cfg(feature = "weights-int8")]
            WeightType::Int8 { axis, scales } if S::WEIGHTS & linked::weight::INT8 != 0 => {
                let e = invalid("constant data out of range");
                let elements = rec.shape.row_elements().ok_or(e)?;
                let elements = usize::try_from(elements).map_err(|_| e)?;
                let values_len = elements.checked_add(3).ok_or(e)? & !3;
                let (values, scale_bytes) = bytes.split_at_checked(values_len).ok_or(e)?;
                let (header, scale_bytes) = scale_bytes
                    .split_at_checked(scales.header_bytes() as usize)
                    .ok_or(e)?;
                let values: &[i8] =
                    bytemuck::try_cast_slice(values.get(..elements).ok_or(e)?).map_err(cast)?;
                let scales = match scales {
                    ScaleType::F32 => crate::ops::Scales::F32(
                        bytemuck::try_cast_slice(scale_bytes).map_err(cast)?,
                    ),
                    ScaleType::Bf16 => crate::ops::Scales::Bf16(
                        bytemuck::try_cast_slice(scale_bytes).map_err(cast)?,
                    ),
                    ScaleType::Mini => crate::ops::Scales::Mini {
                        base: header.first().copied().ok_or(e)?,
                        codes: scale_bytes,
                    },
                };
                let (_, inner) = rec.shape.channel_layout(usize::from(axis)).ok_or(e)?;
                Weights::Int8(crate::ops::Int8Weights {
                    values,
                    scales,
                    inner,
                })
            }
            #[allow(unreachable_patterns)]
            _ => {
                return Err(Error::UnsupportedWeightType {
                    tensor: 0,
                    dtype: rec.dtype.name(),
                })
            }
        })
    }

    /// Signature position of an `Input` tensor.
    pub(crate) fn input_position(&self, tensor: u32) -> Result<usize, Error> {
        (0..self.n_inputs as usize)
            .find(|i| self.sig_entry(*i).is_ok_and(|(t, _)| t == tensor))
            .ok_or(invalid("input tensor is not in the signature"))
    }

    // -----------------------------------------------------------------------------------
    // Whole-graph validation.

    /// Length of the file in bytes (as recorded in its header).
    pub fn file_len(&self) -> usize {
        self.file_len
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.n_tensors as usize
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.n_nodes as usize
    }

    /// Number of graph inputs.
    pub fn input_count(&self) -> usize {
        self.n_inputs as usize
    }

    /// Graph input `i` (signature order).
    pub fn input(&self, i: usize) -> Option<InputInfo> {
        if i >= self.input_count() {
            return None;
        }
        let (tensor, role) = self.sig_entry(i).ok()?;
        let shape = self.tensor_rec(tensor).ok()?.shape;
        Some(InputInfo {
            index: i,
            tensor,
            role,
            shape,
        })
    }

    /// Graph inputs in signature order.
    pub fn inputs(&self) -> impl Iterator<Item = InputInfo> + '_ {
        (0..self.input_count()).filter_map(|i| self.input(i))
    }

    /// The input with role `role`, if any.
    pub fn input_by_role(&self, role: InputRole) -> Option<InputInfo> {
        self.inputs().find(|i| i.role == role)
    }

    /// Number of classes `N` of the `label` input: the rows of the `Gather` table(s) the
    /// label indexes (directly, or through `Reshape`s); the smallest if there are several.
    /// `None` without a label input, or when the label feeds no `Gather` index.
    /// Callers use it to validate labels, e.g. a null class for classifier-free guidance.
    pub fn label_classes(&self) -> Option<usize> {
        let label = self.input_by_role(InputRole::Label)?.tensor;
        let mut classes: Option<usize> = None;
        // Op codes and input lists straight from the (validated) records: decoding every
        // node would link every op kind's attribute checks into a firmware.
        let compact = self.compact();
        let table = self.node_table;
        let code = |i: u32| {
            if compact {
                compact::decode_node(table.record(i)?.1)
                    .ok()
                    .map(|f| f.code)
            } else {
                le_u16(self.nodes, (i as usize).checked_mul(NODE_RECORD_LEN)?)
            }
        };
        let input = |i: u32, j: usize| {
            if compact {
                let (start, r) = table.record(i)?;
                let f = compact::decode_node(r).ok()?;
                if j >= f.n_inputs {
                    return None;
                }
                return compact::node_input(table.records(), start + f.inputs_at, j);
            }
            let at = (i as usize).checked_mul(NODE_RECORD_LEN)?.checked_add(4)?;
            let first = le_u32(self.nodes, at)?;
            le_u32(self.edges, (first as usize).checked_add(j)?.checked_mul(4)?)
        };
        for i in 0..self.n_nodes {
            if code(i)? != format::opcode::GATHER {
                continue;
            }
            // Follow the index back through Reshapes (each produced by an earlier node, so
            // this ends) to where its values come from.
            let mut src = input(i, 1)?;
            loop {
                let rec = self.tensor_rec(src).ok()?;
                if !rec.kind.in_arena() {
                    break;
                }
                if code(rec.producer)? != format::opcode::RESHAPE {
                    break;
                }
                src = input(rec.producer, 0)?;
            }
            if src == label {
                let table = self.tensor_rec(input(i, 0)?).ok()?;
                if let Some(crate::format::Dim::Fixed(n)) = table.shape.dim(0) {
                    let n = n as usize;
                    classes = Some(classes.map_or(n, |c| c.min(n)));
                }
            }
        }
        classes
    }

    /// Width `C` of the `cond` input (`[B, C]`), if the model has one.
    pub fn cond_dim(&self) -> Option<usize> {
        let info = self.input_by_role(InputRole::Cond)?;
        usize::try_from(info.shape.row_elements()?).ok()
    }

    /// Tensor index of the output (the velocity).
    pub fn output_tensor(&self) -> u32 {
        self.output
    }

    /// Shape of the output (batch dim first, `state_dim()` elements per row).
    pub fn output_shape(&self) -> Shape {
        self.tensor_rec(self.output)
            .map(|r| r.shape)
            .unwrap_or(Shape::SCALAR)
    }

    /// Elements per row of the state `x` (`D`; for an `xt` model, the `xt` width minus 1).
    pub fn state_dim(&self) -> usize {
        self.state_dim
    }

    /// Elements per row of the output: `state_dim` for a velocity field; a decoder's data
    /// dimension for a model without a time input.
    pub fn output_dim(&self) -> usize {
        self.output_shape()
            .row_elements()
            .and_then(|r| usize::try_from(r).ok())
            .unwrap_or(0)
    }

    /// Number of parameters (elements of all constants, whatever their stored type).
    pub fn param_count(&self) -> usize {
        (0..self.n_tensors)
            .filter_map(|i| self.tensor_rec(i).ok())
            .filter(|r| r.kind == TensorKind::Const)
            .fold(0usize, |acc, r| {
                let n = r.shape.row_elements().unwrap_or(u64::MAX);
                acc.saturating_add(usize::try_from(n).unwrap_or(usize::MAX))
            })
    }

    /// Size of the weights section in bytes (constant data plus alignment padding).
    pub fn weight_bytes(&self) -> usize {
        self.weights.len()
    }

    /// Alignment of each constant's data in the weights section: 16 bytes in versions 1
    /// and 2, 4 in version 3.
    pub(crate) fn data_align(&self) -> usize {
        if self.compact() {
            format::ALIGN_COMPACT
        } else {
            format::ALIGN
        }
    }

    /// The file's format version (1: every constant is f32; 2: some are f16, bf16 or int8;
    /// 3: compact records, any weight types).
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The values of constant tensor `i` (zero-copy from the weights section), for backends
    /// that upload the weights elsewhere (a GPU).
    ///
    /// Errors: [`Error::BadArgument`] when `i` is not a constant tensor.
    pub fn const_values(&self, i: u32) -> Result<&'a [f32], Error> {
        self.const_data(&self.const_rec(i)?)
    }

    /// Constant tensor `i` in its stored type (f32, f16, bf16, int8 with scales), for
    /// backends that upload the weights elsewhere ([`Weights::dequantize`] gives f32).
    ///
    /// Errors: [`Error::BadArgument`] when `i` is not a constant tensor.
    pub fn const_weights(&self, i: u32) -> Result<Weights<'a>, Error> {
        self.const_weights_of(&self.const_rec(i)?)
    }

    /// Every constant tensor in its stored type, in tensor order (a loaded model's constants
    /// all decode; see [`Model::const_weights`]).
    pub fn constants(&self) -> impl Iterator<Item = Weights<'a>> + '_ {
        (0..self.n_tensors).filter_map(|i| self.const_weights(i).ok())
    }

    fn const_rec(&self, i: u32) -> Result<TensorRec, Error> {
        let rec = self.tensor_rec(i)?;
        if rec.kind != TensorKind::Const {
            return Err(Error::BadArgument {
                what: "tensor is not a constant",
            });
        }
        Ok(rec)
    }

    /// Tensor `i`.
    pub fn tensor(&self, i: u32) -> Option<TensorInfo<'a>> {
        let r = self.tensor_rec(i).ok()?;
        Some(TensorInfo {
            index: i,
            kind: r.kind,
            shape: r.shape,
            name: self.name_at(i as usize),
        })
    }

    /// All tensors in index order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorInfo<'a>> + '_ {
        let mut names = self.names_from(0);
        (0..self.n_tensors).filter_map(move |i| {
            let name = names.next();
            let r = self.tensor_rec(i).ok()?;
            Some(TensorInfo {
                index: i,
                kind: r.kind,
                shape: r.shape,
                name,
            })
        })
    }

    /// Node `i`.
    pub fn node(&self, i: u32) -> Option<NodeInfo<'a>> {
        let name = self.name_at((self.n_tensors as usize).checked_add(i as usize)?);
        self.node_info(i, name)
    }

    fn node_info(&self, i: u32, name: Option<&'a str>) -> Option<NodeInfo<'a>> {
        let r = self.node_rec(i).ok()?;
        let inputs = if self.compact() {
            NodeInputs::Coded(self.node_table.records().get(r.first_input..)?, r.n_inputs)
        } else {
            let start = r.first_input.checked_mul(4)?;
            NodeInputs::Words(
                self.edges
                    .get(start..start.checked_add(r.n_inputs.checked_mul(4)?)?)?,
            )
        };
        Some(NodeInfo {
            index: i,
            op: r.op,
            output: r.output,
            name,
            inputs,
        })
    }

    /// All nodes in execution order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeInfo<'a>> + '_ {
        let mut names = self.names_from(self.n_tensors as usize);
        (0..self.n_nodes).filter_map(move |i| {
            let name = names.next();
            self.node_info(i, name)
        })
    }

    /// Iterator over the names of tensors then nodes, starting at number `skip` (empty
    /// without names). Version 3 stores only the non-empty names, each behind its number
    /// (increasing, checked at load); the others are `""`.
    fn names_from(&self, skip: usize) -> impl Iterator<Item = &'a str> {
        let buf = self.names.unwrap_or(&[]);
        let compact = self.compact();
        let total = if self.names.is_some() {
            self.n_tensors as usize + self.n_nodes as usize
        } else {
            0
        };
        // Version 3: after the count, the next entry's number and where its string starts.
        let mut pos = 0usize;
        let mut next: Option<usize> = None;
        if compact {
            let _ = compact::read_varint(buf, &mut pos);
            next = read_name_index(buf, &mut pos);
        }
        let mut i = 0usize;
        core::iter::from_fn(move || {
            if i >= total {
                return None;
            }
            let here = i;
            i += 1;
            if !compact {
                return read_str(buf, &mut pos, false, "names").ok();
            }
            if next != Some(here) {
                return Some("");
            }
            let s = read_str(buf, &mut pos, true, "names").ok();
            next = read_name_index(buf, &mut pos);
            s
        })
        .skip(skip)
    }

    fn name_at(&self, i: usize) -> Option<&'a str> {
        self.names.and_then(|_| self.names_from(i).next())
    }

    /// Metadata key/value pairs in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let buf = self.metadata;
        let mut pos = 0usize;
        let mut left = self.n_meta;
        let compact = self.compact();
        core::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            if compact {
                let k = read_str(buf, &mut pos, true, "metadata").ok()?;
                let v = read_str(buf, &mut pos, true, "metadata").ok()?;
                return Some((k, v));
            }
            let kl = le_u32(buf, pos)? as usize;
            let vl = le_u32(buf, pos + 4)? as usize;
            let ks = pos + 8;
            let vs = ks.checked_add(kl)?;
            let end = vs.checked_add(vl)?;
            let k = core::str::from_utf8(buf.get(ks..vs)?).ok()?;
            let v = core::str::from_utf8(buf.get(vs..end)?).ok()?;
            pos = end;
            Some((k, v))
        })
    }

    /// The source ONNX model stored in the optional `ONNX` section (`flowrt export
    /// --embed-onnx`), for running the same artifact with ONNX Runtime (`flowrt-ort`).
    /// Its contents are not validated by flowrt.
    pub fn embedded_onnx(&self) -> Option<&'a [u8]> {
        self.onnx
    }

    /// The further graphs of a multi-network file (`PIPELINE` section), validated at load;
    /// `None` for a single-network file. Parsing re-reads the nested files' headers, so keep
    /// the returned value rather than calling this per step.
    pub fn pipeline(&self) -> Option<pipeline::Pipeline<'a>> {
        self.pipeline.and_then(|b| pipeline::parse(self, b).ok())
    }

    /// The model's time convention (the `TIME` section; the default `t` 0 → 1, unscaled,
    /// when the file has none).
    pub fn time_convention(&self) -> crate::time::TimeConvention {
        self.time
    }

    /// The solver defaults baked in at export (the optional `SOLVER_DEFAULTS` section;
    /// explicit grid points are borrowed from the file), or `None`.
    pub fn solver_defaults(&self) -> Option<crate::format::sampling::SolverDefaults<'a>> {
        // Validated at load, so decoding again cannot fail.
        self.defaults
            .and_then(|b| crate::format::sampling::read_defaults(b).ok())
    }

    /// The value of the first metadata entry with key `key`.
    pub fn metadata_value(&self, key: &str) -> Option<&'a str> {
        self.metadata().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Size of the fixed arena region in bytes (independent of the batch size).
    pub fn fixed_arena_bytes(&self) -> usize {
        self.fixed_bytes
    }

    /// Size of the per-row arena region in bytes per batch row.
    pub fn per_row_arena_bytes(&self) -> usize {
        self.per_row_bytes
    }

    /// Arena bytes the graph needs for batch `batch`: `fixed + per_row * batch`
    /// (a multiple of 16). Enough for [`crate::exec::run`].
    pub fn graph_arena_bytes(&self, batch: usize) -> Result<usize, Error> {
        mul_add(self.per_row_bytes, batch, self.fixed_bytes).ok_or(Error::BadArgument {
            what: "batch size too large: arena size overflows",
        })
    }

    /// Per-call scratch of [`crate::exec::CpuField`] for batch `batch`: the time input
    /// (if the model has one), the assembled `[x, t]` rows (if it has an `xt` input), and
    /// the f32 label and guidance inputs (if it has them), each rounded up to 16 bytes.
    /// (`x` and `cond` are read from the caller's buffers.)
    pub fn scratch_bytes(&self, batch: usize) -> Result<usize, Error> {
        let e = Error::BadArgument {
            what: "batch size too large: arena size overflows",
        };
        let mut total = 0usize;
        for inp in self.inputs() {
            if matches!(
                inp.role,
                InputRole::T
                    | InputRole::Xt
                    | InputRole::Label
                    | InputRole::Guidance
                    | InputRole::Step
            ) {
                let n = inp.shape.elements(batch).ok_or(e)?;
                total = total
                    .checked_add(align_up(n.checked_mul(4).ok_or(e)?).ok_or(e)?)
                    .ok_or(e)?;
            }
        }
        Ok(total)
    }

    /// Total arena bytes [`crate::exec::CpuField`] needs for batch `batch`:
    /// [`Model::graph_arena_bytes`] + [`Model::scratch_bytes`]. Errors on overflow.
    pub fn required_arena_bytes(&self, batch: usize) -> Result<usize, Error> {
        self.graph_arena_bytes(batch)?
            .checked_add(self.scratch_bytes(batch)?)
            .ok_or(Error::BadArgument {
                what: "batch size too large: arena size overflows",
            })
    }
}
