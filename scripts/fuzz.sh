#!/usr/bin/env bash
# Fuzzes flowrt with the cargo-fuzz targets in fuzz/ (libFuzzer, nightly Rust), each for
# FLOWRT_FUZZ_SECONDS seconds (default 60), starting from the seeds committed under
# fuzz/corpus/<target>/. Exits non-zero when any target finds a crash, a hang or an OOM
# (the input is left under fuzz/artifacts/<target>/).
#
#   scripts/fuzz.sh                       # every target, 60 s each
#   FLOWRT_FUZZ_SECONDS=600 scripts/fuzz.sh frt_load_sample options
#
# Targets: frt_load_sample (Model::from_bytes + sampling), options (method / grid / time
# strings), npy_read (the exporter's .npy reader) and onnx_import (structure-aware ONNX
# mutations through the exporter; builds tract, slow the first time).
# One fuzzer process per target, one after the other. New inputs go to
# fuzz/corpus-work/<target>/ (git-ignored); the committed seeds are only read.
# Installs cargo-fuzz (0.13.2) and the nightly toolchain if missing. Not part of
# scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${FLOWRT_FUZZ_SECONDS:-60}"
if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=(frt_load_sample options npy_read onnx_import)
fi

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi

cd fuzz
# cargo fuzz sets RUST_BACKTRACE=1; without this, anyhow (the exporter's errors) captures a
# backtrace for every rejected input, which makes npy_read about 3x slower.
export RUST_LIB_BACKTRACE=0
failed=()
for t in "${TARGETS[@]}"; do
    # The exporter targets build tract: optimized but without a sanitizer (-s none; tract is
    # safe Rust apart from its SIMD kernels), in their own target directory so the runtime
    # targets' ASan build is not redone; an optimized ASan build of tract takes ~25 min on 2
    # cores, this one about 12, and runs 10-100x faster than the unoptimized build.
    features=()
    extra=()
    timeout=10
    exporter_build=(--features exporter -O -s none --target-dir target-exporter --codegen-units 16)
    case "$t" in
        npy_read) features=("${exporter_build[@]}") ;;
        # 1 base byte + 16 instructions of 4 bytes; libFuzzer would otherwise start from the
        # seeds' few bytes and grow slowly.
        onnx_import) features=("${exporter_build[@]}"); timeout=60; extra=(-max_len=65 -len_control=0) ;;
        frt_load_sample | options) ;;
        *) echo "unknown target $t" >&2; exit 2 ;;
    esac
    printf '\n==> %s: %s s\n' "$t" "$SECS"
    mkdir -p "corpus-work/$t" "artifacts/$t"
    # The fuzzer's output goes to fuzz/fuzz-<target>.log (one file per target, so runs of
    # different targets may overlap).
    log="fuzz-$t.log"
    if cargo +nightly fuzz run "${features[@]}" "$t" "corpus-work/$t" "corpus/$t" -- \
        -max_total_time="$SECS" -timeout="$timeout" -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -print_final_stats=1 "${extra[@]}" >"$log" 2>&1; then
        status=0
    else
        status=$?
    fi
    grep -E '^(Done|stat::|#[0-9]+\s+DONE)' "$log" || tail -n 40 "$log"
    if [ "$status" -ne 0 ] || grep -qE '^(==[0-9]+==ERROR|SUMMARY: libFuzzer|.*panicked at)' "$log"; then
        tail -n 40 "$log"
        echo "FAILED: $t (exit $status; artifacts in fuzz/artifacts/$t/, log fuzz/$log)" >&2
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "no crashes"
