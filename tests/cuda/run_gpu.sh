#!/bin/bash
# run_gpu.sh - what one call on the GPU machine runs for the CUDA backend: the op tests and the
# graph test (binaries built on the workstation with nvcc and carried in build-cuda/), the
# benchmark and the transformers+PEFT peer baseline in the same call, then a short table.
# Usage: tests/cuda/run_gpu.sh [ops] [graph] [bench] [peer]
# B=DIR picks the staged build (default build-cuda): DIR/loratune, DIR/tests/cuda/test_cuda_ops,
# DIR/tests/cuda/test_cuda_graph, DIR/libs/libutf8proc.so.2 (the GPU image lacks it), stripped,
# carried with the run tool's carry ["DIR"]. BENCH_ARGS adds flags to `loratune bench`.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=${B:-build-cuda}
export LD_LIBRARY_PATH=$PWD/$B/libs:${LD_LIBRARY_PATH:-}
export LT_REPO_ROOT=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for what in "$@"; do
  case $what in
    ops)
      $B/tests/cuda/test_cuda_ops ${SEED:-} > $OUT/ops.log 2>&1; echo "test_cuda_ops rc=$?"; tail -3 $OUT/ops.log ;;
    graph)
      $B/tests/cuda/test_cuda_graph 2>&1 | tee $OUT/graph.log; echo "test_cuda_graph rc=${PIPESTATUS[0]}" ;;
    bench)
      $B/loratune bench --json $OUT/bench.json ${BENCH_ARGS:-} > $OUT/bench.log 2>&1; echo "bench rc=$?"; tail -12 $OUT/bench.log ;;
    peer)
      PYTHONUNBUFFERED=1 python3 bench/hf_peft_lora_baseline.py $OUT/peer.json > $OUT/peer.log 2>&1; echo "peer rc=$?"; grep -v Warn $OUT/peer.log | tail -5 ;;
  esac
done
if [ -f $OUT/bench.json ] && [ -f $OUT/peer.json ]; then
python3 - "$OUT" <<'PY'
import json, sys
o = sys.argv[1]
b = {r["shape"]: r for r in json.load(open(o + "/bench.json"))}
p = {"%dx%d" % (r["bs"], r["seq"]): r for r in json.load(open(o + "/peer.json")) if r["ckpt"]}
print("%-10s %12s %12s %7s %7s %9s %9s" % ("shape", "loratune", "hf+peft", "speedup", "MFU", "peak GiB", "peer GiB"))
for k, r in b.items():
    q = p.get(k)
    print("%-10s %12.0f %12s %7s %6.1f%% %9.2f %9s" % (k, r["tok_per_s"], "%.0f" % q["tok_per_s"] if q else "-",
          "%.2fx" % (r["tok_per_s"] / q["tok_per_s"]) if q else "-", 100 * r["mfu"], r["peak_gib"],
          "%.2f" % q["peak_gib"] if q else "-"))
PY
fi
