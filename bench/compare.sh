#!/usr/bin/env bash
# Compares densert with ONNX Runtime on DenseNet fixtures: installs onnxruntime-node 1.30
# into build/bench/ort (without its download script) if needed, then runs bench/compare.js.
# Usage: bash bench/compare.sh [MODEL.onnx ...]   (default: the DenseNet-121/169/201/161 fixtures)
set -euo pipefail
cd "$(dirname "$0")/.."
ort_dir=build/bench/ort
if [[ ! -d $ort_dir/node_modules/onnxruntime-node ]]; then
  mkdir -p "$ort_dir"
  (cd "$ort_dir" && npm install --silent --no-save --ignore-scripts onnxruntime-node@1.30 > /dev/null)
fi
models=("$@")
if (( ${#models[@]} == 0 )); then
  models=(build/fixtures/densenet121_op13.onnx build/fixtures/densenet169_op13.onnx
          build/fixtures/densenet201_op13.onnx build/fixtures/densenet161_op13.onnx)
fi
joined=$(IFS=,; echo "${models[*]}")
DENSERT_ORT_MODULES=$PWD/$ort_dir/node_modules \
  node bench/compare.js --densert build/cli/densert --models "$joined" \
  --batches "${BATCHES:-1,8}" --threads "${THREADS:-2}" --rounds "${ROUNDS:-5}" --iters "${ITERS:-10}" \
  ${CHART:+--chart "$CHART"}
