//! Helpers shared by the CLI test files: run the real `flowrt` binary, check clean successes
//! and failures, temp dirs, fixture paths, and the export / inspect / sample command lines.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The committed fixtures (`tests/fixtures/`).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A fresh directory under the system temp dir, removed again on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `flowrt-cli-<pid>-<tag>-<n>` under the temp dir.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("flowrt-cli-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Words of a `flowrt` command line, as the one helper every CLI test builds its arguments
/// with ([`args`]): a string literal is split at white space (`"--method rk4-38 --steps 8"`),
/// a path or a `String` is one word, a list (`[&dyn Arg]`) is its parts in order.
pub trait Arg {
    /// Appends the words.
    fn push_to(&self, out: &mut Vec<String>);
}

impl Arg for str {
    fn push_to(&self, out: &mut Vec<String>) {
        out.extend(self.split_whitespace().map(str::to_string));
    }
}

impl<T: Arg + ?Sized> Arg for &T {
    fn push_to(&self, out: &mut Vec<String>) {
        (**self).push_to(out);
    }
}

impl Arg for String {
    fn push_to(&self, out: &mut Vec<String>) {
        out.push(self.clone());
    }
}

impl Arg for Path {
    fn push_to(&self, out: &mut Vec<String>) {
        out.push(s(self).to_string());
    }
}

impl Arg for PathBuf {
    fn push_to(&self, out: &mut Vec<String>) {
        out.push(s(self).to_string());
    }
}

impl Arg for [&str] {
    fn push_to(&self, out: &mut Vec<String>) {
        out.extend(self.iter().map(|w| w.to_string()));
    }
}

impl Arg for Vec<&str> {
    fn push_to(&self, out: &mut Vec<String>) {
        self.as_slice().push_to(out);
    }
}

impl<const N: usize> Arg for [&str; N] {
    fn push_to(&self, out: &mut Vec<String>) {
        self.as_slice().push_to(out);
    }
}

impl Arg for Vec<String> {
    fn push_to(&self, out: &mut Vec<String>) {
        out.extend(self.iter().cloned());
    }
}

impl Arg for [&dyn Arg] {
    fn push_to(&self, out: &mut Vec<String>) {
        for p in self {
            p.push_to(out);
        }
    }
}

/// The command line of `parts` (see [`Arg`]).
pub fn args(parts: &[&dyn Arg]) -> Vec<String> {
    let mut out = Vec::new();
    parts.push_to(&mut out);
    out
}

/// Runs the `flowrt` binary with `parts` and extra environment variables.
pub fn flowrt_env(parts: &[&dyn Arg], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowrt"));
    c.args(args(parts));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run the flowrt binary")
}

/// Runs the `flowrt` binary with `parts`.
pub fn flowrt(parts: &[&dyn Arg]) -> Output {
    flowrt_env(parts, &[])
}

