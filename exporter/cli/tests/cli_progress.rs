//! The progress bar of `flowrt sample` / `invert` / `bench`: on a terminal's stderr only,
//! after a delay. A pipe never sees it, even with no delay; a pseudo-terminal (util-linux
//! `script`) sees the bar count the solver's steps (bench: its runs), and then the usual
//! summary line. The bench test needs ONNX Runtime, as `ort_cli.rs`.

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

    // A dumb terminal: no bar even without delay.
    let env = [("FLOWRT_PROGRESS_DELAY_MS", "0"), ("TERM", "dumb")];
    let text = on_terminal(&[&"sample", &frt, &LONG, &out], &env);
    assert!(
        !text.contains('\x1b') && !text.contains("sampling"),
        "{text:?}"
    );
    assert!(text.starts_with("sampled 20000 x 2"), "{text:?}");

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

/// The host API's progress reports, which the bar draws: one per solver step on a fixed grid
/// (`done` 1..=steps of `steps`), thousandths of the span for dopri5 ending at 1000, one per
/// Euler–Maruyama step, and both integrations of an inversion.
#[test]
fn host_progress_counts_solver_steps() {
    use flowrt_host::{Backend, Frt, Noise, Progress, Request};
    let (_dir, frt) = temp_export("progress-host", "moons_reflow/model.ts.onnx", "");
    let frt = Frt::open(&frt).unwrap();
    let noise = || Noise::Seed { seed: 0, num: 32 };
    let run = |req: &Request| {
        let mut seen: Vec<Progress> = Vec::new();
        let out = frt
            .sample_with_progress(Backend::Cpu, req, noise(), &mut |p| seen.push(p))
            .unwrap();
        (seen, out)
    };
    let pairs = |seen: &[Progress]| seen.iter().map(|p| (p.done, p.total)).collect::<Vec<_>>();
    let rk4 = Request::default()
        .method("rk4-38".parse().unwrap())
        .steps(8);
    let (seen, out) = run(&rk4);
    assert_eq!(pairs(&seen), (1..=8).map(|d| (d, 8)).collect::<Vec<_>>());
    // The same samples as without a callback.
    let plain = frt.sample(Backend::Cpu, &rk4, noise()).unwrap();
    assert_eq!(out.data, plain.data);
    // dopri5: monotone thousandths of the span after every evaluation, ending at the whole
    // span.
    let (seen, out) = run(&Request::default().method("dopri5".parse().unwrap()));
    assert!(out.report.steps > 10, "{:?}", out.report);
    assert!(
        seen.len() >= out.report.evaluations,
        "{} reports",
        seen.len()
    );
    assert!(seen.iter().filter(|p| p.done < 500).count() > 5, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done), "{seen:?}");
    assert_eq!(seen.last().map(|p| (p.done, p.total)), Some((1000, 1000)));
    // The SDE: one report per Euler–Maruyama step.
    let (seen, _) = run(&Request::default().steps(5).sde("const:0.5"));
    assert_eq!(pairs(&seen), (1..=5).map(|d| (d, 5)).collect::<Vec<_>>());
    // Inversion: 6 backward then 6 forward steps, 12 units.
    let mut seen = Vec::new();
    frt.invert_with_progress(
        Backend::Cpu,
        &Request::default().steps(6),
        plain.data,
        &mut |p| seen.push(p),
    )
    .unwrap();
    assert_eq!(pairs(&seen), (1..=12).map(|d| (d, 12)).collect::<Vec<_>>());
}

/// `bench`: 1 warm-up + 3 timed runs of each backend, 8 in all; the ratio line last.
#[test]
fn bench_progress_on_a_terminal() {
    let (_dir, frt) = temp_export(
        "progress-bench",
        "moons_reflow/model.ts.onnx",
        "--embed-onnx",
    );
    let flags = "--batch 4096 --steps 8 --runs 3 --warmup 1";
    let parts: &[&dyn Arg] = &[&"bench", &frt, &flags];
    let text = on_terminal(parts, &[("FLOWRT_PROGRESS_DELAY_MS", "0")]);
    assert_contains(&text, &["benchmarking", "/8 ("]);
    let last = text.rsplit("\x1b[2K").next().unwrap();
    assert!(last.contains("ratio flowrt/ort:"), "{text:?}");
    // Piped: no bar.
    let r = flowrt_env(parts, &[("FLOWRT_PROGRESS_DELAY_MS", "0")]);
    assert!(
        r.status.success() && r.stderr.is_empty(),
        "{}",
        describe(parts, &r)
    );
}

/// Rollout: one report per application of the heat-equation surrogate; the trajectory is
/// the one without a callback.
#[test]
fn host_progress_counts_rollout_steps() {
    use flowrt_host::{Backend, Frt, Request};
    let (_dir, frt) = temp_export("progress-rollout", "heat_rollout/model.ts.onnx", "");
    let frt = Frt::open(&frt).unwrap();
    let init = read_npy(&fx("heat_rollout/init.npy")).0;
    let req = Request::default();
    let mut seen = Vec::new();
    let (traj, _) = frt
        .rollout_with_progress(Backend::Cpu, &req, init.clone(), 20, &mut |p| {
            seen.push((p.done, p.total))
        })
        .unwrap();
    assert_eq!(seen, (1..=20).map(|d| (d, 20)).collect::<Vec<_>>());
    let (plain, _) = frt.rollout(Backend::Cpu, &req, init, 20).unwrap();
    assert_eq!(traj, plain);
}

/// `export`: a spinner with the elapsed time (the import and calibration have no step count),
/// cleared before the `exported` line.
#[test]
fn export_spinner_on_a_terminal() {
    let dir = TempDir::new("progress-export");
    let frt = dir.path("d.frt");
    let parts: &[&dyn Arg] = &[&"export", &fx("digits_unet/model.dynamo.onnx"), &"-o", &frt];
    let text = on_terminal(parts, &[("FLOWRT_PROGRESS_DELAY_MS", "0")]);
    assert_contains(&text, &["exporting model.dynamo.onnx [00:00:0"]);
    let last = text.rsplit("\x1b[2K").next().unwrap();
    assert!(
        last.starts_with("exported ") && !last.contains("exporting"),
        "{text:?}"
    );
}
