//! Version 3's compact records (docs/frt-format.md, "Version 3: compact records"): tensor and
//! node records coded with variable-length integers behind an offset index, so that a
//! record costs what it holds (a few bytes) instead of a fixed 64 or 48, and each record is
//! still found in constant time by the allocation-free executor.
//!
//! This module holds the codec; [`crate::Model`] decodes through it and [`crate::write`]
//! encodes through it, so both sides share one definition of every bit.

use super::{le_u16, le_u32, MAX_RANK, NODE_ATTRS, NO_BATCH};

/// Bytes of a compact table's header: `u32 count`, `u8 index_width`, three zero bytes.
/// Every section of a version-3 file starts at a multiple of 4.
pub(crate) const TABLE_HEADER_LEN: usize = 8;

/// Reads one unsigned LEB128 integer at `*pos` and advances past it.
///
/// `None` when it runs past `b`, is longer than 10 bytes, overflows `u64`, or is not in its
/// shortest form (a last byte of zero after the first): every value has exactly one encoding,
/// so a file has exactly one valid byte image.
pub(crate) fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10u32 {
        let byte = *b.get(*pos)?;
        *pos = pos.checked_add(1)?;
        let bits = u64::from(byte & 0x7F);
        if i == 9 && bits > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return None;
            }
            return Some(value);
        }
    }
    None
}

/// [`read_varint`] for a value that must fit a `u32`.
pub(crate) fn read_varint_u32(b: &[u8], pos: &mut usize) -> Option<u32> {
    u32::try_from(read_varint(b, pos)?).ok()
}

/// A compact table: the index of record start offsets and the records behind it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Table<'a> {
    count: u32,
    /// 1, 2 or 4 bytes per index entry.
    width: u8,
    index: &'a [u8],
    records: &'a [u8],
}

impl<'a> Table<'a> {
    /// Splits a section into its index and records: `u32 count`, `u8 width` (1, 2 or 4), three
    /// zero bytes, `count` offsets, zero padding to a multiple of 4, the records. The first
    /// offset must be 0 (or the table empty with no records).
    ///
    /// Errors: the broken rule, as text for [`crate::Error::Invalid`].
    pub(crate) fn parse(section: &'a [u8]) -> Result<Table<'a>, &'static str> {
        let count = le_u32(section, 0).ok_or("compact table header is truncated")?;
        let width = *section.get(4).ok_or("compact table header is truncated")?;
        if section.get(5..8) != Some(&[0, 0, 0][..]) {
            return Err("compact table reserved bytes are not zero");
        }
        if !matches!(width, 1 | 2 | 4) {
            return Err("compact table index width is not 1, 2 or 4");
        }
        let index_len = (count as usize)
            .checked_mul(usize::from(width))
            .ok_or("compact table count")?;
        let index_end = TABLE_HEADER_LEN
            .checked_add(index_len)
            .ok_or("compact table count")?;
        let records_at = index_end.checked_add(3).ok_or("compact table count")? & !3;
        let index = section
            .get(TABLE_HEADER_LEN..index_end)
            .ok_or("compact table index runs past its section")?;
        let padding = section
            .get(index_end..records_at)
            .ok_or("compact table index runs past its section")?;
        if padding.iter().any(|b| *b != 0) {
            return Err("compact table padding is not zero");
        }
        let records = section.get(records_at..).unwrap_or(&[]);
        let t = Table {
            count,
            width,
            index,
            records,
        };
        match t.offset(0) {
            Some(0) => {}
            None if records.is_empty() => {}
            _ => return Err("compact table's first record does not start at 0"),
        }
        Ok(t)
    }

    /// Number of records.
    pub(crate) fn len(&self) -> u32 {
        self.count
    }

    /// The records area (what [`Table::record`]'s start offsets count from).
    pub(crate) fn records(&self) -> &'a [u8] {
        self.records
    }

    fn offset(&self, i: u32) -> Option<usize> {
        let at = (i as usize).checked_mul(usize::from(self.width))?;
        if i >= self.count {
            return None;
        }
        match self.width {
            1 => self.index.get(at).map(|b| usize::from(*b)),
            2 => le_u16(self.index, at).map(usize::from),
            _ => le_u32(self.index, at).map(|v| v as usize),
        }
    }

    /// Record `i`: its start in [`Table::records`] and its bytes (up to the next record's
    /// start, or the end of the records). `None` when `i` is out of range or the offsets
    /// do not increase.
    pub(crate) fn record(&self, i: u32) -> Option<(usize, &'a [u8])> {
        let start = self.offset(i)?;
        let end = if i.checked_add(1)? < self.count {
            self.offset(i + 1)?
        } else {
            self.records.len()
        };
        if end <= start {
            return None;
        }
        Some((start, self.records.get(start..end)?))
    }
}

