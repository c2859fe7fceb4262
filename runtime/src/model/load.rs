//! Loading (what [`Model::from_bytes`] runs): the section table, every record and the whole
//! graph checked once, so nothing after a successful load can index out of bounds.

use super::*;

/// The layout of a section that is a table: a header of `header` bytes with the record
/// count (`u32`) at `count_at` and a reserved zero `u32` at `reserved_at`, then `count`
/// records of `entry` bytes and nothing after.
struct TableLayout {
    /// The section's name, for [`Error::Truncated`].
    name: &'static str,
    header: usize,
    count_at: usize,
    reserved_at: usize,
    entry: usize,
    /// The [`Error::Invalid`] messages for a nonzero reserved field and a wrong length.
    bad_reserved: &'static str,
    bad_length: &'static str,
}

impl TableLayout {
    /// Checks `bytes` against the layout and returns the record count.
    ///
    /// Errors: [`Error::Truncated`] when the header ends before its reserved field,
    /// [`Error::Invalid`] for a nonzero or missing reserved field or a length that does not
    /// match the count.
    fn check(&self, bytes: &[u8]) -> Result<u32, Error> {
        if bytes.len() < self.reserved_at {
            return Err(self.truncated());
        }
        let count = le_u32(bytes, self.count_at).ok_or(self.truncated())?;
        if le_u32(bytes, self.reserved_at) != Some(0) {
            return Err(invalid(self.bad_reserved));
        }
        if mul_add(count as usize, self.entry, self.header) != Some(bytes.len()) {
            return Err(invalid(self.bad_length));
        }
        Ok(count)
    }

    /// The error for a header cut short.
    fn truncated(&self) -> Error {
        Error::Truncated { what: self.name }
    }
}

const TENSORS_TABLE: TableLayout = TableLayout {
    name: "tensors section",
    header: 8,
    count_at: 0,
    reserved_at: 4,
    entry: TENSOR_RECORD_LEN,
    bad_reserved: "tensors section reserved field is not zero",
    bad_length: "tensors section length does not match its count",
};

const PLAN_TABLE: TableLayout = TableLayout {
    name: "plan section",
    header: 24,
    count_at: 16,
    reserved_at: 20,
    entry: PLAN_ENTRY_LEN,
    bad_reserved: "plan section reserved field is not zero",
    bad_length: "plan section length does not match its count",
};

const SIGNATURE_TABLE: TableLayout = TableLayout {
    name: "signature section",
    header: 16,
    count_at: 0,
    reserved_at: 12,
    entry: SIGNATURE_ENTRY_LEN,
    bad_reserved: "signature section reserved field is not zero",
    bad_length: "signature section length does not match its count",
};

/// The error of a full-integer node whose weight is not int8 along axis 0.
const INT8_ACT_WEIGHTS: &str =
    "int8 activations need int8 weights along axis 0 (output channel first)";

