#!/usr/bin/env bash
# Runs every flowrt test on a fresh machine. Installs what it needs itself (idempotently):
# the bare-metal Rust targets the no_std runtime must build for, the onnxruntime wheel (in
# .venv-ort/, for the ORT backend), lavapipe (software Vulkan, for the wgpu GPU backend's
# tests), QEMU (for the firmware bit-identity tests) and defmt-print.
# The Python references the tests compare against are committed under tests/fixtures/
# (regenerating them needs torch; see tests/fixtures/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

NO_STD_TARGETS=(thumbv7em-none-eabihf thumbv6m-none-eabi riscv32imac-unknown-none-elf wasm32-unknown-unknown)
step "rustup targets: ${NO_STD_TARGETS[*]}"
installed="$(rustup target list --installed)"
for t in "${NO_STD_TARGETS[@]}"; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

# ---- ONNX Runtime for flowrt-ort (issue 6) ---------------------------------------------------
# The ORT backend loads libonnxruntime at run time (ort's load-dynamic). It comes from the
# onnxruntime PyPI wheel, installed into a project-local venv only if missing; the ORT tests
# fail (not skip) without it. flowrt-ort also finds .venv-ort/ by itself, so a plain
# `cargo test` works once this has run.
ORT_VERSION=1.31.1
step "ONNX Runtime $ORT_VERSION in .venv-ort/"
if ! .venv-ort/bin/python -c "import onnxruntime, sys; sys.exit(onnxruntime.__version__ != '$ORT_VERSION')" 2>/dev/null; then
    python3 -m venv .venv-ort
    .venv-ort/bin/pip install --quiet "onnxruntime==$ORT_VERSION"
fi
# onnx 1.22.0: the last release shipping the ONNX backend node test cases, which
# tests/tests/onnx_conformance.rs runs (docs/conformance.md).
if ! .venv-ort/bin/python -c "import onnx, sys; sys.exit(onnx.__version__ != '1.22.0')" 2>/dev/null; then
    .venv-ort/bin/pip install --quiet "onnx==1.22.0"
fi
ORT_DYLIB_PATH="$(echo "$PWD"/.venv-ort/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION)"
test -f "$ORT_DYLIB_PATH" || { echo "missing $ORT_DYLIB_PATH" >&2; exit 1; }
export ORT_DYLIB_PATH
echo "ORT_DYLIB_PATH=$ORT_DYLIB_PATH"
# ---- end ONNX Runtime ------------------------------------------------------------------------

