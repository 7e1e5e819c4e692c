#!/usr/bin/env bash
# Builds loratune (with the CUDA backend where nvcc is found) and runs every test suite:
# C tests, the Python/Go/Rust bindings, the packaging check. GPU tests skip without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
BUILD=${LT_BUILD:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release ${LT_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD" -j"$JOBS"
ctest --test-dir "$BUILD" --output-on-failure -j"$JOBS" --timeout 900
