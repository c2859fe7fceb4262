//! A model's external weight file is read only from inside the model's folder
//! (`flowrt_export::external`): the export of a real torch.onnx dynamo export
//! (`tests/fixtures/moons_icfm/model.dynamo.onnx` + `.data`) succeeds from a plain copy and is
//! refused, naming the cause, when its data file is reached through `..`, an absolute path, a
//! symbolic link out of the folder or a hard link.

use std::path::{Path, PathBuf};

use flowrt_export::{export_onnx, ExportOptions};
use prost::Message;
use tract_onnx::pb::ModelProto;

const FIXTURE: &str = "../tests/fixtures/moons_icfm";
const MODEL: &str = "model.dynamo.onnx";
const DATA: &str = "model.dynamo.onnx.data";

/// A fresh `root/model/` with the fixture's ONNX file (its data file is the test's business)
/// and the data file as `root/outside.data`.
fn layout(tag: &str) -> (PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("flowrt-extdata-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(Path::new(FIXTURE).join(MODEL), dir.join(MODEL)).unwrap();
    std::fs::copy(Path::new(FIXTURE).join(DATA), root.join("outside.data")).unwrap();
    (root, dir)
}

fn export_err(model: &Path) -> String {
    let e = export_onnx(model, &ExportOptions::default()).expect_err("must be refused");
    format!("{e:#}")
}

/// Rewrites every external data location of the ONNX file at `path` to `location`.
fn relocate(path: &Path, location: &str) {
    let mut m = ModelProto::decode(&std::fs::read(path).unwrap()[..]).unwrap();
    let mut n = 0;
    for t in &mut m.graph.as_mut().unwrap().initializer {
        for kv in &mut t.external_data {
            if kv.key == "location" {
                kv.value = location.into();
                n += 1;
            }
        }
    }
    assert!(n > 0, "the fixture stores its weights externally");
    std::fs::write(path, m.encode_to_vec()).unwrap();
}

#[test]
fn a_copy_inside_the_folder_exports() {
    let (root, dir) = layout("copy");
    std::fs::copy(root.join("outside.data"), dir.join(DATA)).unwrap();
    let frt = export_onnx(&dir.join(MODEL), &ExportOptions::default()).unwrap();
    assert!(
        frt.len() > 34_000,
        "the weights were read: {} bytes",
        frt.len()
    );
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn parent_and_absolute_locations_are_refused() {
    let (root, dir) = layout("relocate");
    relocate(&dir.join(MODEL), "../outside.data");
    let e = export_err(&dir.join(MODEL));
    assert!(
        e.contains("must be a relative path inside the model's folder"),
        "{e}"
    );
    let abs = root.join("outside.data");
    relocate(&dir.join(MODEL), abs.to_str().unwrap());
    let e = export_err(&dir.join(MODEL));
    assert!(
        e.contains("must be a relative path inside the model's folder"),
        "{e}"
    );
    std::fs::remove_dir_all(root).unwrap();
}

#[cfg(unix)]
#[test]
fn a_symbolic_link_out_of_the_folder_is_refused() {
    let (root, dir) = layout("symlink");
    std::os::unix::fs::symlink(root.join("outside.data"), dir.join(DATA)).unwrap();
    let e = export_err(&dir.join(MODEL));
    assert!(
        e.contains("leaves the model's folder through a symbolic link"),
        "{e}"
    );
    // The same refusal when the ONNX is also embedded (`--embed-onnx` reads the data again).
    let opts = ExportOptions {
        embed_onnx: true,
        ..Default::default()
    };
    let e = format!("{:#}", export_onnx(&dir.join(MODEL), &opts).unwrap_err());
    assert!(e.contains("symbolic link"), "{e}");
    std::fs::remove_dir_all(root).unwrap();
}

#[cfg(unix)]
#[test]
fn a_hard_link_is_refused() {
    let (root, dir) = layout("hardlink");
    std::fs::hard_link(root.join("outside.data"), dir.join(DATA)).unwrap();
    let e = export_err(&dir.join(MODEL));
    assert!(e.contains("has 2 hard links"), "{e}");
    std::fs::remove_dir_all(root).unwrap();
}
