#!/usr/bin/env bash
# Regenerates docs/conformance.md: the ONNX backend node test cases of onnx==1.22.0 (the last
# release that ships them) through `flowrt conformance`. Installs onnx==1.22.0 into .venv-ort/
# if missing (the same venv scripts/test.sh uses for onnxruntime).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv-ort/bin/python -c "import onnx, sys; sys.exit(onnx.__version__ != '1.22.0')" 2>/dev/null; then
    test -x .venv-ort/bin/pip || python3 -m venv .venv-ort
    .venv-ort/bin/pip install --quiet "onnx==1.22.0"
fi
data="$(echo "$PWD"/.venv-ort/lib/python3*/site-packages/onnx/backend/test/data/node)"
cargo run --release -q -p flowrt-cli --bin flowrt -- conformance "$data" --out docs/conformance.md "$@"