/// The command line, status and both streams, for assertion messages.
pub fn describe(parts: &[&dyn Arg], out: &Output) -> String {
    format!(
        "flowrt {}\nstatus: {}\nstdout:\n{}\nstderr:\n{}",
        args(parts).join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs flowrt, asserts success, returns stdout.
pub fn ok(args: &[&dyn Arg]) -> String {
    let out = flowrt(args);
    assert!(
        out.status.success(),
        "expected success:\n{}",
        describe(args, &out)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs flowrt with `env`, asserts a clean failure (non-zero exit, not a signal, exactly one
/// `error:` line on stderr, no panic), returns that line.
pub fn fails_env(args: &[&dyn Arg], env: &[(&str, &str)]) -> String {
    let out = flowrt_env(args, env);
    let what = describe(args, &out);
    assert!(!out.status.success(), "expected failure:\n{what}");
    assert!(
        out.status.code().is_some(),
        "killed by a signal (abort?):\n{what}"
    );
    let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
    assert!(!stderr.contains("panicked"), "panicked:\n{what}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one stderr line:\n{what}");
    assert!(
        lines[0].starts_with("error:"),
        "stderr line does not start with `error:`:\n{what}"
    );
    lines[0].to_string()
}

/// [`fails_env`] without extra environment.
pub fn fails(args: &[&dyn Arg]) -> String {
    fails_env(args, &[])
}

/// [`fails`], and asserts that the error line contains each of `needles`.
pub fn fails_with(args: &[&dyn Arg], needles: &[&str]) -> String {
    let e = fails(args);
    assert_contains(&e, needles);
    e
}

/// Asserts that `text` contains every one of `needles`.
pub fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "output lacks `{needle}`:\n{text}");
    }
}

/// `flowrt inspect FRT`; asserts that its output contains each of `needles`, returns it.
pub fn inspect_has(frt: &Path, needles: &[&str]) -> String {
    let text = ok(&[&"inspect", &frt]);
    assert_contains(&text, needles);
    text
}

/// `flowrt inspect FRT --json`, parsed.
pub fn inspect_json(frt: &Path) -> serde_json::Value {
    let json = ok(&[&"inspect", &frt, &"--json"]);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{json}"))
}

/// The `role` of each input in an `inspect --json` value.
pub fn input_roles(v: &serde_json::Value) -> Vec<&str> {
    let inputs = v["inputs"].as_array().expect("inputs array");
    inputs.iter().map(|i| i["role"].as_str().unwrap()).collect()
}

/// A path as `&str` (the fixtures and temp dirs are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A path under the committed fixtures.
pub fn fx(path: &str) -> PathBuf {
    fixtures().join(path)
}

/// Reads a float32 `.npy` file: (values, shape).
pub fn read_npy(p: &Path) -> (Vec<f32>, Vec<usize>) {
    flowrt_export::npy::read_f32(p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()))
}

/// Asserts that the `.npy` at `got` has the shape of the fixture file `want` and values
/// within `tol` (max abs).
pub fn assert_close(got: &Path, want: &str, tol: f32) {
    let (g, gs) = read_npy(got);
    let (w, ws) = read_npy(&fx(want));
    assert_eq!(gs, ws, "{want}: shape");
    let d = flowrt_export::max_abs_diff(&g, &w);
    assert!(d <= tol, "{want}: max abs diff {d}");
}

/// The max abs difference of two `.npy` files, after asserting that their shapes agree.
pub fn npy_diff(a: &Path, b: &Path) -> f32 {
    let ((x, xs), (y, ys)) = (read_npy(a), read_npy(b));
    assert_eq!(xs, ys, "{} vs {}: shape", a.display(), b.display());
    flowrt_export::max_abs_diff(&x, &y)
}

/// `flowrt export FIXTURE -o FRT FLAGS...` (a fixture's ONNX file); asserts success.
pub fn export_fx(onnx: &str, frt: &Path, flags: impl Arg) -> String {
    ok(&[&"export", &fx(onnx), &"-o", &frt, &flags])
}

/// `flowrt export FIXTURE -o DIR/NAME FLAGS...`; asserts success and the written file,
/// returns its path.
pub fn export_in(dir: &TempDir, name: &str, onnx: &str, flags: impl Arg) -> PathBuf {
    let frt = dir.path(name);
    let stdout = export_fx(onnx, &frt, flags);
    assert!(stdout.contains("exported"), "{stdout}");
    assert!(frt.is_file(), "{} not written", frt.display());
    frt
}

/// A fresh [`TempDir`] tagged `tag`, with the fixture `onnx` exported to `model.frt` in it
/// ([`export_in`]).
pub fn temp_export(tag: &str, onnx: &str, flags: impl Arg) -> (TempDir, PathBuf) {
    let dir = TempDir::new(tag);
    let frt = export_in(&dir, "model.frt", onnx, flags);
    (dir, frt)
}

/// `flowrt export FIXTURE -o FRT FLAGS...`; asserts a clean failure naming `needles`.
pub fn export_fails(onnx: &str, frt: &Path, flags: impl Arg, needles: &[&str]) -> String {
    fails_with(&[&"export", &fx(onnx), &"-o", &frt, &flags], needles)
}

/// The command line `sample FRT --noise NOISE PARTS... -o OUT`.
pub fn sample_args(frt: &Path, noise: &Path, parts: &[&dyn Arg], out: &Path) -> Vec<String> {
    args(&[&"sample", &frt, &"--noise", &noise, &parts, &"-o", &out])
}

/// [`sample_args`] run; asserts success, returns stdout.
pub fn sample_ok(frt: &Path, noise: &Path, parts: &[&dyn Arg], out: &Path) -> String {
    ok(&[&sample_args(frt, noise, parts, out)])
}

/// [`sample_args`] run; asserts a clean failure naming `needles`, returns the error line.
pub fn sample_fails(
    frt: &Path,
    noise: &Path,
    parts: &[&dyn Arg],
    out: &Path,
    needles: &[&str],
) -> String {
    fails_with(&[&sample_args(frt, noise, parts, out)], needles)
}
