#!/usr/bin/env bash
# Sets densert up with its test dependencies, builds it and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
ctest --test-dir build --output-on-failure --timeout 1800