impl<'a> Model<'a> {
    /// [`Model::from_bytes_with`] without logging. Not inlined, so that its locals are off the
    /// stack once it returns (a firmware loads and then samples from the same function).
    #[inline(never)]
    pub(super) fn load<S: Selection + ?Sized>(bytes: &'a [u8]) -> Result<Model<'a>, Error> {
        if bytes.as_ptr().align_offset(4) != 0 {
            return Err(Error::Misaligned);
        }
        let magic = bytes.get(..4).ok_or(Error::Truncated { what: "header" })?;
        if magic != MAGIC {
            return Err(Error::BadMagic);
        }
        let version = le_u16(bytes, 4).ok_or(Error::Truncated { what: "header" })?;
        if !(VERSION..=VERSION_COMPACT).contains(&version) {
            return Err(Error::UnsupportedVersion { found: version });
        }
        if !cfg!(feature = "fixed-records") && version < VERSION_COMPACT {
            return Err(crate::linked::not_linked(
                "fixed records (format versions 1 and 2: feature fixed-records)",
            ));
        }
        let header = bytes
            .get(..HEADER_LEN)
            .ok_or(Error::Truncated { what: "header" })?;
        let total = le_u64(header, 8).ok_or(Error::Truncated { what: "header" })?;
        let total = usize::try_from(total).map_err(|_| Error::Truncated { what: "file" })?;
        let file = bytes
            .get(..total)
            .ok_or(Error::Truncated { what: "file" })?;
        if total < HEADER_LEN {
            return Err(invalid("file length is smaller than the header"));
        }
        let stored = le_u32(header, 16).ok_or(Error::Truncated { what: "header" })?;
        // Fuzzing builds (`cargo fuzz` passes `--cfg fuzzing`; see `fuzz/`) skip the
        // comparison, so mutated files reach the validation behind it instead of all failing
        // here. The checksum is still computed, so its code runs (and is fuzzed) as well.
        // Ordinary builds, firmware included, always compare.
        let computed = format::file_checksum(file);
        if stored != computed && !cfg!(fuzzing) {
            return Err(Error::ChecksumMismatch { stored, computed });
        }
        if le_u16(header, 6) != Some(0) {
            return Err(invalid("unknown header flags"));
        }
        if header.get(24..32).is_none_or(|r| r.iter().any(|b| *b != 0)) {
            return Err(invalid("reserved header bytes are not zero"));
        }
        let sections = Sections::parse(file, version)?;
        let model = Model::parse(sections, version)?.validate::<S>()?;
        if let Some(p) = model.pipeline {
            if !S::PIPELINE {
                return Err(linked::not_linked("multi-network files"));
            }
            pipeline::parse(&model, p)?;
        }
        Ok(model)
    }

    fn parse(s: Sections<'a>, version: u16) -> Result<Model<'a>, Error> {
        let compact = compact_version(version);
        // Tensors and nodes: fixed records (versions 1, 2) or compact tables (version 3).
        let (mut tensor_table, mut node_table) = (Table::default(), Table::default());
        let (tensors, n_tensors, nodes, n_nodes, edges);
        if compact {
            tensor_table = Table::parse(s.tensors).map_err(invalid)?;
            node_table = Table::parse(s.nodes).map_err(invalid)?;
            (tensors, n_tensors) = (&[][..], tensor_table.len());
            (nodes, n_nodes, edges) = (&[][..], node_table.len(), &[][..]);
        } else {
            let t = s.tensors;
            n_tensors = TENSORS_TABLE.check(t)?;
            tensors = t.get(8..).unwrap_or(&[]);
            let n = s.nodes;
            n_nodes = le_u32(n, 0).ok_or(Error::Truncated {
                what: "nodes section",
            })?;
            let n_edges = le_u32(n, 4).ok_or(Error::Truncated {
                what: "nodes section",
            })?;
            let nodes_end =
                mul_add(n_nodes as usize, NODE_RECORD_LEN, 8).ok_or(invalid("node count"))?;
            if mul_add(n_edges as usize, 4, nodes_end) != Some(n.len()) {
                return Err(invalid("nodes section length does not match its counts"));
            }
            nodes = n.get(8..nodes_end).ok_or(invalid("nodes section"))?;
            edges = n.get(nodes_end..).ok_or(invalid("nodes section"))?;
        }
        // Weights: zero-copy f32 view (the section is 16-aligned in a 4-aligned buffer).
        if s.weights.len() & 3 != 0 {
            return Err(invalid("weights section length is not a multiple of 4"));
        }
        // Constants are 16-aligned inside; f32 views are cast per constant.
        if s.weights.as_ptr().align_offset(4) != 0 {
            return Err(Error::Misaligned);
        }
        let weights = s.weights;
        // Plan: the region sizes, then (versions 1, 2) the entries; in version 3 each arena
        // tensor's record holds its own entry, and the section is the two sizes alone.
        let p = s.plan;
        let n_plan = if compact {
            if p.len() != 16 {
                return Err(invalid("plan section length is not 16"));
            }
            n_tensors
        } else {
            PLAN_TABLE.check(p)?
        };
        let fixed = le_u64(p, 0).ok_or(PLAN_TABLE.truncated())?;
        let per_row = le_u64(p, 8).ok_or(PLAN_TABLE.truncated())?;
        let fixed_bytes = to_usize(fixed, "fixed arena region is too large for this platform")?;
        let per_row_bytes = to_usize(
            per_row,
            "per-row arena region is too large for this platform",
        )?;
        if fixed_bytes % format::ALIGN != 0 || per_row_bytes % format::ALIGN != 0 {
            return Err(invalid("arena region sizes must be multiples of 16"));
        }
        // Signature.
        let g = s.signature;
        let n_inputs = SIGNATURE_TABLE.check(g)?;
        let output = le_u32(g, 4).ok_or(SIGNATURE_TABLE.truncated())?;
        let state_dim = le_u32(g, 8).ok_or(SIGNATURE_TABLE.truncated())?;
        // Metadata: count, then (key_len, value_len, key, value) entries; all UTF-8.
        let (metadata, n_meta) = match s.metadata {
            Some(m) => {
                let count = le_u32(m, 0).ok_or(Error::Truncated {
                    what: "metadata section",
                })?;
                let mut pos = 4usize;
                for _ in 0..count {
                    if compact {
                        // Version 3: varint-length key, then varint-length value.
                        read_str(m, &mut pos, true, "metadata entry")?;
                        read_str(m, &mut pos, true, "metadata entry")?;
                        continue;
                    }
                    let kl = le_u32(m, pos).ok_or(Error::Truncated {
                        what: "metadata entry",
                    })? as usize;
                    let vl = le_u32(m, pos + 4).ok_or(Error::Truncated {
                        what: "metadata entry",
                    })? as usize;
                    let ks = pos.checked_add(8).ok_or(invalid("metadata"))?;
                    let vs = ks.checked_add(kl).ok_or(invalid("metadata"))?;
                    let end = vs.checked_add(vl).ok_or(invalid("metadata"))?;
                    let (Some(k), Some(v)) = (m.get(ks..vs), m.get(vs..end)) else {
                        return Err(Error::Truncated {
                            what: "metadata entry",
                        });
                    };
                    if core::str::from_utf8(k).is_err() || core::str::from_utf8(v).is_err() {
                        return Err(invalid("metadata string is not valid UTF-8"));
                    }
                    pos = end;
                }
                if pos != m.len() {
                    return Err(invalid("metadata section has trailing bytes"));
                }
                (m.get(4..).unwrap_or(&[]), count)
            }
            None => (&[][..], 0),
        };
        // Names: tensor count, node count, then that many strings; version 3: the count
        // of named items, then each one's number (increasing, below tensors + nodes) and
        // string.
        let names = match s.names {
            Some(m) if compact => {
                let what = "names section";
                let mut pos = 0usize;
                let count = compact::read_varint(m, &mut pos).ok_or(Error::Truncated { what })?;
                let total = u64::from(n_tensors) + u64::from(n_nodes);
                let mut prev: Option<u64> = None;
                for _ in 0..count {
                    let i = compact::read_varint(m, &mut pos).ok_or(Error::Truncated { what })?;
                    if i >= total || prev.is_some_and(|p| i <= p) {
                        return Err(invalid(
                            "names section numbers must increase within the graph",
                        ));
                    }
                    prev = Some(i);
                    read_str(m, &mut pos, true, what)?;
                }
                if pos != m.len() {
                    return Err(invalid("names section has trailing bytes"));
                }
                Some(m)
            }
            Some(m) => {
                if le_u32(m, 0) != Some(n_tensors) || le_u32(m, 4) != Some(n_nodes) {
                    return Err(invalid("names section counts differ from the graph"));
                }
                let mut pos = 8usize;
                for _ in 0..(u64::from(n_tensors) + u64::from(n_nodes)) {
                    read_str(m, &mut pos, compact, "names section")?;
                }
                if pos != m.len() {
                    return Err(invalid("names section has trailing bytes"));
                }
                Some(m.get(8..).unwrap_or(&[]))
            }
            None => None,
        };
        Ok(Model {
            file_len: s.file_len,
            tensors,
            n_tensors,
            nodes,
            n_nodes,
            edges,
            tensor_table,
            node_table,
            weights,
            version,
            plan: if compact {
                &[]
            } else {
                p.get(24..).unwrap_or(&[])
            },
            n_plan,
            fixed_bytes,
            per_row_bytes,
            signature: g.get(16..).unwrap_or(&[]),
            n_inputs: u16::try_from(n_inputs).map_err(|_| invalid("a model has 1 to 16 inputs"))?,
            output,
            state_dim: state_dim as usize,
            metadata,
            n_meta,
            names,
            onnx: s.onnx,
            time: {
                let conv = match s.time {
                    Some(b) => crate::format::sampling::read_time(b)?,
                    None => crate::time::TimeConvention::default(),
                };
                let has_step = (0..n_inputs as usize).any(|i| {
                    le_u32(g, 16 + 8 * i + 4) == Some(crate::format::InputRole::Step.code())
                });
                if has_step != (conv.second != crate::time::SecondTime::None) {
                    return Err(invalid(
                        "a step input needs a second-time form in the time section, and vice versa",
                    ));
                }
                conv
            },
            #[cfg(feature = "weights-int8")]
            lut_codes: 0,
            defaults: match s.defaults {
                Some(b) => {
                    crate::format::sampling::read_defaults(b)?;
                    Some(b)
                }
                None => None,
            },
            pipeline: s.pipeline,
        })
    }

    // -----------------------------------------------------------------------------------
    // Record decoding (bounds-checked; after validation these never fail).

    /// Checks the whole graph; nodes of op kinds and constants of weight types that `S`
    /// leaves out are [`Error::NotLinked`].
    fn validate<S: Selection + ?Sized>(self) -> Result<Model<'a>, Error> {
        let n_t = self.n_tensors;
        let n_n = self.n_nodes;
        // Signature: roles unique, tensors unique, kinds, shapes, state dim.
        let n_in = self.n_inputs as usize;
        if n_in == 0 || n_in > MAX_INPUTS {
            return Err(invalid("a model has 1 to 16 inputs"));
        }
        let mut dim: Option<u64> = None;
        let mut seen_roles = [false; N_ROLES];
        for i in 0..n_in {
            let (tensor, role) = self.sig_entry(i)?;
            let seen = seen_roles
                .get_mut(role.code() as usize)
                .ok_or(invalid("unknown input role"))?;
            if *seen && role != InputRole::Data {
                return Err(invalid("an input role appears twice in the signature"));
            }
            *seen = true;
            for j in 0..i {
                if self.sig_entry(j)?.0 == tensor {
                    return Err(invalid("a tensor appears twice in the signature"));
                }
            }
            let rec = self.tensor_rec(tensor)?;
            if rec.kind != TensorKind::Input {
                return Err(tensor_err(
                    tensor as usize,
                    "signature input is not an input tensor",
                ));
            }
            if let Some(d) =
                check_role_shape(role, &rec.shape).map_err(|w| tensor_err(tensor as usize, w))?
            {
                dim = Some(d);
            }
        }
        let seen = |r: InputRole| seen_roles.get(r.code() as usize).copied();
        let plain = seen(InputRole::Data) == Some(true);
        if plain && seen_roles.iter().filter(|s| **s).count() > 1 {
            return Err(invalid("a plain graph's inputs are all `data`"));
        }
        if plain {
            dim = Some(0);
        } else if seen(InputRole::X) == seen(InputRole::Xt) {
            return Err(invalid(
                "a model has exactly one of the inputs `x` and `xt`",
            ));
        }
        let d = dim.ok_or(invalid(
            "a model has exactly one of the inputs `x` and `xt`",
        ))?;
        if u64::try_from(self.state_dim).ok() != Some(d) {
            return Err(invalid("signature state dim differs from the input shape"));
        }
        // Output.
        let out = self.tensor_rec(self.output)?;
        if out.kind != TensorKind::Output {
            return Err(tensor_err(
                self.output as usize,
                "signature output is not the output tensor",
            ));
        }
        let velocity = seen(InputRole::T) == Some(true)
            || seen(InputRole::Xt) == Some(true)
            || seen(InputRole::Step) == Some(true);
        check_output_shape(&out.shape, d, velocity)
            .map_err(|w| tensor_err(self.output as usize, w))?;

        // Tensors.
        let (mut inputs, mut outputs) = (0usize, 0usize);
        for i in 0..n_t {
            let r = self.tensor_rec(i)?;
            let err = |w| tensor_err(i as usize, w);
            let elements = r.shape.row_elements().ok_or(err("tensor is too large"))?;
            let bytes = elements.checked_mul(4).ok_or(err("tensor is too large"))?;
            usize::try_from(bytes).map_err(|_| err("tensor is too large for this platform"))?;
            let no_data = r.data_off == 0 && r.data_len == 0;
            match r.kind {
                TensorKind::Input => {
                    inputs += 1;
                    if r.dtype != WeightType::F32 {
                        return Err(err("only constants may be stored as f16, bf16 or int8"));
                    }
                    if r.producer != NONE_U32 || r.slot != NONE_U32 || !no_data {
                        return Err(err("input tensor has a producer, slot or data"));
                    }
                }
                TensorKind::Const => {
                    check_weight_type::<S>(r.dtype)?;
                    if r.producer != NONE_U32 || r.slot != NONE_U32 {
                        return Err(err("constant has a producer or slot"));
                    }
                    if r.shape.has_batch() {
                        return Err(err("constant has a batch dim"));
                    }
                    if r.data_off % self.data_align() as u64 != 0 {
                        return Err(err(
                            "constant data is not aligned (16 bytes; 4 in version 3)",
                        ));
                    }
                    let channels = r.dtype.channels(&r.shape).map_err(err)?;
                    if Some(r.data_len) != r.dtype.data_len(elements, channels) {
                        return Err(err("constant data length does not match its shape"));
                    }
                    let end = r
                        .data_off
                        .checked_add(r.data_len)
                        .ok_or(err("constant data out of range"))?;
                    if end > self.weights.len() as u64 {
                        return Err(err("constant data out of range"));
                    }
                    if let WeightType::Int8 { .. } = r.dtype {
                        let scales_ok = match self.const_weights_of(&r)? {
                            #[cfg(feature = "weights-int8")]
                            crate::ops::Weights::Int8(w) => w.scales.all_valid(),
                            _ => false,
                        };
                        if !scales_ok {
                            return Err(err("int8 scales must be finite and non-negative"));
                        }
                    }
                }
                TensorKind::Intermediate | TensorKind::Output => {
                    if r.dtype != WeightType::F32 {
                        return Err(err("only constants may be stored as f16, bf16 or int8"));
                    }
                    if r.kind == TensorKind::Output {
                        outputs += 1;
                        if i != self.output {
                            return Err(err("output tensor is not the signature output"));
                        }
                    }
                    if !no_data {
                        return Err(err("computed tensor has constant data"));
                    }
                    if r.producer >= n_n || self.node_rec_with::<S>(r.producer)?.output != i {
                        return Err(err("producer node does not produce this tensor"));
                    }
                    if r.slot >= self.n_plan || self.plan_entry(r.slot)?.tensor != i {
                        return Err(err("memory plan slot does not belong to this tensor"));
                    }
                }
            }
        }
        if inputs != n_in {
            return Err(invalid("input tensors and signature inputs differ"));
        }
        if outputs != 1 {
            return Err(invalid("there must be exactly one output tensor"));
        }

        // Plan: every entry belongs to an arena tensor that points back at it, lies inside
        // its region, and is 16-aligned. (With the tensor check above, which places every
        // arena tensor through its slot, entries and arena tensors are a bijection.)
        // `need` is what the entries of each region need: the largest `offset + size`.
        let (mut need_fixed, mut need_per_row) = (0usize, 0usize);
        for j in 0..self.n_plan {
            let compact = compact_version(self.version);
            if compact && !self.tensor_rec(j)?.kind.in_arena() {
                continue; // version 3: only arena tensors have entries
            }
            let p = self.plan_entry(j)?;
            let rec = self.tensor_rec(p.tensor)?;
            let err = |w| tensor_err(p.tensor as usize, w);
            if !rec.kind.in_arena() || rec.slot != j {
                return Err(err("plan entry does not belong to a computed tensor"));
            }
            let want = if rec.shape.has_batch() {
                Region::PerRow
            } else {
                Region::Fixed
            };
            if p.region != want {
                return Err(err("plan region does not match the tensor's batch dim"));
            }
            if p.offset % format::ALIGN != 0 {
                return Err(err("plan offset is not 16-byte aligned"));
            }
            let (_, _, end) = self.slot_range(&rec)?;
            let limit = match p.region {
                Region::Fixed => self.fixed_bytes,
                Region::PerRow => self.per_row_bytes,
            };
            if end > limit {
                return Err(err("plan slot extends past its arena region"));
            }
            let need = match p.region {
                Region::Fixed => &mut need_fixed,
                Region::PerRow => &mut need_per_row,
            };
            *need = (*need).max(end);
        }
        // A region no larger than its tensors need (rounded up to the 16-byte alignment): a
        // corrupted size (one flipped bit can declare a 2 GB fixed region for a few KB of
        // tensors) would otherwise make every host allocate, and every firmware reject, an
        // arena the graph never touches.
        let too_large =
            |declared: usize, needed: usize| format::align_up(needed).is_none_or(|n| declared > n);
        if too_large(self.fixed_bytes, need_fixed) {
            return Err(invalid(
                "plan's fixed region is larger than its tensors need",
            ));
        }
        if too_large(self.per_row_bytes, need_per_row) {
            return Err(invalid(
                "plan's per-row region is larger than its tensors need",
            ));
        }

        // Nodes: contiguous input lists, ids, topological order, shape rules, no overlap of
        // the output slot with any input slot.
        let mut next_edge = 0usize;
        // The bits of `Model::reads_lut_codes`: `luts`, the `Lut` nodes (< 31) whose table
        // holds no NaN and whose output is not the graph's; `lut_pairs`, the full-integer
        // Dense nodes reading such a `Lut` just before them at input 0; `lut_spoiled`, the
        // nodes after a `Lut` whose output something else reads too.
        #[cfg(feature = "weights-int8")]
        let codes = linked::has_node::<S>(linked::node::LUT)
            && linked::has_node::<S>(linked::node::DENSE_Q8);
        #[cfg(feature = "weights-int8")]
        let (mut luts, mut lut_pairs, mut lut_spoiled) = (0u32, 0u32, 0u32);
        for i in 0..n_n {
            let node = self.node_rec_with::<S>(i)?;
            let err = |w| node_err(i as usize, w);
            if !compact_version(self.version) {
                if node.first_input != next_edge {
                    return Err(err("input list is not contiguous"));
                }
                next_edge = next_edge
                    .checked_add(node.n_inputs)
                    .ok_or(err("input list"))?;
                if next_edge > self.edges.len() / 4 {
                    return Err(err("input list extends past the edge table"));
                }
            }
            if node.output >= n_t {
                return Err(err("output tensor id out of range"));
            }
            let out = self.tensor_rec(node.output)?;
            if !out.kind.in_arena() || out.producer != i {
                return Err(err("output tensor is not produced by this node"));
            }
            let out_slot = self.slot_range(&out)?;
            for j in 0..node.n_inputs {
                let t = self.node_input(&node, j)?;
                if t >= n_t {
                    return Err(err("input tensor id out of range"));
                }
                let r = self.tensor_rec(t)?;
                #[cfg(feature = "weights-int8")]
                if codes && r.kind.in_arena() && r.producer < 31 && luts >> r.producer & 1 != 0 {
                    let p = r.producer;
                    let reader = matches!(node.op, NodeOp::Dense) && node.n_inputs == 4;
                    if i == p + 1 && j == 0 && reader {
                        lut_pairs |= 1 << i;
                    } else {
                        lut_spoiled |= 1 << (p + 1);
                    }
                }
                // Without stored weight types every tensor here is f32 (typed constants are
                // `NotLinked` above, typed others invalid), which every input accepts.
                if S::WEIGHTS != 0 && !node.op.accepts_stored(j, r.dtype) {
                    return Err(err(TYPED_INPUT_RULE));
                }
                if r.kind.in_arena() {
                    if r.producer >= i {
                        return Err(err("input is used before it is computed"));
                    }
                    let (reg, s, e) = self.slot_range(&r)?;
                    if reg == out_slot.0 && s < out_slot.2 && out_slot.1 < e {
                        return Err(err("output slot overlaps an input slot"));
                    }
                }
            }
            let shape_of = |j: usize| -> Option<Shape> {
                let t = self.node_input(&node, j).ok()?;
                Some(self.tensor_rec(t).ok()?.shape)
            };
            rules::check_node_linked::<S>(&node.op, node.n_inputs, shape_of, &out.shape)
                .map_err(err)?;
            if node.op == NodeOp::Widen && self.input_rec(&node, 0)?.kind != TensorKind::Const {
                return Err(err("Widen reads a constant"));
            }
            // A full-integer Dense or Conv (a Concat, say, may have four inputs too).
            let full_integer = matches!(node.op, NodeOp::Dense | NodeOp::Conv { .. });
            if node.n_inputs == 4 && full_integer {
                if S::WEIGHTS & linked::weight::INT8 == 0 {
                    // No constant is int8 (those are not linked), so `act_scale` would fail
                    // its first check.
                    return Err(err(INT8_ACT_WEIGHTS));
                }
                self.act_scale(&node).map_err(err)?;
            }
            // (`S` without Lut never decodes one: the check links only where it can run.)
            if linked::has_node::<S>(linked::node::LUT) && matches!(node.op, NodeOp::Lut { .. }) {
                self.lut_scale(&node).map_err(err)?;
                #[cfg(feature = "weights-int8")]
                if codes && i < 31 && node.output != self.output {
                    let table = self.const_weights_of(&self.input_rec(&node, 1)?)?;
                    if !crate::ops::lut_table_has_nan(table)? {
                        luts |= 1 << i;
                    }
                }
            }
        }
        if next_edge != self.edges.len() / 4 {
            return Err(invalid("edge table has unused entries"));
        }
        #[cfg(feature = "weights-int8")]
        let mut model = self;
        #[cfg(not(feature = "weights-int8"))]
        let model = self;
        #[cfg(feature = "weights-int8")]
        {
            model.lut_codes = lut_pairs & !lut_spoiled;
        }
        Ok(model)
    }

    /// The activation scale of a full-integer Dense or Conv (4 inputs): its weight is int8
    /// along axis 0 (output channel first), input 3 a constant holding one finite, positive
    /// f32. Returns the scale.
    pub(crate) fn act_scale(&self, node: &NodeRec) -> Result<f32, &'static str> {
        let w = self
            .input_rec(node, 1)
            .map_err(|_| "input tensor missing")?;
        if !matches!(w.dtype, WeightType::Int8 { axis: 0, .. }) {
            return Err(INT8_ACT_WEIGHTS);
        }
        let reduction = w.shape.channel_layout(0).map_or(0, |(_, inner)| inner);
        if reduction > crate::ops::MAX_INT8_REDUCTION {
            return Err("int8 activations: reduction longer than 133000 terms");
        }
        self.positive_constant(node, 3).map_err(|e| match e {
            ScaleErr::NotConstant => "int8 activation scale (input 3) must be one f32 constant",
            ScaleErr::NotPositive => "int8 activation scale must be finite and positive",
        })
    }

