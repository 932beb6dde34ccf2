#!/usr/bin/env bash
# Installs densert into a temporary prefix, builds the embedding examples as separate
# projects (once with find_package, once with pkg-config), runs them on a sample image and
# checks the label they print.
set -euo pipefail
build_dir=$1
source_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
model=$source_dir/models/fashion_densenet.onnx
image=$source_dir/examples/images/ankle_boot.png
expected="ankle boot"

cmake --install "$build_dir" --prefix "$prefix" > "$work/install.log"
test -f "$prefix/include/densert/densert.h"
test -f "$prefix/lib/cmake/densert/densertConfig.cmake"
test -f "$prefix/lib/pkgconfig/densert.pc"
if find "$prefix/include" -name '*.h' | grep -v '/densert/densert.h$' | grep -q .; then
  echo "internal headers were installed"; exit 1
fi

check() {
  local label=$1 output
  shift
  output=$(LD_LIBRARY_PATH="$prefix/lib" "$@" "$model" "$image")
  echo "$label: $output"
  [[ "$output" == "$expected "* ]] || { echo "$label printed \"$output\", expected \"$expected ...\""; exit 1; }
}

cmake -S "$source_dir/examples/embed" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" > "$work/cmake.log"
cmake --build "$work/cmake-build" > "$work/build.log"
check "find_package C++" "$work/cmake-build/classify_cpp"
check "find_package C" "$work/cmake-build/classify_c"

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
c++ -std=c++20 "$source_dir/examples/embed/classify.cpp" $(pkg-config --cflags --libs densert) -o "$work/pkg_cpp"
cc -std=c99 "$source_dir/examples/embed/classify.c" $(pkg-config --cflags --libs densert) -lm -o "$work/pkg_c"
check "pkg-config C++" "$work/pkg_cpp"
check "pkg-config C" "$work/pkg_c"
