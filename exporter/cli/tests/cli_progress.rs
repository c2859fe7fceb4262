//! The progress bar of `flowrt sample` / `invert`: on a terminal's stderr only, after a
//! delay. A pipe never sees it, even with no delay; a pseudo-terminal (util-linux `script`)
//! sees the bar count the solver's steps, and then the usual summary line.

mod common;
use common::*;

use std::process::Command;

/// Runs `flowrt ARGS` on a pseudo-terminal with `script -qec` (stdout and stderr both on the
/// terminal), with the environment `env`; returns everything the terminal received.
fn on_terminal(parts: &[&dyn Arg], env: &[(&str, &str)]) -> String {
    let line = std::iter::once(env!("CARGO_BIN_EXE_flowrt").to_string())
        .chain(args(parts))
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut c = Command::new("script");
    c.args(["-qec", &line, "/dev/null"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c
        .output()
        .expect("run `script` (util-linux) to give flowrt a terminal");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "script -qec {line}:\n{text}");
    text
}

/// 20000 moons samples with 16 rk4-38 steps (64 evaluations of the 20000-row batch).
const LONG: &str = "--seed 0 --num 20000 --method rk4-38 --steps 16 -o";

#[test]
fn no_progress_in_a_pipe_even_without_delay() {
    let (dir, frt) = temp_export("progress-pipe", "moons_reflow/model.ts.onnx", "");
    let out = dir.path("x.npy");
    let parts: &[&dyn Arg] = &[&"sample", &frt, &LONG, &out];
    let r = flowrt_env(parts, &[("FLOWRT_PROGRESS_DELAY_MS", "0")]);
    let what = describe(parts, &r);
    assert!(r.status.success(), "{what}");
    assert!(r.stderr.is_empty(), "stderr is not empty:\n{what}");
    let stdout = String::from_utf8(r.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{what}");
    assert!(
        stdout.starts_with("sampled 20000 x 2 with rk4-38 x 16 steps"),
        "{what}"
    );
}

#[test]
fn progress_bar_on_a_terminal() {
    let (dir, frt) = temp_export("progress-tty", "moons_reflow/model.ts.onnx", "");
    let out = dir.path("x.npy");
    // No delay: the bar shows at once and counts the 16 steps.
    let text = on_terminal(
        &[&"sample", &frt, &LONG, &out],
        &[("FLOWRT_PROGRESS_DELAY_MS", "0")],
    );
    assert_contains(&text, &["sampling 20000 x 2", "/16 (", "\x1b[2K"]);
    // The bar is cleared and the summary line comes after it, as without a bar.
    let last = text.rsplit("\x1b[2K").next().unwrap();
    assert!(
        last.contains("sampled 20000 x 2 with rk4-38 x 16 steps"),
        "{text:?}"
    );
    assert!(!last.contains("sampling"), "{text:?}");

    // Inversion: backward then forward, 2 x 8 steps.
    let back = dir.path("z.npy");
    let parts: &[&dyn Arg] = &[
        &"invert",
        &frt,
        &"--data",
        &out,
        &"--method rk4 --steps 8 -o",
        &back,
    ];
    let text = on_terminal(parts, &[("FLOWRT_PROGRESS_DELAY_MS", "0")]);
    assert_contains(&text, &["inverting", "/16 (", "round trip"]);

    // A short run with the default delay (1 s): no bar, only the summary line.
    let text = on_terminal(
        &[&"sample", &frt, &"--seed 0 --num 8 --steps 2 -o", &out],
        &[],
    );
    assert!(
        !text.contains('\x1b') && !text.contains("sampling"),
        "{text:?}"
    );
    assert!(text.starts_with("sampled 8 x 2"), "{text:?}");
}