/// The fields of a compact tensor record (docs/frt-format.md, "Compact tensor record").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TensorFields {
    pub(crate) kind: u8,
    pub(crate) dtype: u8,
    pub(crate) rank: u8,
    pub(crate) batch_axis: u8,
    pub(crate) dims: [u32; MAX_RANK],
    /// Constants: the byte offset of the data in the weights section.
    pub(crate) data_off: u64,
    /// int8 constants: the channel axis.
    pub(crate) axis: u8,
    /// Arena tensors: the producing node.
    pub(crate) producer: u32,
    /// Arena tensors: the offset in the tensor's region, bytes (or bytes per batch row).
    pub(crate) plan_offset: u64,
}

/// Tensor kind codes that the compact record distinguishes (as `TensorKind::code`).
const KIND_CONST: u8 = 1;
const KIND_INTERMEDIATE: u8 = 2;
const KIND_OUTPUT: u8 = 3;
/// dtype codes with an axis byte (int8).
const fn has_axis(dtype: u8) -> bool {
    dtype == super::DTYPE_I8
        || dtype == super::DTYPE_I8_BF16_SCALES
        || dtype == super::DTYPE_I8_MINI_SCALES
}

/// Units in which the compact record stores a constant's data offset and a plan offset.
pub(crate) const DATA_UNIT: u64 = 4;
pub(crate) const PLAN_UNIT: u64 = 16;

/// Decodes a compact tensor record.
///
/// Errors: the broken rule (unknown bits, a truncated or overlong field, trailing bytes).
/// The values themselves (kind, dtype, shape, ranges) are checked by the caller, as for the
/// fixed records.
pub(crate) fn decode_tensor(r: &[u8]) -> Result<TensorFields, &'static str> {
    const TRUNC: &str = "tensor record is truncated or has an overlong field";
    let b0 = *r.first().ok_or(TRUNC)?;
    let b1 = *r.get(1).ok_or(TRUNC)?;
    if b0 & 0xE0 != 0 || b1 & 0xC0 != 0 {
        return Err("tensor record has unknown flag bits");
    }
    let (kind, dtype) = (b0 & 3, (b0 >> 2) & 7);
    let rank = b1 & 7;
    let batch_axis = match b1 >> 3 {
        0 => NO_BATCH,
        a => a - 1,
    };
    if usize::from(rank) > MAX_RANK {
        return Err("rank is larger than 6");
    }
    let mut pos = 2usize;
    let mut dims = [0u32; MAX_RANK];
    for (j, d) in dims.iter_mut().enumerate().take(usize::from(rank)) {
        if j != usize::from(batch_axis) {
            *d = read_varint_u32(r, &mut pos).ok_or(TRUNC)?;
        }
    }
    let mut f = TensorFields {
        kind,
        dtype,
        rank,
        batch_axis,
        dims,
        data_off: 0,
        axis: 0,
        producer: super::NONE_U32,
        plan_offset: 0,
    };
    match kind {
        KIND_CONST => {
            f.data_off = read_varint(r, &mut pos)
                .and_then(|o| o.checked_mul(DATA_UNIT))
                .ok_or(TRUNC)?;
            if has_axis(dtype) {
                f.axis = *r.get(pos).ok_or(TRUNC)?;
                pos += 1;
            }
        }
        KIND_INTERMEDIATE | KIND_OUTPUT => {
            f.producer = read_varint_u32(r, &mut pos).ok_or(TRUNC)?;
            f.plan_offset = read_varint(r, &mut pos)
                .and_then(|o| o.checked_mul(PLAN_UNIT))
                .ok_or(TRUNC)?;
        }
        _ => {}
    }
    if pos != r.len() {
        return Err("tensor record has trailing bytes");
    }
    Ok(f)
}

/// The fields of a compact node record, with the inputs left coded: `inputs_at` is where
/// the first input starts in the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NodeFields {
    pub(crate) code: u16,
    pub(crate) n_inputs: usize,
    pub(crate) inputs_at: usize,
    pub(crate) output: u32,
    pub(crate) attrs: [u32; NODE_ATTRS],
}

