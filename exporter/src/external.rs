//! Reading an ONNX model's external data files (`TensorProto.external_data`) without leaving
//! the model's folder.
//!
//! An ONNX file names its weight files by relative path, so a downloaded model could name any
//! file the user can read (ONNX's own loader had CVE-2026-34446/-34447 through `..`, symbolic
//! links and hard links). [`read_confined`] is the only way the exporter opens such a file:
//! it refuses a location that is absolute, has `..` or a prefix, resolves through a symbolic
//! link to a place outside the folder, is not a regular file, or has more than one hard link
//! (a hard link can make a file from elsewhere appear inside the folder), and it reads the
//! file through the handle it checked, expecting exactly the size it saw (a file that changes
//! size in between is an error). The bytes of all external files of one model are capped
//! ([`MAX_EXTERNAL_BYTES`]).

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The most bytes of external data one model may read, over all its files: 16 GiB, far above
/// any model flowrt targets, but finite, so a crafted location such as a device file cannot
/// make the exporter read without bound.
pub const MAX_EXTERNAL_BYTES: u64 = 16 << 30;

/// Reads the external data file `location` (as written in the ONNX file) of the model in
/// folder `dir`; `already_read` bytes of this model's external data were read before (for
/// [`MAX_EXTERNAL_BYTES`]). Returns the file's path (as joined) and its bytes.
///
/// Errors, each naming the location: an empty, absolute or `..` location; a path that leaves
/// `dir` once symbolic links are resolved; a missing file or one that is not a regular file;
/// a file with more than one hard link; a file that would take the model past
/// [`MAX_EXTERNAL_BYTES`]; a file whose size changed while it was read.
pub fn read_confined(dir: &Path, location: &str, already_read: u64) -> Result<(PathBuf, Vec<u8>)> {
    read_confined_capped(dir, location, already_read, MAX_EXTERNAL_BYTES)
}

/// [`read_confined`] with the cap given (the tests use a small one).
pub(crate) fn read_confined_capped(
    dir: &Path,
    location: &str,
    already_read: u64,
    cap: u64,
) -> Result<(PathBuf, Vec<u8>)> {
    let rel = Path::new(location);
    if location.is_empty()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        bail!(
            "external data location `{location}` must be a relative path inside the model's \
             folder (no `..`, no absolute path)"
        );
    }
    let file = dir.join(rel);
    let folder = dir_or_cwd(dir)
        .canonicalize()
        .with_context(|| format!("resolving the model's folder {}", dir.display()))?;
    let real = file
        .canonicalize()
        .with_context(|| format!("reading external data {}", file.display()))?;
    if !real.starts_with(&folder) {
        bail!(
            "external data location `{location}` leaves the model's folder through a symbolic \
             link (it resolves to {})",
            real.display()
        );
    }
    // Checked before opening: opening a FIFO would block, a device could read without end.
    let seen = std::fs::metadata(&real)
        .with_context(|| format!("reading external data {}", file.display()))?;
    if !seen.is_file() {
        bail!("external data location `{location}` is not a regular file");
    }
    let mut handle =
        File::open(&real).with_context(|| format!("reading external data {}", file.display()))?;
    let meta = handle
        .metadata()
        .with_context(|| format!("reading external data {}", file.display()))?;
    if !meta.is_file() || !same_file(&seen, &meta) {
        bail!("external data file `{location}` was replaced while it was opened");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.nlink() > 1 {
            bail!(
                "external data file `{location}` has {} hard links; one of them may lie outside \
                 the model's folder, so flowrt refuses it (copy the file instead of linking it)",
                meta.nlink()
            );
        }
    }
    let len = meta.len();
    if already_read.saturating_add(len) > cap {
        bail!(
            "external data file `{location}` ({len} bytes) takes the model's external data past \
             the limit of {cap} bytes"
        );
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    (&mut handle)
        .take(len.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading external data {}", file.display()))?;
    if bytes.len() as u64 != len {
        bail!(
            "external data file `{location}` changed size while it was read ({len} bytes \
             expected, {} read)",
            bytes.len()
        );
    }
    Ok((file, bytes))
}

/// Whether two metadata describe the same file (device and inode on Unix).
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        a.len() == b.len()
    }
}

