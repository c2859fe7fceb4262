//! Output files written atomically: each file goes to a temp file in its own folder and is
//! renamed over the target only when everything the command writes is complete, so a failed
//! run leaves no new or half-written file and never clobbers a good one.
//!
//! No `tempfile` dependency: the temp name is `.NAME.PID.N.tmp` next to the target, created
//! with `create_new` (never follows or reuses an existing file), removed again if the run
//! fails. An existing target that is no regular file (`/dev/null`, a FIFO) is written in
//! place: renaming over a device would replace it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, Context, Result};

/// The folder a path's file lives in (`.` for a bare file name).
fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether `path` is an existing file that is not a regular file (written in place).
fn is_special(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

fn temp_name(path: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", path.display()))?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok(folder(path).join(format!(
        ".{}.{}.{n}.tmp",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Checks, before a run, that `path` can be written: its folder exists and is writable, and
/// the path is no folder. `what` names the option in the message (`-o`, `--trajectory`).
///
/// Errors: one of those, naming the path.
pub fn check_writable(path: &Path, what: &str) -> Result<()> {
    if path.is_dir() {
        anyhow::bail!("{what} {}: is a folder", path.display());
    }
    if is_special(path) {
        return Ok(());
    }
    let dir = folder(path);
    if !dir.is_dir() {
        anyhow::bail!(
            "{what} {}: the folder {} does not exist",
            path.display(),
            dir.display()
        );
    }
    let probe = temp_name(path)?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(anyhow!(
            "{what} {}: cannot write in {}: {e}",
            path.display(),
            dir.display()
        )),
    }
}

/// Files written to temp files, renamed over their targets together by [`Staged::commit`];
/// dropped uncommitted, the temp files are removed.
#[derive(Default)]
pub struct Staged {
    /// (temp file, target).
    files: Vec<(PathBuf, PathBuf)>,
}

impl Staged {
    /// Writes `bytes` to a temp file next to `path` (or straight into `path` if it exists
    /// and is no regular file).
    ///
    /// Errors: the temp file cannot be created or written.
    pub fn put(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        if is_special(path) {
            return std::fs::write(path, bytes)
                .with_context(|| format!("writing {}", path.display()));
        }
        let tmp = temp_name(path)?;
        let written = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            self.files.push((tmp.clone(), path.to_path_buf()));
            f.write_all(bytes)?;
            f.sync_all()
        })();
        written.with_context(|| format!("writing {}", path.display()))
    }

    /// Renames every temp file over its target.
    ///
    /// Errors: a rename fails (the remaining temp files are removed).
    pub fn commit(mut self) -> Result<()> {
        let files = std::mem::take(&mut self.files);
        let mut rest = files.iter();
        for (tmp, target) in rest.by_ref() {
            if let Err(e) = std::fs::rename(tmp, target) {
                let _ = std::fs::remove_file(tmp);
                for (t, _) in rest {
                    let _ = std::fs::remove_file(t);
                }
                return Err(anyhow!("writing {}: {e}", target.display()));
            }
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, _) in &self.files {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Writes `bytes` to `path` atomically (a temp file in the same folder, then a rename).
///
/// Errors: the file cannot be written.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut s = Staged::default();
    s.put(path, bytes)?;
    s.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_files_appear_together_or_not_at_all() {
        let dir = std::env::temp_dir().join(format!("flowrt-output-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.bin");
        std::fs::write(&a, b"good").unwrap();
        {
            let mut s = Staged::default();
            s.put(&a, b"new").unwrap();
            // Dropped without commit: the good file stays, no temp file is left.
        }
        assert_eq!(std::fs::read(&a).unwrap(), b"good");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        write_atomic(&a, b"new").unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"new");
        assert!(check_writable(&dir.join("missing/x"), "-o").is_err());
        assert!(check_writable(&dir, "-o").is_err());
        check_writable(&dir.join("b"), "-o").unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
