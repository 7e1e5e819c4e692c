#!/bin/bash
# gpu_check.sh - the memory-saving mode (--offload-checkpoints: the checkpoints in pinned host
# memory, the MLP in token chunks of LT_GRAPH_MLP_CHUNK, the LM head + CE in chunks of 48 MiB of
# logits) on one GPU, from a staged CUDA build folder B
# (loratune, test_offload_cuda, test_cuda_graph; libs/ with extra shared libraries; each file may
# be xz-compressed), run from the repository root (~5 minutes on an H100):
#   1. test_offload_cuda: the dropout row offsets op by op against the CPU, device vs offloaded
#      passes bit for bit below one MLP chunk, and with MLP chunks of 64 tokens: as graphs and op
#      by op bit for bit, against the device mode within bf16 rounding; test_cuda_graph;
#   2. a random Qwen2-1.5B (assets/qwen2-1.5b/config.json): 5 `loratune train` steps with
#      --deterministic, offload off vs on, on 2 x 1024-token records (4 MLP chunks a pass): the
#      losses and grad norms side by side (equal up to the order in which the gate/up/down LoRA
#      gradients add up over the chunks, so not bit for bit);
#   3. `loratune bench`: tokens/s, measured peak GiB and the estimate (lt_estimate_memory) for
#      2x512, 2x2048 and 16x512 without and with offload, 1x16384 and 1x32768 with offload; with O
#      set (a staged build from before the MLP / head chunks, e.g. build-gbase), the same with its
#      loratune on the same model and GPU, for the tokens/s the chunks cost.
# Usage: B=build-off [O=build-gbase] bash tests/offload/gpu_check.sh   (OUT: logs, default /tmp/out)
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=${B:?set B to the staged CUDA build folder}
O=${O:-}
for f in "$B"/*.xz "$B"/libs/*.xz ${O:+"$O"/*.xz "$O"/libs/*.xz}; do [ -e "$f" ] && xz -d -f "$f"; done
chmod +x "$B"/loratune "$B"/test_* ${O:+"$O"/loratune} 2>/dev/null
export LD_LIBRARY_PATH=$PWD/$B:$PWD/$B/libs:${LD_LIBRARY_PATH:-} LT_REPO_ROOT=$PWD
LT=$B/loratune
T=/tmp/lt-offload-chunks; rm -rf $T; mkdir -p $T
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 ))s; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
RES=()

# 1. the CUDA tests
$LT init-random --config tests/offload/config.json --output $T/m5 --seed 5 --dtype f32 --overwrite > /dev/null 2>&1
timeout 180 $B/test_offload_cuda $T/m5 > $OUT/test_offload_cuda.log 2>&1; rc=$?
RES+=("test_offload_cuda rc=$rc: $(tail -1 $OUT/test_offload_cuda.log)")
grep -E "row offset|graph replays|MLP chunks|CHECK" $OUT/test_offload_cuda.log | head -12
if [ -x $B/test_cuda_graph ]; then
  timeout 150 $B/test_cuda_graph > $OUT/test_cuda_graph.log 2>&1; rc=$?
  RES+=("test_cuda_graph rc=$rc: $(tail -1 $OUT/test_cuda_graph.log)")
fi

# 2. the 1.5B shape, offload off vs on
$LT init-random --config assets/qwen2-1.5b/config.json --output $T/q15 --seed 1 --dtype bf16 \
  --tokenizer assets/qwen2-tokenizer --overwrite > $OUT/init.log 2>&1 || { echo "init-random failed"; tail -3 $OUT/init.log; }
awk 'BEGIN { srand(7); for (r = 0; r < 40; r++) { printf "{\"input_ids\": ["; for (i = 0; i < 1024; i++)
     printf "%s%d", (i ? ", " : ""), 10 + int(rand() * 150000); print "]}" } }' > $T/fixed.jsonl
for off in 0 1; do
  flag=""; [ $off = 1 ] && flag=--offload-checkpoints
  timeout 150 $LT train --model $T/q15 --data $T/fixed.jsonl --output $T/o_$off --device cuda --max-steps 5 \
    --batch-size 2 --grad-accum 2 --warmup-steps 0 --lr 1e-4 --deterministic --gen-instruction "" --log-every 1 \
    --overwrite $flag > $OUT/train_$off.log 2>&1
  echo "train offload=$off rc=$? $(el)"
done
for k in loss grad_norm; do
  RES+=("$k off / on: $(paste -d/ <(grep -o "\"$k\": [0-9.e+-]*" $T/o_0/log.jsonl | awk '{print $2}') \
                               <(grep -o "\"$k\": [0-9.e+-]*" $T/o_1/log.jsonl | awk '{print $2}') | tr '\n' ' ')")
done
rm -rf $T/o_*

# 3. speed, peak memory and the estimate
bench() { # $1: label, $2: loratune, rest: bench flags (the baseline's with its own libraries)
  local label=$1 lt=$2; shift 2
  local lib=$LD_LIBRARY_PATH
  [ "$lt" != "$LT" ] && lib=$PWD/$O:$PWD/$O/libs:$LD_LIBRARY_PATH
  LD_LIBRARY_PATH=$lib timeout 300 $lt bench --model $T/q15 --json $OUT/bench_$label.json "$@" > $OUT/bench_$label.log 2>&1
  echo "bench $label rc=$? $(el)"
}
LABELS="dev host"
bench dev $LT --shapes 2x512,2x2048,16x512 --steps 4 --warmup 2
bench host $LT --shapes 2x512,2x2048,16x512,1x16384,1x32768 --steps 3 --warmup 1 --offload-checkpoints
if [ -n "$O" ]; then
  bench base_host $O/loratune --shapes 2x512,2x2048,16x512,1x16384,1x32768 --steps 3 --warmup 1 --offload-checkpoints
  LABELS="$LABELS base_host"
fi
printf '\n%-9s %-9s %10s %9s %8s %7s\n' shape ckpt "tokens/s" "peak GiB" "est GiB" "est/pk"
for label in $LABELS; do
  grep -o '{[^}]*}' $OUT/bench_$label.json 2>/dev/null | while read -r row; do
    sh=$(echo "$row" | sed 's/.*"shape": "\([^"]*\)".*/\1/')
    ok=$(echo "$row" | sed 's/.*"ok": \([0-9]*\).*/\1/')
    tok=$(echo "$row" | sed 's/.*"tok_per_s": \([0-9.]*\).*/\1/')
    pk=$(echo "$row" | sed 's/.*"peak_gib": \([0-9.]*\).*/\1/')
    es=$(echo "$row" | sed 's/.*"est_gib": \([0-9.]*\).*/\1/')
    ck=$(case $label in host) echo host;; base_host) echo host-base;; *) echo on;; esac)
    if [ "$ok" = 1 ]; then
      printf '%-9s %-9s %10.0f %9.3f %8.3f %7s\n' "$sh" $ck "$tok" "$pk" "$es" \
        "$(awk -v e="$es" -v p="$pk" 'BEGIN { printf "%.3f", (p > 0 ? e / p : 0) }')"
    else
      printf '%-9s %-9s FAILED (see %s)\n' "$sh" $ck $OUT/bench_$label.log
    fi
  done
done
grep -h "FAILED" $OUT/bench_*.log | head -4
printf '\n'; printf '%s\n' "${RES[@]}"
echo "total $(el)"