    /// The scale of a `Lut` (input 2): one finite, positive f32 constant; its table (input 1)
    /// a constant. Returns the scale.
    pub(crate) fn lut_scale(&self, node: &NodeRec) -> Result<f32, &'static str> {
        let table = self
            .input_rec(node, 1)
            .map_err(|_| "input tensor missing")?;
        if table.kind != TensorKind::Const {
            return Err("Lut table (input 1) must be a constant");
        }
        self.positive_constant(node, 2).map_err(|e| match e {
            ScaleErr::NotConstant => "Lut scale (input 2) must be one f32 constant",
            ScaleErr::NotPositive => "Lut scale must be finite and positive",
        })
    }

    /// The record of input `j` of `node`.
    fn input_rec(&self, node: &NodeRec, j: usize) -> Result<TensorRec, Error> {
        self.tensor_rec(self.node_input(node, j)?)
    }

    /// Input `j` of `node`: a constant holding one finite, positive f32.
    fn positive_constant(&self, node: &NodeRec, j: usize) -> Result<f32, ScaleErr> {
        let s = self.input_rec(node, j).map_err(|_| ScaleErr::NotConstant)?;
        match (s.kind, self.const_data(&s)) {
            (TensorKind::Const, Ok([v])) if v.is_finite() && *v > 0.0 => Ok(*v),
            (TensorKind::Const, Ok([_])) => Err(ScaleErr::NotPositive),
            _ => Err(ScaleErr::NotConstant),
        }
    }
}

