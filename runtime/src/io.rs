//! Reading input files with a size cap (feature `std`): the host's `.frt` reader and the
//! exporter's `.npy` / ONNX / grid readers share it.

use std::io::Read;
use std::path::Path;
use std::vec::Vec;

/// Reads at most `cap` bytes of `path`. A longer file, by its size or by what a pipe or
/// device delivers (`/dev/zero`), is refused after at most `cap + 1` bytes are read; the
/// buffer grows with fallible allocation.
///
/// Errors: the file cannot be opened or read; `OutOfMemory` when the buffer cannot grow;
/// `InvalidData` "larger than the `cap`-byte limit for `what`" when the file is too long.
pub fn read_capped(path: &Path, cap: u64, what: &str) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            std::format!("larger than the {cap}-byte limit for {what}"),
        )
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size > cap {
        return Err(too_large());
    }
    let bytes = read_bounded(file, size, cap)?;
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Reads `file` (`size`: its length if known, else 0) up to `cap + 1` bytes, growing the
/// buffer with fallible allocation (an allocation failure is an error, not an abort).
fn read_bounded(mut file: std::fs::File, size: u64, cap: u64) -> std::io::Result<Vec<u8>> {
    let limit = cap.saturating_add(1);
    let oom = || std::io::Error::new(std::io::ErrorKind::OutOfMemory, "cannot allocate");
    let mut bytes: Vec<u8> = Vec::new();
    let first = size.saturating_add(1).min(limit).max(1 << 16).min(limit);
    bytes.try_reserve_exact(first as usize).map_err(|_| oom())?;
    let mut chunk = std::vec![0u8; 1 << 16];
    while (bytes.len() as u64) < limit {
        let room = (limit - bytes.len() as u64).min(chunk.len() as u64) as usize;
        // `room` ≤ the chunk's length and `n` ≤ `room`: the `get`s cannot fail.
        let Some(buf) = chunk.get_mut(..room) else {
            break;
        };
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if bytes.capacity() - bytes.len() < n {
            let grow = (bytes.capacity() as u64)
                .max(1 << 16)
                .min(limit - bytes.len() as u64);
            bytes
                .try_reserve_exact((grow as usize).max(n))
                .map_err(|_| oom())?;
        }
        bytes.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    Ok(bytes)
}
