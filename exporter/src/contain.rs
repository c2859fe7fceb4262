//! Containment of panics inside tract.
//!
//! tract-onnx / tract-hir / tract-core panic (index out of range, `unwrap` on a missing map
//! entry, `unimplemented!`) on some malformed ONNX graphs that [`crate::validate`] does not
//! catch. [`contain`] runs one import stage under [`std::panic::catch_unwind`], keeps the
//! default panic hook quiet for that call only (other threads and later panics still print),
//! and turns a panic into a typed one-line error:
//! "the ONNX importer failed on <model> (<stage>): <panic message> (at <file:line>)".

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use anyhow::{bail, Result};

thread_local! {
    /// Set while this thread runs a contained stage: the panic hook only records.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// Where the last contained panic happened (file:line), recorded by the hook.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs (once) a panic hook that stays silent on threads inside [`contain`] and
/// delegates to the previous hook everywhere else.
fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let at = info.location().map(|l| {
                    // Keep the crate and file, drop the registry path prefix.
                    let file = l.file();
                    let short = file
                        .rsplit_once("/src/")
                        .map(|(head, tail)| {
                            let krate = head.rsplit('/').next().unwrap_or(head);
                            format!("{krate}/src/{tail}")
                        })
                        .unwrap_or_else(|| file.to_string());
                    format!("{short}:{}", l.line())
                });
                LOCATION.with(|c| *c.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

/// The text of a panic payload (`&str` or `String`), on one line.
fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs `f` (one stage of importing `model`: "parse", "analysis", "lowering") and turns a
/// panic in it into an error naming the model, the stage, the panic message and where it
/// happened.
///
/// Errors: `f`'s own error, or the panic as an error.
pub fn contain<T>(model: &Path, stage: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    install_hook();
    let was_quiet = QUIET.with(|q| q.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was_quiet));
    match result {
        Ok(r) => r,
        Err(payload) => {
            let at = LOCATION
                .with(|c| c.borrow_mut().take())
                .map(|l| format!(" (at {l})"))
                .unwrap_or_default();
            bail!(
                "the ONNX importer failed on {} ({stage}): {}{at}",
                model.display(),
                payload_text(payload.as_ref())
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error() {
        let e = contain(Path::new("m.onnx"), "analysis", || -> Result<()> {
            let v: Vec<u8> = Vec::new();
            let i = v.len() + 3;
            let _ = v[i];
            Ok(())
        })
        .unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.starts_with("the ONNX importer failed on m.onnx (analysis): index out of bounds"),
            "{text}"
        );
        assert!(text.contains("contain.rs"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn errors_and_values_pass_through() {
        assert_eq!(contain(Path::new("m"), "parse", || Ok(3)).unwrap(), 3);
        let e = contain(Path::new("m"), "parse", || -> Result<()> { bail!("plain") });
        assert_eq!(format!("{:#}", e.unwrap_err()), "plain");
    }
}
