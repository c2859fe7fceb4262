#!/usr/bin/env bash
# The image-model rows of docs/benchmarks.md: the digits UNet and DiT (class-conditional,
# labels i % 10), batch 1 and 64, flowrt's CPU executor vs ONNX Runtime in one process with one
# thread each (`flowrt bench --against ort`): the 8-step rk4-38 loop and one velocity
# evaluation. Prints Markdown rows on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin flowrt
F=target/release/flowrt
mkdir -p out/bench
median() { awk -v b="$1" '$1 == b && $2 ~ /^[0-9]/ { print $4 " " $5 }'; }
echo "| fixture | batch | loop: flowrt | loop: ORT | loop ratio | eval: flowrt | eval: ORT | eval ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for m in digits_unet digits_dit; do
    $F export "tests/fixtures/$m/model.dynamo.onnx" -o "out/bench/$m.frt" --embed-onnx >/dev/null
    for b in 1 64; do
        case $b in 1) r=20; w=3;; 64) r=5; w=1;; esac
        loop=$($F bench "out/bench/$m.frt" --against ort --batch $b --method rk4-38 --steps 8 --runs $r --warmup $w)
        eval=$($F bench "out/bench/$m.frt" --against ort --batch $b --eval --runs $((r * 4)) --warmup $w)
        echo "| $m | $b | $(median flowrt <<<"$loop") | $(median ort <<<"$loop") | $(tail -n 1 <<<"$loop" | awk '{print $3}') | $(median flowrt <<<"$eval") | $(median ort <<<"$eval") | $(tail -n 1 <<<"$eval" | awk '{print $3}') |"
    done
done
