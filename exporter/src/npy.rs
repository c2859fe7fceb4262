//! `.npy` input and output of f32 arrays (through `npyz`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use npyz::WriterBuilder;

/// A `.npy` file read into memory.
type NpyBytes = npyz::NpyFile<std::io::Cursor<Vec<u8>>>;

/// The largest `.npy` file the CLI reads (`--noise`, `--label`, `--grid-file`, ...): 1 GiB.
/// A larger file is refused before it is read (a FIFO or device is read up to the cap).
pub const MAX_NPY_BYTES: u64 = 1 << 30;

/// Reads at most `cap` bytes of `path` ([`flowrt::io::read_capped`]); a longer file (by its
/// size, or by what a pipe or device delivers) is an error naming the cap, before more than
/// `cap + 1` bytes are read.
///
/// Errors: unreadable file, or longer than `cap`.
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    flowrt::io::read_capped(path, cap, "this input")
        .with_context(|| format!("reading {}", path.display()))
}

/// Bytes per element of a `.npy` dtype descriptor (`'<f4'` -> 4), if it has one.
fn descr_item_size(descr: &str) -> Option<u64> {
    let d = descr.trim_matches('\'');
    let digits = d.trim_start_matches(|c: char| !c.is_ascii_digit());
    if digits.is_empty() || digits.len() + 2 != d.len() {
        return None;
    }
    digits.parse().ok()
}

/// Checks the `.npy` preamble against the file before `npyz` reads the header: the magic,
/// a known version, and a header length that fits in the file (a forged v2 header length of
/// 4 GB would otherwise be allocated). Returns the offset where the header ends.
fn check_preamble(path: &Path, bytes: &[u8]) -> Result<u64> {
    let name = path.display();
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("{name}: not a .npy file (no \\x93NUMPY magic)");
    }
    let (len, start) = match bytes[6] {
        1 => (u64::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10u64),
        2 | 3 => {
            let Some(b) = bytes.get(8..12) else {
                bail!("{name}: truncated .npy preamble");
            };
            (
                u64::from(u32::from_le_bytes(b.try_into().expect("4 bytes"))),
                12,
            )
        }
        v => bail!("{name}: .npy format version {v} is not supported (1, 2 or 3)"),
    };
    let end = start + len;
    if end > bytes.len() as u64 {
        bail!(
            "{name}: the .npy header claims {len} bytes, but the file has only {} after the \
             preamble",
            bytes.len() as u64 - start
        );
    }
    // A header is one flat dict with one shape tuple. npyz's parser backtracks on nested
    // brackets (60 `{` after `'fortran_order':` took over 10 s, found by fuzz/npy_read):
    // anything nested or repeated is refused before it parses.
    let header = &bytes[start as usize..end as usize];
    let count = |c: u8| header.iter().filter(|&&b| b == c).count();
    if count(b'{') != 1 || count(b'}') != 1 || count(b'(') > 1 || count(b')') > 1 || count(b'[') > 0
    {
        bail!(
            "{name}: malformed .npy header (a .npy header is one dict with one shape tuple, \
             no nested or repeated brackets)"
        );
    }
    Ok(end)
}

/// Reads a C-order `.npy` file; returns the array and its shape.
///
/// The file is read up to [`MAX_NPY_BYTES`]; the header length is checked against the file
/// before it is parsed; the shape's element count is computed with checked arithmetic, and
/// the data must be exactly that many elements of the dtype (no trailing or missing bytes).
///
/// Errors: unreadable or too large file, not a `.npy` file, Fortran order, a shape whose
/// size overflows, or data of another length than the shape says.
fn open_c_order(path: &Path) -> Result<(NpyBytes, Vec<usize>)> {
    let bytes = read_capped(path, MAX_NPY_BYTES)?;
    let header_end = check_preamble(path, &bytes)?;
    let file_len = bytes.len() as u64;
    let npy = npyz::NpyFile::new(std::io::Cursor::new(bytes))
        .with_context(|| format!("{}: not a .npy file", path.display()))?;
    if npy.order() != npyz::Order::C {
        bail!("{}: Fortran-order arrays are not supported", path.display());
    }
    let dims = npy.shape().to_vec();
    let count = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: shape {dims:?} has more elements than 2^64",
                path.display()
            )
        })?;
    if let Some(item) = descr_item_size(&npy.dtype().descr()) {
        let data = file_len.saturating_sub(header_end);
        match count.checked_mul(item) {
            Some(want) if want == data => {}
            want => bail!(
                "{}: shape {dims:?} needs {} bytes of data, the file has {data}",
                path.display(),
                want.map_or_else(|| "more than 2^64".to_string(), |w| w.to_string())
            ),
        }
    }
    let shape: Vec<usize> = dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: shape {dims:?} too large", path.display()))?;
    Ok((npy, shape))
}

/// Encodes `data` as a C-order `.npy` file with `shape`, in the dtype of `T`.
///
/// Errors: the encoder fails.
fn encode<T: npyz::AutoSerialize + Copy>(data: &[T], shape: &[u64]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut bytes)
        .begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()?;
    Ok(bytes)
}