/// Decodes a compact node record: `varint op`, `varint n_inputs`, the inputs (varints),
/// `varint output`, a byte whose bit `j` says attribute word `j` follows, then those words
/// (`u32`, nonzero).
///
/// Errors: the broken rule (truncated, overlong or out-of-range fields, a stored zero
/// attribute, trailing bytes).
pub(crate) fn decode_node(r: &[u8]) -> Result<NodeFields, &'static str> {
    const TRUNC: &str = "node record is truncated or has an overlong field";
    let mut pos = 0usize;
    let code = read_varint(r, &mut pos)
        .and_then(|c| u16::try_from(c).ok())
        .ok_or(TRUNC)?;
    let n_inputs = read_varint(r, &mut pos)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or(TRUNC)?;
    let inputs_at = pos;
    for _ in 0..n_inputs {
        read_varint_u32(r, &mut pos).ok_or(TRUNC)?;
    }
    let output = read_varint_u32(r, &mut pos).ok_or(TRUNC)?;
    let mask = *r.get(pos).ok_or(TRUNC)?;
    pos += 1;
    let mut attrs = [0u32; NODE_ATTRS];
    for (j, a) in attrs.iter_mut().enumerate() {
        if mask & (1 << j) != 0 {
            *a = le_u32(r, pos).ok_or(TRUNC)?;
            pos += 4;
            if *a == 0 {
                return Err("node record stores a zero attribute word");
            }
        }
    }
    if pos != r.len() {
        return Err("node record has trailing bytes");
    }
    Ok(NodeFields {
        code,
        n_inputs: usize::from(n_inputs),
        inputs_at,
        output,
        attrs,
    })
}

/// Input `j` of a node whose inputs start at `at` in `records` (see [`NodeFields`]).
pub(crate) fn node_input(records: &[u8], at: usize, j: usize) -> Option<u32> {
    let mut pos = at;
    for _ in 0..j {
        read_varint(records, &mut pos)?;
    }
    read_varint_u32(records, &mut pos)
}

#[cfg(feature = "alloc")]
pub(crate) use encode::*;

#[cfg(feature = "alloc")]
mod encode {
    use alloc::vec::Vec;

    use super::*;

    /// Appends `v` as unsigned LEB128 (shortest form).
    pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let byte = (v & 0x7F) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// Encodes a compact tensor record. `None` when an offset is not a multiple of its unit.
    pub(crate) fn encode_tensor(f: &TensorFields) -> Option<Vec<u8>> {
        let mut r = Vec::with_capacity(16);
        r.push(f.kind | (f.dtype << 2));
        let batch = if f.batch_axis == NO_BATCH {
            0
        } else {
            f.batch_axis + 1
        };
        r.push(f.rank | (batch << 3));
        for (j, d) in f.dims.iter().enumerate().take(usize::from(f.rank)) {
            if j != usize::from(f.batch_axis) {
                put_varint(&mut r, u64::from(*d));
            }
        }
        match f.kind {
            KIND_CONST => {
                if !f.data_off.is_multiple_of(DATA_UNIT) {
                    return None;
                }
                put_varint(&mut r, f.data_off / DATA_UNIT);
                if has_axis(f.dtype) {
                    r.push(f.axis);
                }
            }
            KIND_INTERMEDIATE | KIND_OUTPUT => {
                if !f.plan_offset.is_multiple_of(PLAN_UNIT) {
                    return None;
                }
                put_varint(&mut r, u64::from(f.producer));
                put_varint(&mut r, f.plan_offset / PLAN_UNIT);
            }
            _ => {}
        }
        Some(r)
    }

    /// Encodes a compact node record.
    pub(crate) fn encode_node(code: u16, inputs: &[u32], output: u32, attrs: &[u32]) -> Vec<u8> {
        let mut r = Vec::with_capacity(8 + 4 * inputs.len());
        put_varint(&mut r, u64::from(code));
        put_varint(&mut r, inputs.len() as u64);
        for t in inputs {
            put_varint(&mut r, u64::from(*t));
        }
        put_varint(&mut r, u64::from(output));
        let mask = attrs
            .iter()
            .enumerate()
            .filter(|(_, a)| **a != 0)
            .fold(0u8, |m, (j, _)| m | (1 << j));
        r.push(mask);
        for a in attrs.iter().filter(|a| **a != 0) {
            r.extend_from_slice(&a.to_le_bytes());
        }
        r
    }

