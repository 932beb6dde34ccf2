#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks for densert, then configures and builds it in
# ./build. With --tests it also installs what the test suite needs (Python, PyTorch, ONNX and
# the Fashion-MNIST data, used to generate fixtures). Quick when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config libdnnl-dev ocl-icd-opencl-dev opencl-headers
          libonnx-dev libprotobuf-dev protobuf-compiler libopencv-dev nlohmann-json3-dev
          libcli11-dev zlib1g-dev libgtest-dev libbenchmark-dev dataset-fashion-mnist)
if [[ "${1:-}" == "--tests" ]]; then
  packages+=(python3 python3-numpy python3-torch python3-torchvision python3-onnx python3-skimage
             python3-pil)
fi

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if (( ${#missing[@]} )); then
  echo "densert setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > build.log 2>&1 || { cat build.log; exit 1; }
cmake --build build -j"$(nproc)" >> build.log 2>&1 || { tail -50 build.log; exit 1; }
echo "densert setup: built build/cli/densert"
