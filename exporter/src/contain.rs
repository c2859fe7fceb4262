//! Containment of panics inside tract.
//!
//! tract-onnx / tract-hir / tract-core panic (index out of range, `unwrap` on a missing map
//! entry, `unimplemented!`) on some malformed ONNX graphs that [`crate::validate`] does not
//! catch. [`contain`] runs one import stage under [`std::panic::catch_unwind`], keeps the
//! default panic hook quiet for that call only (other threads and later panics still print),
//! and turns a panic into a typed one-line error:
//! `the ONNX importer failed on <model> (<stage>): <panic message> (at <file:line>)`.
//!
//! Some malformed graphs make tract loop instead (its LayerNormalization rules, for an axis
//! below minus the input's rank when that rank is only known after analysis). A loop cannot
//! be unwound: [`with_deadline`] runs the whole import on a worker thread and gives up after
//! a time limit ([`IMPORT_TIMEOUT`] by default) with a typed error naming the stage. The
//! worker cannot be stopped; it ends with the process (the CLI exits right after the error),
//! so a library user who keeps the process running keeps a busy thread.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Once};
use std::time::Duration;

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

/// The default time limit of one ONNX import (parse, analysis and lowering together).
/// Importing the largest bundled model takes about a second on a 2-core machine.
pub const IMPORT_TIMEOUT: Duration = Duration::from_secs(120);

/// Which import stage a worker under [`with_deadline`] is in, for the timeout message.
#[derive(Debug, Clone, Default)]
pub struct StageTracker(Arc<AtomicUsize>);

/// The stage names [`StageTracker`] records, in order.
const STAGES: [&str; 4] = ["reading", "parse", "analysis", "lowering"];

impl StageTracker {
    /// Records that the worker entered `stage` (one of "parse", "analysis", "lowering").
    pub fn enter(&self, stage: &str) {
        if let Some(i) = STAGES.iter().position(|s| *s == stage) {
            self.0.store(i, Ordering::Relaxed);
        }
    }

    /// The stage last entered.
    fn current(&self) -> &'static str {
        STAGES
            .get(self.0.load(Ordering::Relaxed))
            .copied()
            .unwrap_or("import")
    }

    /// [`contain`] for one stage, recording it first.
    pub fn contain<T>(
        &self,
        model: &Path,
        stage: &str,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.enter(stage);
        contain(model, stage, f)
    }
}

/// Runs `f` (the import of `model`) on a worker thread and waits at most `limit` for it.
///
/// Errors: `f`'s own error; `the ONNX importer did not finish <model> within N s (stuck in
/// <stage>)` when the limit passes (the worker keeps running until the process ends); an
/// error if the worker thread cannot be started.
pub fn with_deadline<T: Send + 'static>(
    model: &Path,
    limit: Duration,
    f: impl FnOnce(StageTracker) -> Result<T> + Send + 'static,
) -> Result<T> {
    let tracker = StageTracker::default();
    let worker_tracker = tracker.clone();
    let (send, receive) = mpsc::channel();
    std::thread::Builder::new()
        .name("flowrt-onnx-import".into())
        .spawn(move || {
            // The receiver is gone after a timeout; nothing is left to tell.
            let _ = send.send(f(worker_tracker));
        })
        .map_err(|e| anyhow::anyhow!("starting the ONNX import thread: {e}"))?;
    match receive.recv_timeout(limit) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => bail!(
            "the ONNX importer did not finish {} within {} s (stuck in {}); a loop in tract \
             on a malformed graph, or a model too large for the limit (export --import-timeout)",
            model.display(),
            limit.as_secs_f64(),
            tracker.current()
        ),
        // The worker panicked outside a contained stage (it would have sent otherwise).
        Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
            "the ONNX importer failed on {}: its thread ended without a result",
            model.display()
        ),
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
    fn a_deadline_names_the_stuck_stage() {
        let e = with_deadline(Path::new("m.onnx"), Duration::from_millis(50), |t| {
            t.enter("analysis");
            std::thread::sleep(Duration::from_secs(5));
            Ok(())
        })
        .unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.starts_with(
                "the ONNX importer did not finish m.onnx within 0.05 s (stuck in analysis)"
            ),
            "{text}"
        );
        let v = with_deadline(Path::new("m"), Duration::from_secs(5), |t| {
            t.contain(Path::new("m"), "parse", || Ok(7))
        });
        assert_eq!(v.unwrap(), 7);
    }

    #[test]
    fn errors_and_values_pass_through() {
        assert_eq!(contain(Path::new("m"), "parse", || Ok(3)).unwrap(), 3);
        let e = contain(Path::new("m"), "parse", || -> Result<()> { bail!("plain") });
        assert_eq!(format!("{:#}", e.unwrap_err()), "plain");
    }
}
