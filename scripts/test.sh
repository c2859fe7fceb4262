#!/usr/bin/env bash
# Runs every flowrt test on a fresh machine. Installs what it needs itself (idempotently):
# the bare-metal Rust targets the no_std runtime must build for. The Python references the
# tests compare against are committed under tests/fixtures/ (regenerating them needs torch;
# see tests/fixtures/README.md) so no Python is needed here.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

NO_STD_TARGETS=(thumbv7em-none-eabihf riscv32imac-unknown-none-elf)
step "rustup targets: ${NO_STD_TARGETS[*]}"
installed="$(rustup target list --installed)"
for t in "${NO_STD_TARGETS[@]}"; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (workspace, all targets, -D warnings)"
cargo clippy --workspace --all-targets --release -- -D warnings
cargo clippy -p flowrt --no-default-features -- -D warnings

step "no_std runtime builds (no default features: no alloc, no std)"
for t in "${NO_STD_TARGETS[@]}"; do
    cargo build -p flowrt --no-default-features --release --target "$t"
done

step "cargo test (workspace: runtime unit tests, conformance vs onnxruntime/torchdiffeq references, CLI)"
cargo test --workspace --release

step "README demo and the embedding example"
./scripts/demo.sh >/dev/null
cargo run --release --quiet -p flowrt-examples --bin embed -- out/demo/moons_reflow.frt
echo "demo ok"