/// Writes `data` as a C-order `.npy` file with `shape`, atomically
/// ([`crate::output::write_atomic`]).
///
/// Errors: the file cannot be written.
fn write<T: npyz::AutoSerialize + Copy>(path: &Path, data: &[T], shape: &[u64]) -> Result<()> {
    crate::output::write_atomic(path, &encode(data, shape)?)
}

/// The bytes of a C-order float32 `.npy` file of `data` with `shape`.
///
/// Errors: the encoder fails.
pub fn encode_f32(data: &[f32], shape: &[usize]) -> Result<Vec<u8>> {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    encode(data, &shape)
}

/// Reads a float32 or float64 `.npy` file (C order) as f32 values and its shape.
///
/// Errors: unreadable file, Fortran order, or a dtype other than f4/f8.
pub fn read_f32(path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    let (npy, shape) = open_c_order(path)?;
    let descr = npy.dtype().descr();
    let data = match descr.trim_matches('\'') {
        "<f4" => npy.into_vec::<f32>()?,
        "<f8" => npy
            .into_vec::<f64>()?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        other => bail!(
            "{}: dtype {other} is not supported (use float32)",
            path.display()
        ),
    };
    Ok((data, shape))
}

/// Writes f32 values as a C-order `.npy` file with `shape`.
///
/// Errors: the file cannot be written.
pub fn write_f32(path: &Path, data: &[f32], shape: &[usize]) -> Result<()> {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    write(path, data, &shape)
}

/// Writes int64 values (class labels) as a 1-D C-order `.npy` file.
///
/// Errors: the file cannot be written.
pub fn write_i64(path: &Path, data: &[i64]) -> Result<()> {
    write(path, data, &[data.len() as u64])
}

/// Reads class labels from a `.npy` file: int64 or int32, or float32 / float64 holding
/// integer values (C order). Returns the values and the shape.
///
/// Errors: unreadable file, Fortran order, another dtype, or a non-integer float.
pub fn read_labels(path: &Path) -> Result<(Vec<i64>, Vec<usize>)> {
    let (npy, shape) = open_c_order(path)?;
    let descr = npy.dtype().descr();
    let floats = |v: Vec<f64>| -> Result<Vec<i64>> {
        v.into_iter()
            .map(|x| {
                if x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15 {
                    Ok(x as i64)
                } else {
                    bail!("{}: label {x} is not an integer", path.display())
                }
            })
            .collect()
    };
    let data = match descr.trim_matches('\'') {
        "<i8" => npy.into_vec::<i64>()?,
        "<i4" => npy.into_vec::<i32>()?.into_iter().map(i64::from).collect(),
        "<f4" => floats(npy.into_vec::<f32>()?.into_iter().map(f64::from).collect())?,
        "<f8" => floats(npy.into_vec::<f64>()?)?,
        other => bail!(
            "{}: dtype {other} is not supported for labels (use int64, int32, or floats with \
             integer values)",
            path.display()
        ),
    };
    Ok((data, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fuzz/findings/npy_read-timeout-nested-braces.npy` (60 `{` inside the header dict:
    /// over 10 s in npyz's parser) and two smaller forgeries are refused at once; a plain
    /// header still reads.
    #[test]
    fn nested_or_repeated_brackets_in_the_header_are_refused() {
        let dir = std::env::temp_dir().join(format!("flowrt-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let header = |dict: &str| {
            let mut h = dict.to_string();
            while !(10 + h.len() + 1).is_multiple_of(64) {
                h.push(' ');
            }
            h.push('\n');
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&(h.len() as u16).to_le_bytes());
            b.extend_from_slice(h.as_bytes());
            b.extend_from_slice(&[0u8; 8]);
            b
        };
        let fuzzed = include_bytes!("../../fuzz/findings/npy_read-timeout-nested-braces.npy");
        let cases: [(&str, Vec<u8>); 3] = [
            ("fuzzed", fuzzed.to_vec()),
            (
                "nested",
                header("{'descr': '<f4', 'fortran_order': {False}, 'shape': (2, 1), }"),
            ),
            (
                "tuples",
                header("{'descr': '<f4', 'fortran_order': False, 'shape': ((2, 1)), }"),
            ),
        ];
        for (name, bytes) in cases {
            let path = dir.join(format!("{name}.npy"));
            std::fs::write(&path, bytes).unwrap();
            let start = std::time::Instant::now();
            let e = format!("{:#}", read_f32(&path).unwrap_err());
            assert!(e.contains("malformed .npy header"), "{name}: {e}");
            assert!(
                start.elapsed().as_secs() < 1,
                "{name}: {:?}",
                start.elapsed()
            );
        }
        let ok = dir.join("ok.npy");
        std::fs::write(
            &ok,
            header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1), }"),
        )
        .unwrap();
        assert_eq!(read_f32(&ok).unwrap(), (vec![0.0, 0.0], vec![2, 1]));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
