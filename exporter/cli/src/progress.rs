//! The progress bar of long runs (`sample`, `invert`, `rollout`, `bench`): drawn on stderr,
//! only when stderr is a terminal that can redraw a line (never into a pipe, a file, a CI log
//! or a `TERM=dumb` terminal), and only once the run has
//! taken longer than a delay (1 s; `FLOWRT_PROGRESS_DELAY_MS` overrides it), so short runs
//! print exactly what they always did. The bar is cleared at the end; the summary lines
//! on stdout are unchanged.

use std::io::IsTerminal;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use flowrt_host::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a run goes before its bar appears, unless `FLOWRT_PROGRESS_DELAY_MS` says.
const DELAY: Duration = Duration::from_secs(1);

/// A progress bar that shows itself after the delay, on a terminal's stderr only.
pub struct Bar {
    /// The bar (hidden until shown; always hidden off a terminal).
    pb: ProgressBar,
    /// Dropping it tells the thread waiting out the delay that the run is over.
    done: Option<mpsc::Sender<()>>,
    /// The thread that shows the bar after the delay.
    waiter: Option<JoinHandle<()>>,
}

impl Bar {
    /// A bar for a run of `total` units (`what` is its label, e.g. `sampling`); with `None`
    /// a spinner with the elapsed time until the first [`Bar::update`] says the total. Off
    /// a terminal it is inert: no thread, no drawing.
    pub fn new(what: &str, total: Option<u64>) -> Bar {
        let pb = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
        pb.set_style(if total.is_some() {
            bar_style()
        } else {
            ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner())
        });
        pb.set_message(what.to_string());
        // A dumb terminal (TERM=dumb: an editor's shell buffer) cannot redraw a line.
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        if !std::io::stderr().is_terminal() || dumb {
            return Bar {
                pb,
                done: None,
                waiter: None,
            };
        }
        let delay = std::env::var("FLOWRT_PROGRESS_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(DELAY, Duration::from_millis);
        let (tx, rx) = mpsc::channel::<()>();
        let shown = pb.clone();
        let waiter = std::thread::spawn(move || {
            // Only a timeout shows the bar: a message or a hang-up means the run is over.
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(delay) {
                shown.set_draw_target(ProgressDrawTarget::stderr());
                shown.tick();
                shown.enable_steady_tick(Duration::from_millis(200));
            }
        });
        Bar {
            pb,
            done: Some(tx),
            waiter: Some(waiter),
        }
    }

    /// Records the host API's progress report.
    pub fn update(&self, p: Progress) {
        if self.pb.length() != Some(p.total) {
            if self.pb.length().is_none() {
                self.pb.set_style(bar_style());
            }
            self.pb.set_length(p.total);
        }
        self.pb.set_position(p.done);
    }

    /// Advances the bar by `n` units.
    pub fn inc(&self, n: u64) {
        self.pb.inc(n);
    }

    /// Ends the bar and clears it from the terminal (it never stays behind a summary line).
    pub fn finish(mut self) {
        self.stop();
    }

    /// Stops the waiting thread and clears the bar (once: [`Bar::finish`] then drop).
    fn stop(&mut self) {
        drop(self.done.take());
        if let Some(w) = self.waiter.take() {
            let _ = w.join();
        }
        if !self.pb.is_finished() {
            self.pb.finish_and_clear();
        }
    }
}

/// The bar: label, elapsed time, bar, units done of all, percent and time left.
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] [{wide_bar}] {pos}/{len} ({percent}%, eta {eta})",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Drop for Bar {
    /// An error path clears the bar too, before the error is printed.
    fn drop(&mut self) {
        self.stop();
    }
}
