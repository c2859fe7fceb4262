#!/usr/bin/env bash
# The GPU rows of docs/benchmarks.md (issue 7): flowrt's cubecl kernels on CUDA (whole ODE
# loop on the device) against PyTorch eager on the same GPU (scripts/bench_torch.py: the
# fixture's own module and weights, the same RK loop) and ONNX Runtime on the CPU, plus the
# CUDA conformance suite (tests/tests/gpu.rs).
#
# The GPU machine has no Rust toolchain and no network, so this runs in two halves:
#
#   scripts/bench-gpu.sh prepare   # here: release binary (stripped), the CUDA test binary,
#                                  # the .frt files and libonnxruntime into out/gpu/, packed
#                                  # as out/gpu-bundle/gpu.tar.xz (~28 MB: the carry limit is 64)
#   scripts/bench-gpu.sh run       # there (carry out/gpu-bundle): unpacks, runs the CUDA
#                                  # conformance suite, then the benchmark; writes
#                                  # $OUT/gpu-bench.md (or out/gpu/gpu-bench.md)
#
# `BACKEND=wgpu TORCH_DEVICE=cpu BATCHES_2D=1,256 BATCHES_IMG=4 scripts/bench-gpu.sh run` is
# a dry run of the second half on a machine without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
G=out/gpu
FIXTURES_2D=(moons_icfm checker_fm)
FIXTURES_IMG=(digits_unet digits_dit)

prepare() {
    mkdir -p "$G"
    cargo build --release --quiet --bin flowrt
    cp target/release/flowrt "$G/flowrt"
    strip "$G/flowrt"
    # The CUDA conformance test binary (cargo prints its path).
    local test_bin
    test_bin=$(cargo test --release --no-run -p flowrt-tests --test gpu --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu":
        print(m["executable"])' | tail -n 1)
    cp "$test_bin" "$G/gpu-test"
    strip "$G/gpu-test"
    for m in "${FIXTURES_2D[@]}" "${FIXTURES_IMG[@]}"; do
        target/release/flowrt export "tests/fixtures/$m/model.ts.onnx" -o "$G/$m.frt" --embed-onnx >/dev/null
    done
    cp .venv-ort/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1 "$G/"
    mkdir -p out/gpu-bundle
    tar -C out -cf - gpu | xz -T0 -6 >out/gpu-bundle/gpu.tar.xz
    du -sh "$G" out/gpu-bundle/gpu.tar.xz
}

# NVRTC from the pip `nvidia` packages when the system has none on the loader path.
find_nvrtc() {
    ldconfig -p 2>/dev/null | grep -q libnvrtc && return 0
    local d
    d=$(python3 - <<'PY' 2>/dev/null || true
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for p in glob.glob(os.path.join(r, "nvidia", "**", "libnvrtc*.so*"), recursive=True):
        print(os.path.dirname(p)); sys.exit()
PY
)
    if [ -n "$d" ]; then
        export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        echo "NVRTC from $d"
    fi
}

run() {
    local backend="${BACKEND:-cuda}" tdev="${TORCH_DEVICE:-cuda}"
    local b2d="${BATCHES_2D:-1,4096,65536}" bimg="${BATCHES_IMG:-64,1024}"
    local out="${OUT:-$G}"
    mkdir -p "$out"
    if [ ! -x "$G/flowrt" ] && [ -f out/gpu-bundle/gpu.tar.xz ]; then
        xz -dc out/gpu-bundle/gpu.tar.xz | tar -C out -xf -
    fi
    local F="$G/flowrt"
    [ -x "$F" ] || F=target/release/flowrt
    export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/$G/libonnxruntime.so.1.31.1}"
    [ "$backend" = cuda ] && find_nvrtc
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || true
    if [ "$backend" = cuda ] && [ -x "$G/gpu-test" ]; then
        echo "==> CUDA conformance (tests/tests/gpu.rs)"
        FLOWRT_FIXTURES_DIR="$PWD/tests/fixtures" timeout 300 "$G/gpu-test" cuda --nocapture \
            --test-threads 1 2>&1 | tee "$out/gpu-conformance.txt" | tail -n 30
    fi
    local md="$out/gpu-bench.md"
    {
        echo "| fixture | batch | flowrt $backend | PyTorch eager ($tdev) | ONNX Runtime CPU (1 thread) | flowrt / torch | flowrt / ORT | launches / step |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    } >"$md"
    bench_one() { # fixture batch runs
        local m=$1 b=$2 r=$3
        local text torch
        text=$("$F" bench "$G/$m.frt" --backend "$backend" --batch "$b" --method rk4-38 --steps 8 \
            --runs "$r" --warmup 2 2>/dev/null)
        echo "$text" >>"$out/flowrt-bench.txt"
        torch=$(python3 scripts/bench_torch.py --fixture "$m" --device "$tdev" --batches "$b" \
            --runs "$r" --warmup 2 2>&1 | tail -n 1)
        echo "$torch" >>"$out/torch-bench.jsonl"
        python3 - "$m" "$b" "$text" "$torch" >>"$md" <<'PY'
import json, re, sys
m, b, text, torch = sys.argv[1:]
def secs(s):
    v, u = s.split()
    return float(v) * {"s": 1, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}[u]
def med(name):
    for l in text.splitlines():
        if re.match(name + r"\s+[0-9]", l):
            f = re.findall(r"[0-9.]+ (?:s|ms|µs|ns)", l)
            return secs(f[1])
    return float("nan")
fl, ort = med("flowrt"), med("ort")
lp = re.search(r"\(([0-9.]+) per step\)", text)
try:
    t = json.loads(torch)["median_s"]
except Exception:
    t = float("nan")
ms = lambda s: f"{s * 1e3:.3f} ms"
print(f"| {m} | {b} | {ms(fl)} | {ms(t)} | {ms(ort)} | {fl / t:.3f} | {fl / ort:.3f} | {lp.group(1) if lp else '?'} |")
PY
    }
    for m in "${FIXTURES_2D[@]}"; do
        for b in ${b2d//,/ }; do bench_one "$m" "$b" 10; done
    done
    for m in "${FIXTURES_IMG[@]}"; do
        for b in ${bimg//,/ }; do bench_one "$m" "$b" 5; done
    done
    echo "rk4-38 x 8 steps, uniform grid, fp32 (TF32 off in torch); medians of timed runs" >>"$md"
    cat "$md"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