/// `dir`, or `.` for the empty path of a bare file name's parent.
fn dir_or_cwd(dir: &Path) -> &Path {
    if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder `model/` holding `w.bin`, and a sibling file `secret.bin` outside it.
    fn layout(tag: &str) -> (PathBuf, PathBuf) {
        let root =
            std::env::temp_dir().join(format!("flowrt-external-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let model = root.join("model");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::write(model.join("w.bin"), [1u8, 2, 3, 4]).unwrap();
        std::fs::write(root.join("secret.bin"), b"secret").unwrap();
        (root, model)
    }

    fn err(r: Result<(PathBuf, Vec<u8>)>) -> String {
        format!("{:#}", r.expect_err("must be refused"))
    }

    #[test]
    fn a_plain_file_inside_the_folder_is_read() {
        let (root, model) = layout("plain");
        let (_, bytes) = read_confined(&model, "w.bin", 0).unwrap();
        assert_eq!(bytes, [1, 2, 3, 4]);
        let (_, bytes) = read_confined(&model, "./w.bin", 0).unwrap();
        assert_eq!(bytes, [1, 2, 3, 4]);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn absolute_and_parent_locations_are_refused() {
        let (root, model) = layout("escape");
        let abs = root.join("secret.bin");
        assert!(err(read_confined(&model, abs.to_str().unwrap(), 0)).contains("relative path"));
        assert!(err(read_confined(&model, "../secret.bin", 0)).contains("relative path"));
        assert!(err(read_confined(&model, "sub/../../secret.bin", 0)).contains("relative path"));
        assert!(err(read_confined(&model, "", 0)).contains("relative path"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_out_of_the_folder_are_refused_and_inside_it_followed() {
        let (root, model) = layout("symlink");
        std::os::unix::fs::symlink(root.join("secret.bin"), model.join("out.bin")).unwrap();
        std::os::unix::fs::symlink(&root, model.join("up")).unwrap();
        std::os::unix::fs::symlink("w.bin", model.join("alias.bin")).unwrap();
        assert!(err(read_confined(&model, "out.bin", 0)).contains("symbolic link"));
        assert!(err(read_confined(&model, "up/secret.bin", 0)).contains("symbolic link"));
        let (_, bytes) = read_confined(&model, "alias.bin", 0).unwrap();
        assert_eq!(bytes, [1, 2, 3, 4]);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn hard_linked_files_are_refused() {
        let (root, model) = layout("hardlink");
        std::fs::hard_link(root.join("secret.bin"), model.join("linked.bin")).unwrap();
        let e = err(read_confined(&model, "linked.bin", 0));
        assert!(e.contains("2 hard links"), "{e}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_folders_are_not_regular_files() {
        let (root, model) = layout("special");
        std::fs::create_dir(model.join("dir.bin")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", model.join("zero.bin")).unwrap();
        assert!(err(read_confined(&model, "dir.bin", 0)).contains("not a regular file"));
        let fifo = model.join("fifo.bin");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            // Refused without opening it (opening a FIFO with no writer would block).
            assert!(err(read_confined(&model, "fifo.bin", 0)).contains("not a regular file"));
        }
        // /dev/zero is outside the folder: refused before it is opened.
        assert!(err(read_confined(&model, "zero.bin", 0)).contains("symbolic link"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_total_external_bytes_are_capped() {
        let (root, model) = layout("cap");
        assert!(read_confined_capped(&model, "w.bin", 6, 10).is_ok());
        let e = err(read_confined_capped(&model, "w.bin", 7, 10));
        assert!(e.contains("past the limit of 10 bytes"), "{e}");
        std::fs::remove_dir_all(root).unwrap();
    }
}
