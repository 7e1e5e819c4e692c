#!/bin/bash
# stage_gpu_dist.sh - on the workstation: builds what run_gpu_dist.sh runs on the GPU machine
# (the CUDA build with NCCL of `loratune` and test_dist_nccl, statically linked to libloratune)
# and stages it, stripped and xz-compressed, in DIR (default build-dpg) for the run tool's carry.
# Usage: bash tests/dist/stage_gpu_dist.sh [DIR]   (BUILD=build dir, default build-dp-cuda)
set -eu
DIR=${1:-build-dpg}
BUILD=${BUILD:-build-dp-cuda}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 > /dev/null
grep -q "LT_NCCL_LIB:FILEPATH=.*nccl" "$BUILD/CMakeCache.txt" || { echo "no NCCL found by CMake" >&2; exit 1; }
cmake --build "$BUILD" -j2 --target loratune_cli test_dist_nccl
rm -rf "$DIR"; mkdir -p "$DIR/libs"
cp "$BUILD/loratune" "$BUILD/tests/dist/test_dist_nccl" "$DIR/"
cp "$(ldconfig -p | awk '/libutf8proc.so.2 /{print $NF; exit}')" "$DIR/libs/"
strip "$DIR/loratune" "$DIR/test_dist_nccl"
xz -3 -f "$DIR/loratune" "$DIR/test_dist_nccl" "$DIR/libs/libutf8proc.so.2"
du -sh "$DIR"
