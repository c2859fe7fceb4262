//! Every Rust snippet in the README and the guides under `docs/` is code the tests run: each
//! ```` ```rust ```` block must be a verbatim copy (line by line, indentation aside) of
//! consecutive lines of a program that `scripts/test.sh` builds and runs — the examples in
//! `examples/src/`, the firmware under `targets/` or the web page's crate in `web/`. A snippet
//! edited without its program, or a program changed under its snippet, fails here.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The ```` ```rust ```` blocks of a Markdown file: (first line number, lines).
fn rust_blocks(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, Vec<String>)> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```rust") => current = Some((i + 2, Vec::new())),
            Some(_) if fence.starts_with("```") => blocks.extend(current.take()),
            Some((_, lines)) => lines.push(line.trim().to_string()),
            None => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```rust block");
    blocks
}

/// `.rs` files under `dir`, skipping build output.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if p.is_dir() {
            if name != "target" && name != "pkg" {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Whether `snippet` (trimmed lines) occurs as consecutive trimmed lines of `program`.
fn occurs_in(snippet: &[String], program: &str) -> bool {
    let lines: Vec<&str> = program.lines().map(str::trim).collect();
    !snippet.is_empty()
        && lines
            .windows(snippet.len())
            .any(|w| w.iter().zip(snippet).all(|(a, b)| *a == b))
}

#[test]
fn every_rust_snippet_in_the_docs_is_code_the_tests_run() {
    let root = repo();
    let mut programs = Vec::new();
    for dir in ["examples", "targets", "web"] {
        rust_files(&root.join(dir), &mut programs);
    }
    let sources: Vec<(PathBuf, String)> = programs
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read a program");
            (p, text)
        })
        .collect();
    let mut docs = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "md") {
            docs.push(e.path());
        }
    }
    docs.sort();
    let mut checked = 0;
    let mut stray = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).expect("read a doc");
        for (line, block) in rust_blocks(&text) {
            checked += 1;
            match sources.iter().find(|(_, src)| occurs_in(&block, src)) {
                Some((p, _)) => eprintln!(
                    "{}:{line} is in {}",
                    doc.strip_prefix(&root).unwrap_or(doc).display(),
                    p.strip_prefix(&root).unwrap_or(p).display()
                ),
                None => stray.push(format!(
                    "{}:{line}",
                    doc.strip_prefix(&root).unwrap_or(doc).display()
                )),
            }
        }
    }
    assert!(
        stray.is_empty(),
        "these ```rust blocks are not verbatim code of a program the tests run \
         (examples/src, targets/, web/): {stray:?}"
    );
    // The README's embedding snippet and the host API guide at least.
    assert!(checked >= 3, "only {checked} Rust snippets found");
}

#[test]
fn the_checker_tells_a_copy_from_an_edit() {
    let program = "fn main() {\n    let a = 1;\n    let b = a + 1;\n}\n";
    let block = |s: &str| rust_blocks(s).remove(0).1;
    assert!(occurs_in(
        &block("```rust\nlet a = 1;\nlet b = a + 1;\n```\n"),
        program
    ));
    assert!(!occurs_in(
        &block("```rust\nlet a = 1;\nlet b = a + 2;\n```\n"),
        program
    ));
    assert!(!occurs_in(
        &block("```rust\nlet b = a + 1;\nlet a = 1;\n```\n"),
        program
    ));
}