    /// Builds a compact table section from its records: the narrowest index that holds
    /// every start offset. `None` when the records exceed 4 GiB or the count `u32`.
    pub(crate) fn table(records: &[Vec<u8>]) -> Option<Vec<u8>> {
        let total: usize = records.iter().map(Vec::len).sum();
        // The narrowest index that holds every start offset (each below `total`).
        let width: u8 = match total {
            0..=256 => 1,
            257..=65_536 => 2,
            _ => 4,
        };
        u32::try_from(total).ok()?;
        let mut out = Vec::with_capacity(TABLE_HEADER_LEN + 4 * records.len() + total);
        out.extend_from_slice(&u32::try_from(records.len()).ok()?.to_le_bytes());
        out.extend_from_slice(&[width, 0, 0, 0]);
        let mut at = 0usize;
        for r in records {
            match width {
                1 => out.push(at as u8),
                2 => out.extend_from_slice(&(at as u16).to_le_bytes()),
                _ => out.extend_from_slice(&(at as u32).to_le_bytes()),
            }
            at += r.len();
        }
        while out.len() % 4 != 0 {
            out.push(0);
        }
        for r in records {
            out.extend_from_slice(r);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_have_one_encoding() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut b = alloc::vec::Vec::new();
            put_varint(&mut b, v);
            let mut pos = 0;
            assert_eq!(read_varint(&b, &mut pos), Some(v), "{v}");
            assert_eq!(pos, b.len());
        }
        // Overlong forms of 0 and 1, a value past u64, and a cut-off varint are refused.
        for bad in [
            &[0x80, 0x00][..],
            &[0x81, 0x00],
            &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02],
            &[0xFF; 11],
            &[0x80],
        ] {
            assert_eq!(read_varint(bad, &mut 0), None, "{bad:?}");
        }
    }

    #[test]
    fn tensor_and_node_records_round_trip() {
        let f = TensorFields {
            kind: KIND_INTERMEDIATE,
            dtype: 0,
            rank: 3,
            batch_axis: 0,
            dims: [0, 300, 2, 0, 0, 0],
            data_off: 0,
            axis: 0,
            producer: 70_000,
            plan_offset: 16 * 1000,
        };
        let r = encode_tensor(&f).unwrap();
        assert_eq!(decode_tensor(&r), Ok(f));
        // One byte more or less is an error, never a different record.
        let mut longer = r.clone();
        longer.push(0);
        assert!(decode_tensor(&longer).is_err());
        assert!(decode_tensor(&r[..r.len() - 1]).is_err());
        let c = TensorFields {
            kind: KIND_CONST,
            dtype: super::super::DTYPE_I8_BF16_SCALES,
            rank: 2,
            batch_axis: NO_BATCH,
            dims: [64, 3, 0, 0, 0, 0],
            data_off: 4 * 99,
            axis: 1,
            producer: super::super::NONE_U32,
            plan_offset: 0,
        };
        assert_eq!(decode_tensor(&encode_tensor(&c).unwrap()), Ok(c));
        let attrs = [0, 5, 0, 0, 0x3F80_0000, 0, 0, 1];
        let n = encode_node(0x0203, &[1, 200, 70_000], 9, &attrs);
        let d = decode_node(&n).unwrap();
        assert_eq!(
            (d.code, d.n_inputs, d.output, d.attrs),
            (0x0203, 3, 9, attrs)
        );
        assert_eq!(node_input(&n, d.inputs_at, 2), Some(70_000));
        assert!(decode_node(&n[..n.len() - 1]).is_err());
    }

    #[test]
    fn tables_index_their_records() {
        let recs: alloc::vec::Vec<alloc::vec::Vec<u8>> =
            alloc::vec![alloc::vec![1, 2], alloc::vec![3], alloc::vec![4, 5, 6]];
        let bytes = table(&recs).unwrap();
        let t = Table::parse(&bytes).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.record(1), Some((2, &[3u8][..])));
        assert_eq!(t.record(2), Some((3, &[4u8, 5, 6][..])));
        assert_eq!(t.record(3), None);
        // Offsets that do not increase give no record.
        assert_eq!(bytes[4], 1, "six bytes of records: a one-byte index");
        let mut bad = bytes.clone();
        bad[9] = 3; // record 1 starts at 3 ...
        bad[10] = 2; // ... and record 2 at 2
        let t = Table::parse(&bad).unwrap();
        assert_eq!(t.record(1), None);
    }
}