# ---- lavapipe for flowrt-cubecl's wgpu backend (issue 7) -------------------------------------
# No GPU on CI machines: the wgpu backend runs its conformance tests (tests/tests/gpu.rs,
# exporter/tests/cli_gpu.rs) on Mesa's software Vulkan driver. The CUDA suite skips with its
# reason when there is no NVIDIA device.
step "lavapipe (Mesa software Vulkan) for the wgpu backend tests"
if [ ! -f /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        mesa-vulkan-drivers libvulkan1 >/dev/null
fi
ls /usr/share/vulkan/icd.d/lvp_icd.*.json
# Mesa's Vulkan WSI warns on every start without a runtime dir; give it a private one.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "$XDG_RUNTIME_DIR" ]; then
    XDG_RUNTIME_DIR="$(mktemp -d)"
    chmod 700 "$XDG_RUNTIME_DIR"
    export XDG_RUNTIME_DIR
fi
# ---- end lavapipe ----------------------------------------------------------------------------

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (workspace, all targets, -D warnings)"
cargo clippy --workspace --all-targets --release -- -D warnings
cargo clippy -p flowrt --no-default-features -- -D warnings

# ---- BEGIN publishable crates block (issue 18) ----------------------------------------------
# Every library crate documents without a warning (reusing clippy's dependency checks above)
# and packages as `cargo publish` would send it: manifest metadata, file list and the
# dependency versions of the workspace crates (--workspace packages them together). The no_std
# core is also built from its package (seconds); building the others from theirs would
# rebuild tract, cubecl and wgpu in the dev profile (about 10 minutes here), which the
# release build below already compiles from the same sources.
step "cargo doc -D warnings and cargo publish --dry-run (every library crate)"
RUSTDOCFLAGS="-D warnings" cargo doc --release --no-deps --quiet \
    -p flowrt -p flowrt-ort -p flowrt-cubecl -p flowrt-host -p flowrt-export -p flowrt-cli
cargo publish --dry-run --allow-dirty --quiet -p flowrt
cargo publish --dry-run --allow-dirty --quiet --no-verify --workspace
# ---- END publishable crates block ------------------------------------------------------------

step "runtime modules import one way (scripts/check-layers.py)"
python3 scripts/check-layers.py

step "the exporter library has no GPU, ONNX Runtime, CLI or PNG dependency"
if cargo tree -p flowrt-export -e normal --prefix none | grep -E '^(ort|cubecl|clap|png|flowrt-ort|flowrt-cubecl|flowrt-host) '; then
    echo "flowrt-export must not depend on the crates above" >&2
    exit 1
fi
echo "ok: cargo tree -p flowrt-export has none of ort, cubecl, clap, png"

step "no_std runtime builds (no default features: no alloc, no std)"
for t in "${NO_STD_TARGETS[@]}"; do
    cargo build -p flowrt --no-default-features --release --target "$t"
done

# ---- BEGIN QEMU / firmware block (issue 5; owned by targets/) --------------------------------
# Installs QEMU (idempotent; private apt sources, system apt config untouched), lints the
# firmware crates under targets/ (own workspaces, not root members), runs the one-step
# example and the on-target kernel check. The bit-identity tests host vs QEMU are tests/tests/qemu.rs (run by cargo test).
step "QEMU for the firmware tests (targets/install-qemu.sh; skipped when present)"
targets/install-qemu.sh
qemu-system-arm --version | head -n 1
step "defmt-print (decodes the Cortex-M firmware's defmt log in tests/tests/qemu.rs)"
command -v defmt-print >/dev/null || cargo install --locked defmt-print@1.2.0
step "firmware crates under targets/: fmt, clippy -D warnings, one-step example in QEMU"
fw_dir=out/qemu-ci
mkdir -p "$fw_dir"
cargo run --release --quiet -p flowrt-cli --bin flowrt -- \
    export tests/fixtures/moons_reflow/model.ts.onnx -o "$fw_dir/moons_reflow.frt" >/dev/null
export FLOWRT_FRT="$PWD/$fw_dir/moons_reflow.frt" FLOWRT_NOISE="$PWD/tests/fixtures/moons_reflow/noise.npy"
for fw in cortex-m4 riscv32; do
    (cd "targets/$fw" && cargo fmt -- --check && cargo clippy --release --all-targets -- -D warnings)
done
(cd targets/cortex-m4 && timeout 120 cargo run --release --quiet --example one_step) | tail -c 200
# The M4F's assembly kernels against naive loops, bit for bit (exits non-zero on a mismatch;
# `int8`: the full-integer Dense too).
(cd targets/cortex-m4 && timeout 300 cargo run --release --quiet --example kernels --features int8)
unset FLOWRT_FRT FLOWRT_NOISE
# ---- END QEMU / firmware block --------------------------------------------------------------

step "cargo test (workspace: runtime unit tests, conformance vs onnxruntime/torchdiffeq references, CLI)"
cargo test --workspace --release

# ---- BEGIN Python export helper block (issue 18; python/) ------------------------------------
# python/flowrt_export without torch: signatures, roles, command lines and errors (plain
# python3), then its flowrt side on the committed fixtures (numpy from .venv-ort, the release
# flowrt that cargo test built), and `pip install ./python` into a throwaway venv. The
# torch-backed test (python/tests/test_with_torch.py: torch is ~5 GB of wheels) is run by hand,
# see docs/python.md.
step "Python export helper (python/): unit tests without torch, pip install ./python"
PYTHONPATH=python python3 -m unittest discover -s python/tests -p 'test_logic.py'
FLOWRT="$PWD/target/release/flowrt" PYTHONPATH=python \
    .venv-ort/bin/python -m unittest discover -s python/tests -p 'test_check_frt.py'
py_venv="$(mktemp -d)"
python3 -m venv "$py_venv"
"$py_venv/bin/pip" install --quiet --no-deps ./python
(cd "$py_venv" && bin/python -c 'import flowrt_export as f; print("pip install ./python ok:", f.__file__)')
rm -rf "$py_venv"
# ---- END Python export helper block ---------------------------------------------------------

step "README demo and the embedding example"
./scripts/demo.sh >/dev/null
cargo run --release --quiet -p flowrt-examples --bin embed -- out/demo/moons_reflow.frt
# The host API example: a guided class-conditional model as an SDE on the CPU, as an ODE on
# wgpu (lavapipe) and with the automatic backend choice.
cargo run --release --quiet -p flowrt-examples --bin host -- out/demo/digits_unet.frt cpu const:0.3
cargo run --release --quiet -p flowrt-examples --bin host -- out/demo/digits_unet.frt wgpu
cargo run --release --quiet -p flowrt-examples --bin host -- out/demo/digits_unet.frt auto
echo "demo ok"

# ---- BEGIN browser block (issue 18; web/, docs/browser.md) ------------------------------------
# flowrt in a real browser: Debian's Chromium (installed here if missing) opens the page that
# scripts/web.sh builds (wasm32 module + the bundled models exported by the release CLI) from
# a localhost static server; web/browser_test.py compares the samples and trajectories of two
# 2-D models and the guided digits UNet with `flowrt sample --backend cpu`, byte for byte
# (plus a negative control), and saves out/web/screenshot.png. The web crate's fmt, clippy
# and host tests run with the workspace above. Measured cost (2 loaded cores): ~35 s apt on a
# fresh machine, ~40 s wasm build, ~10 s test.
step "flowrt in the browser: headless Chromium vs the native CLI, byte for byte"
if ! command -v chromium >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
chromium --version
scripts/web.sh >/dev/null
timeout 300 python3 web/browser_test.py
# ---- END browser block ----------------------------------------------------------------------

step "flowrt bench smoke run (tiny size; a benchmark, not a timed test)"
cargo run --release --quiet -p flowrt-cli --bin flowrt -- export \
    tests/fixtures/moons_icfm/model.dynamo.onnx -o out/bench_smoke.frt --embed-onnx >/dev/null
cargo run --release --quiet -p flowrt-cli --bin flowrt -- bench out/bench_smoke.frt \
    --against ort --batch 4 --steps 2 --runs 3 --warmup 1 | tail -n 1 | grep -E '^ratio flowrt/ort: [0-9.]+$'

step "fuzz smoke run: the runtime's targets (Model::from_bytes + sampling, option strings), 60 s each"
# scripts/fuzz.sh installs cargo-fuzz if missing and fails on any crash, hang or OOM. The
# exporter's targets (npy_read, onnx_import) build tract unoptimized for ~25 min on 2 cores:
# run them by hand (scripts/fuzz.sh npy_read onnx_import; docs/security.md).
FLOWRT_FUZZ_SECONDS="${FLOWRT_FUZZ_SECONDS:-60}" scripts/fuzz.sh frt_load_sample options
