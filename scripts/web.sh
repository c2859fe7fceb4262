#!/usr/bin/env bash
# flowrt in the browser (docs/browser.md): builds the wasm32 module (web/), exports the
# bundled models with the release `flowrt` CLI and puts the static page in out/web/serve/.
#
#   scripts/web.sh            build, then print how to serve the page
#   scripts/web.sh --serve    build, then serve it on http://localhost:8000/ (Ctrl-C stops)
#
# The module is optimized with wasm-opt when Debian's `binaryen` is installed (optional:
# the page is the same without it, only larger).
set -euo pipefail
cd "$(dirname "$0")/.."

SERVE=out/web/serve
mkdir -p "$SERVE"

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
# simd128 (every current browser has it): LLVM vectorizes the kernels' loops with exact IEEE
# f32x4 operations (no fused multiply-add), so the bytes stay those of the native CLI — the
# browser test checks it — and the UNet samples up to ~1.5x faster, the MLPs ~3x.
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128" \
    cargo build --profile wasm --target wasm32-unknown-unknown -p flowrt-web --quiet
WASM=target/wasm32-unknown-unknown/wasm/flowrt_web.wasm
if command -v wasm-opt >/dev/null; then
    # -O3 keeps the speed; the features (simd128, ...) are read from the module's
    # target_features section. No fast-math: IEEE results, the browser test checks the bytes.
    wasm-opt -O3 "$WASM" -o "$SERVE/flowrt_web.wasm"
    echo "flowrt_web.wasm: $(stat -c %s "$WASM") bytes, $(stat -c %s "$SERVE/flowrt_web.wasm") after wasm-opt -O3"
else
    cp "$WASM" "$SERVE/flowrt_web.wasm"
    echo "flowrt_web.wasm: $(stat -c %s "$WASM") bytes (no wasm-opt: apt-get install binaryen to shrink it)"
fi

cargo build --release --bin flowrt --quiet
FLOWRT=target/release/flowrt
# The models the page offers: two 2-D flows on two moons and the 8x8 class-conditional
# digits UNet (labels 0..9, null label 10 for guidance), exported as scripts/demo.sh does.
$FLOWRT export tests/fixtures/moons_reflow/model.ts.onnx -o "$SERVE/moons_reflow.frt" >/dev/null
$FLOWRT export tests/fixtures/moons_icfm/model.dynamo.onnx -o "$SERVE/moons_icfm.frt" >/dev/null
$FLOWRT export tests/fixtures/digits_unet/model.dynamo.onnx -o "$SERVE/digits_unet.frt" >/dev/null
cat > "$SERVE/models.json" <<'JSON'
[
  {"file": "moons_reflow.frt", "title": "moons_reflow (2-rectified flow, 2-D)"},
  {"file": "moons_icfm.frt", "title": "moons_icfm (I-CFM, 2-D)"},
  {"file": "digits_unet.frt", "title": "digits_unet (8x8 digits, class-conditional UNet)"}
]
JSON
cp web/static/index.html web/static/app.js web/static/worker.js web/static/style.css "$SERVE/"
ls -l "$SERVE"

if [ "${1:-}" = "--serve" ]; then
    echo "serving $SERVE on http://localhost:8000/ (Ctrl-C stops)"
    exec python3 -m http.server 8000 --bind 127.0.0.1 --directory "$SERVE"
fi
echo
echo "serve it with:  python3 -m http.server 8000 --bind 127.0.0.1 --directory $SERVE"
echo "then open:      http://localhost:8000/"
echo "or sample on load: http://localhost:8000/?model=digits_unet.frt&method=rk4&steps=8&num=40&label=cycle:10&guidance=2&auto=1"