/// Why a scale input is refused ([`Model::positive_constant`]).
enum ScaleErr {
    /// Not a constant of one f32.
    NotConstant,
    /// Not finite, or `<= 0`.
    NotPositive,
}

/// The section table, checked: bounds, alignment, overlap, duplicates, required kinds.
struct Sections<'a> {
    file_len: usize,
    tensors: &'a [u8],
    nodes: &'a [u8],
    weights: &'a [u8],
    plan: &'a [u8],
    signature: &'a [u8],
    metadata: Option<&'a [u8]>,
    names: Option<&'a [u8]>,
    onnx: Option<&'a [u8]>,
    time: Option<&'a [u8]>,
    defaults: Option<&'a [u8]>,
    pipeline: Option<&'a [u8]>,
}

impl<'a> Sections<'a> {
    fn parse(file: &'a [u8], version: u16) -> Result<Sections<'a>, Error> {
        let align = if compact_version(version) {
            format::ALIGN_COMPACT
        } else {
            format::ALIGN
        };
        let count = le_u32(file, 20).ok_or(Error::Truncated { what: "header" })? as usize;
        if count > MAX_SECTIONS {
            return Err(invalid("too many sections"));
        }
        let entry_len = if compact_version(version) {
            format::SECTION_ENTRY_LEN_COMPACT
        } else {
            SECTION_ENTRY_LEN
        };
        let table_end = mul_add(count, entry_len, HEADER_LEN).ok_or(invalid("section table"))?;
        if table_end > file.len() {
            return Err(Error::Truncated {
                what: "section table",
            });
        }
        let entry = |i: usize| -> Result<(u16, u16, usize, usize), Error> {
            let o = HEADER_LEN + i * entry_len;
            if !compact_version(version) && le_u32(file, o + 4) != Some(0) {
                return Err(invalid("section entry reserved field is not zero"));
            }
            let (kind, flags, off, len) =
                format::section_entry(file, version, count, i).ok_or(Error::Truncated {
                    what: "section table",
                })?;
            let off = to_usize(off, "section offset")?;
            let len = to_usize(len, "section length")?;
            Ok((kind, flags, off, len))
        };
        let mut found: [Option<&'a [u8]>; 12] = [None; 12];
        for i in 0..count {
            let (kind, flags, off, len) = entry(i)?;
            if flags & !SECTION_FLAG_REQUIRED != 0 {
                return Err(invalid("unknown section flags"));
            }
            if off % align != 0 {
                return Err(invalid(
                    "section offset is not aligned (16 bytes; 4 in version 3)",
                ));
            }
            if off < table_end {
                return Err(invalid("section overlaps the header or section table"));
            }
            let end = off.checked_add(len).ok_or(invalid("section length"))?;
            let body = file
                .get(off..end)
                .ok_or(Error::Truncated { what: "section" })?;
            for j in 0..i {
                let (_, _, o2, l2) = entry(j)?;
                if off < o2.saturating_add(l2) && o2 < end {
                    return Err(invalid("sections overlap"));
                }
            }
            match found.get_mut(usize::from(kind)) {
                Some(slot) if (section::TENSORS..=section::PIPELINE).contains(&kind) => {
                    if slot.is_some() {
                        return Err(invalid("a section kind appears twice"));
                    }
                    *slot = Some(body);
                }
                _ => {
                    // Unknown (or reserved, not yet defined) kinds: skip optional ones.
                    if flags & SECTION_FLAG_REQUIRED != 0 {
                        return Err(Error::UnsupportedSection { kind });
                    }
                }
            }
        }
        let need = |k: u16, what: &'static str| {
            found
                .get(usize::from(k))
                .copied()
                .flatten()
                .ok_or(Error::Invalid { what })
        };
        Ok(Sections {
            file_len: file.len(),
            tensors: need(section::TENSORS, "missing tensors section")?,
            nodes: need(section::NODES, "missing nodes section")?,
            weights: need(section::WEIGHTS, "missing weights section")?,
            plan: need(section::PLAN, "missing plan section")?,
            signature: need(section::SIGNATURE, "missing signature section")?,
            metadata: found.get(usize::from(section::METADATA)).copied().flatten(),
            names: found.get(usize::from(section::NAMES)).copied().flatten(),
            onnx: found.get(usize::from(section::ONNX)).copied().flatten(),
            time: found.get(usize::from(section::TIME)).copied().flatten(),
            pipeline: found.get(usize::from(section::PIPELINE)).copied().flatten(),
            defaults: found
                .get(usize::from(section::SOLVER_DEFAULTS))
                .copied()
                .flatten(),
        })
    }
}
