#!/bin/bash
# session_check.sh - the closing GPU call of a CUDA session in one command (about 4 min on an H200):
# the op and graph tests, the first five notebook steps with the fused LoRA paths and without them
# (a cheap guard: a kernel that passes its op test can still train differently; cuda/NOTES.md v9),
# the 1.5B step-0 parity and 100-step loss curve against transformers + PEFT, then the benchmark with
# the peer in the same call.
# Stage on the workstation (no jansson dev package on the GPU image; xz keeps the carry under 64 MiB):
#   build-gpu: libloratune.so.0 + loratune (+ libs/libutf8proc.so.2), from a CUDA build of the library
#   build-s1:  loratune + tests/cuda/test_cuda_{ops,graph} (+ libs/), from a CUDA build of the tests
#   each binary compressed with `xz -3` (this script unpacks *.xz)
# Run there with carry ["build-gpu", "build-s1"]:  bash tests/gpu/session_check.sh
# Files back in $OUT: session_check.tgz (loss-curve figures and JSON, bench.json/log, peer.json/log, peer2.json).
set -u
R=${OUT:-/tmp/out}; mkdir -p "$R"; B=build-gpu
for f in $B/*.xz build-s1/*.xz build-s1/tests/cuda/*.xz; do [ -f "$f" ] && xz -d -f "$f"; done
[ -f $B/libloratune.so ] || cp $B/libloratune.so.0 $B/libloratune.so
LD_LIBRARY_PATH=$PWD/build-s1/libs build-s1/tests/cuda/test_cuda_ops > /tmp/ops.log 2>&1; echo "test_cuda_ops rc=$? $(tail -1 /tmp/ops.log)"
LD_LIBRARY_PATH=$PWD/build-s1/libs build-s1/tests/cuda/test_cuda_graph > /tmp/graph.log 2>&1; echo "test_cuda_graph rc=$? $(tail -1 /tmp/graph.log)"
export LD_LIBRARY_PATH=$PWD/$B:$PWD/$B/libs LT_REPO_ROOT=$PWD
cp assets/qwen2-1.5b/config.json /tmp/q15.json
[ -f /tmp/q15/model.safetensors ] || \
  $B/loratune init-random --config /tmp/q15.json --output /tmp/q15 --seed 1 --tokenizer assets/qwen2-tokenizer > /dev/null 2>&1
echo "first notebook steps (loss per step; PEFT on the same data: 12.2166 12.2399 12.2045 12.2244 12.2429):"
for v in X=1; do
  env $v $B/loratune train --model /tmp/q15 --data assets/ruozhiba/ruozhiba_qa.json --output /tmp/o --device cuda \
    --optim adamw_torch --lr 4e-5 --max-steps 5 --gen-instruction "" --log-every 1 2>&1 | grep -E "^step" | awk '{printf "%s ", $4}'
  echo " <- $v"
done
# CURVE_RUNS adds lt_fp16 (the fp16 line) and peft_fp32 (PEFT without 16-bit rounding); give them
# time with CURVE_TIMEOUT / VERIFY_TIMEOUT (seconds)
OUT=/tmp/vout CURVE_NOTEBOOK_LR_ONLY=1 CURVE_RUNS=${CURVE_RUNS:-lt_bf16,peft} timeout ${VERIFY_TIMEOUT:-200} \
  bash tests/gpu/verify_1p5b.sh parity curves > /tmp/verify.log 2>&1; echo "verify rc=$?"
tail -${VERIFY_TAIL:-6} /tmp/verify.log; grep -E "loss|norm" /tmp/vout/step0.log | tail -6
cp /tmp/vout/*.png /tmp/vout/*.json "$R"/ 2>/dev/null
unset LD_LIBRARY_PATH
B=build-s1 OUT=$R BENCH_ARGS="--shapes 2x512,2x2048,16x512 --steps 6 --warmup 3 --data assets/ruozhiba/ruozhiba_qa.json --data-steps 3" \
  bash tests/cuda/run_gpu.sh bench peer 2>&1 | tail -6
# PEER_RUNS=2: the peer again (its speed moves between runs more than loratune's), against the same bench
if [ "${PEER_RUNS:-1}" -ge 2 ]; then
  mkdir -p /tmp/peer2; cp "$R"/bench.json /tmp/peer2/
  echo "second peer run:"; B=build-s1 OUT=/tmp/peer2 bash tests/cuda/run_gpu.sh peer 2>&1 | tail -5
  cp /tmp/peer2/peer.json "$R"/peer2.json 2>/dev/null
fi
# one archive back (the run tool returns at most 8 files): figures, curve JSON, bench and peer JSON/logs
(cd "$R" && tar czf /tmp/session_check.tgz . && rm -f ./* && mv /tmp/session_check.tgz .)
ls -la "$R"
