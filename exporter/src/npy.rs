//! `.npy` input and output of f32 arrays (through `npyz`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use npyz::WriterBuilder;

/// A `.npy` file read into memory.
type NpyBytes = npyz::NpyFile<std::io::Cursor<Vec<u8>>>;

/// Reads a C-order `.npy` file; returns the array and its shape.
///
/// Errors: unreadable file, not a `.npy` file, or Fortran order.
fn open_c_order(path: &Path) -> Result<(NpyBytes, Vec<usize>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let npy = npyz::NpyFile::new(std::io::Cursor::new(bytes))
        .with_context(|| format!("{}: not a .npy file", path.display()))?;
    if npy.order() != npyz::Order::C {
        bail!("{}: Fortran-order arrays are not supported", path.display());
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    Ok((npy, shape))
}

/// Writes `data` as a C-order `.npy` file with `shape`, in the dtype of `T`.
///
/// Errors: the file cannot be written.
fn write<T: npyz::AutoSerialize + Copy>(path: &Path, data: &[T], shape: &[u64]) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()?;
    Ok(())
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
