#!/usr/bin/env bash
# Miri over the runtime's unit tests (issue 17; docs/security.md, "Miri"): every test of the
# no_std core (`flowrt`, `--lib --features std`) interpreted with Miri's undefined-behaviour
# checks (out-of-bounds and misaligned accesses, uninitialised reads, Stacked Borrows
# aliasing, invalid values, leaks). The exhaustive sweeps take a sample under `cfg(miri)`.
# A second pass builds with `-C target-feature=+avx2`, so that the AVX2 kernels (dense, conv,
# logistic), which run-time detection never selects under Miri, run too (`ops::tests`).
# libm is built with `force-soft-floats`: its x86_64 `sqrtf` is inline assembly, which Miri
# cannot run (rust-lang/compiler-builtins#1237); the software square root gives the same
# correctly rounded values. Installs the nightly toolchain's miri and rust-src components if
# missing. Not part of
# scripts/test.sh: it takes longer than CI's slack (the last times are in docs/security.md).
#
# Usage: scripts/miri.sh [TEST FILTER]   (the filter applies to both passes)
# Environment: MIRI_PASSES="base avx2" (default; either one alone, or the opt-in "frt"),
# MIRIFLAGS as usual.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

t0=$(date +%s)
step "nightly toolchain with miri and rust-src"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
installed="$(rustup +nightly component list --installed)"
grep -q '^miri' <<<"$installed" || rustup +nightly component add miri
grep -q '^rust-src' <<<"$installed" || rustup +nightly component add rust-src
rustc +nightly -V
cargo +nightly miri --version
cargo +nightly miri setup
echo "setup: $(($(date +%s) - t0)) s"

FEATURES=std,libm/force-soft-floats
summary=()
status=0
for pass in ${MIRI_PASSES:-base avx2}; do
    case "$pass" in
        base)
            target=target-miri
            flags=""
            filter="${1:-}"
            ;;
        avx2)
            target=target-miri-avx2
            flags="-C target-feature=+avx2"
            filter="${1:-ops::tests}"
            ;;
        frt)
            # Opt-in: runtime/tests/frt.rs (the loader's zero-copy casts, AlignedBytes)
            # without its three exhaustive corruption sweeps (one load per byte or bit of the
            # file, or per random edit: not sized for an interpreter).
            target=target-miri
            flags=""
            filter="${1:-} --skip every_truncation_is_rejected --skip every_bit_flip_is_rejected --skip random_corruption_never_panics"
            ;;
        *)
            echo "unknown pass $pass (base, avx2, frt)" >&2
            exit 2
            ;;
    esac
    step "cargo +nightly miri test -p flowrt --lib|--test frt --features $FEATURES ($pass${flags:+, RUSTFLAGS=$flags}${filter:+, filter $filter})"
    log="$target/miri-$pass.log"
    mkdir -p "$target"
    t=$(date +%s)
    set +e
    # shellcheck disable=SC2086
    what=(--lib)
    [ "$pass" != frt ] || what=(--test frt)
    CARGO_TARGET_DIR="$target" RUSTFLAGS="${RUSTFLAGS:-} $flags" \
        cargo +nightly miri test -p flowrt "${what[@]}" --features "$FEATURES" -- $filter 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    result="$(grep -E '^test result:' "$log" | tail -1)"
    summary+=("$pass: ${result:-no test result (exit $rc)} [$(($(date +%s) - t)) s wall]")
    [ "$rc" -eq 0 ] || status=1
done

step "summary ($(($(date +%s) - t0)) s in all, $(nproc) cores, $(uname -m))"
printf '%s\n' "${summary[@]}"
exit "$status"
