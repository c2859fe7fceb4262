//! The exporter's `.npy` reader (`flowrt_export::npy::read_f32`, `read_labels`, through
//! `npyz`) on arbitrary bytes. The reader takes a path, so each input goes through one file
//! in `/dev/shm` (or the temp dir).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        base.join(format!("flowrt-fuzz-npy-{}.npy", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let p = path();
    std::fs::write(p, data).unwrap();
    if let Ok((v, shape)) = flowrt_export::npy::read_f32(p) {
        // The reader's promise: the values fill the shape exactly.
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        assert_eq!(
            n,
            Some(v.len()),
            "read_f32: shape {shape:?} vs {} values",
            v.len()
        );
    }
    if let Ok((v, shape)) = flowrt_export::npy::read_labels(p) {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        assert_eq!(
            n,
            Some(v.len()),
            "read_labels: shape {shape:?} vs {} values",
            v.len()
        );
    }
});
