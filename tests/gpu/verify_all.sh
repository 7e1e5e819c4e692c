#!/bin/bash
# verify_all.sh - the coordinator's closing checks on a GPU machine, in one call: HF interop
# (PEFT adapters both ways, greedy parity with transformers, merged export, CUDA vs CPU), the
# CUDA op and graph tests, and the Python layer's overhead on a training step.
# Stage here (workstation):  tests/gpu/verify_all.sh stage   (needs build-gpu-src: a CUDA build)
# Run there (carry ["build-gpu"]): tests/gpu/verify_all.sh run
set -u
B=build-gpu
if [ "${1:-}" = stage ]; then
  S=${S:-build-gpu-src}
  rm -rf $B && mkdir -p $B/libs && cp -L $S/libloratune.so $S/libloratune.so.0 $B/ 2>/dev/null; cp -L $S/libloratune.so $B/libloratune.so.0
  cp $S/loratune $S/tests/cuda/test_cuda_ops $S/tests/cuda/test_cuda_graph $S/tests/infer/test_generate_cuda $B/ || exit 1
  cp -L "$(ldconfig -p | awk '/libutf8proc.so.2 /{print $NF; exit}')" $B/libs/
  strip $B/loratune $B/test_* $B/libloratune.so*; du -sh $B; exit 0
fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/$B:$PWD/$B/libs:${LD_LIBRARY_PATH:-} LT_REPO_ROOT=$PWD PYTHONUNBUFFERED=1
export LORATUNE_LIBRARY=$PWD/$B/libloratune.so LORATUNE_CLI=$PWD/$B/loratune
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
sum=()
timeout 150 python3 tests/interop/hf_interop.py $LORATUNE_LIBRARY $LORATUNE_CLI /tmp/interop --cuda > $OUT/interop.log 2>&1
sum+=("hf_interop rc=$? $(tail -1 $OUT/interop.log)")
timeout 120 python3 tests/model_io/peft_interop.py > $OUT/peft_interop.log 2>&1; sum+=("peft_interop rc=$? $(tail -1 $OUT/peft_interop.log)")
timeout 120 $B/test_cuda_ops > $OUT/ops.log 2>&1; sum+=("test_cuda_ops rc=$? $(tail -1 $OUT/ops.log)")
timeout 120 $B/test_cuda_graph > $OUT/graph.log 2>&1; sum+=("test_cuda_graph rc=$? $(tail -1 $OUT/graph.log)")
cp assets/qwen2-1.5b/config.json /tmp/q15.json
$B/loratune init-random --config /tmp/q15.json --output /tmp/q15 --seed 1 --tokenizer assets/qwen2-tokenizer > /dev/null 2>&1
timeout 200 python3 bindings/python/bench_overhead.py --model /tmp/q15 --steps 8 --rounds 2 --device cuda --max-seq-length 512 \
  > $OUT/overhead.log 2>&1; sum+=("python overhead rc=$? $(grep -i overhead $OUT/overhead.log | tail -1)")
echo; cat $OUT/interop.log | grep -E "^\|"; echo
for s in "${sum[@]}"; do echo "$s"; done
