#!/usr/bin/env bash
# The main job on a bundled real model, on the CPU: export a trained flow model from ONNX to
# .frt, inspect it, and sample it in 1 step (a 2-rectified flow) and 8 steps (rk4-38).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=out/demo
mkdir -p "$OUT"
cargo build --release --bin flowrt --quiet
FLOWRT=target/release/flowrt

echo "== export: torchcfm MLP, 2-rectified flow on two moons (tests/fixtures/moons_reflow)"
$FLOWRT export tests/fixtures/moons_reflow/model.ts.onnx -o "$OUT/moons_reflow.frt"
echo "== export: torchcfm MLP, I-CFM on two moons (tests/fixtures/moons_icfm)"
$FLOWRT export tests/fixtures/moons_icfm/model.dynamo.onnx -o "$OUT/moons_icfm.frt"

echo "== inspect"
$FLOWRT inspect "$OUT/moons_reflow.frt"

echo "== sample: one Euler step from the 2-rectified flow (1,024 samples, seed 0)"
$FLOWRT sample "$OUT/moons_reflow.frt" --seed 0 --num 1024 --method euler --steps 1 \
    -o "$OUT/moons_reflow_euler_1.npy" --ascii
echo "== sample: 8 rk4-38 steps (torchdiffeq's rk4) from the I-CFM model"
$FLOWRT sample "$OUT/moons_icfm.frt" --seed 0 --num 1024 --method rk4-38 --steps 8 \
    -o "$OUT/moons_icfm_rk4-38_8.npy" --ascii

echo "== image model: a torchcfm UNet trained on 8x8 digits (tests/fixtures/digits_unet)"
$FLOWRT export tests/fixtures/digits_unet/model.dynamo.onnx -o "$OUT/digits_unet.frt"
echo "== sample: 64 digits, labels 0..9 repeated, guidance 2 (null label 10), 16 rk4-38 steps"
$FLOWRT sample "$OUT/digits_unet.frt" --seed 0 --num 64 --label-cycle 10 \
    --guidance 2 --null-label 10 --method rk4-38 --steps 16 \
    -o "$OUT/digits_unet.npy" --png "$OUT/digits_unet.png"

echo "== edge-scale latent model: a 1.6 M-parameter class-conditional DiT + conv decoder to"
echo "   32x32 digits (tests/fixtures/edge_digits), int8 weights and int8 activations"
$FLOWRT export tests/fixtures/edge_digits/flow.ts.onnx \
    --decoder tests/fixtures/edge_digits/decoder.ts.onnx \
    --weights int8 --activations int8 -o "$OUT/edge_digits.frt"
echo "== sample: 40 digits, labels 0..9 repeated, 2 Euler steps (the same file runs on the MCUs)"
$FLOWRT sample "$OUT/edge_digits.frt" --seed 0 --num 40 --label-cycle 10 --method euler --steps 2 \
    -o "$OUT/edge_digits.npy" --png "$OUT/edge_digits.png"

echo
echo "outputs in $OUT/:"
ls -l "$OUT"
