#!/bin/bash
# offload_check.sh - checkpoint offload (--offload-checkpoints) on one GPU, from a staged CUDA build
# folder B (loratune, test_offload_cuda, optionally test_cuda_graph; libs/ with extra shared
# libraries; each file may be xz-compressed), run from the repository root (~4 minutes on an
# H100):
#   1. test_offload_cuda: a 5-layer random Qwen2, passes with the checkpoints on the device vs
#      offloaded (copy stream + events, CUDA graphs recorded with the copies), bit for bit;
#   2. a random Qwen2-1.5B (assets/qwen2-1.5b/config.json, init-random): 5 `loratune train` steps
#      with --deterministic, offload off vs on, on fixed-length records (2 x 1024 tokens: every
#      pass one shape, so passes replay as CUDA graphs) and on the notebook's data (varying
#      lengths): log.jsonl (losses, grad norms, lr) and adapter_model.safetensors must be equal
#      byte for byte;
#   3. `loratune bench`: tokens/s, measured peak GiB (the allocator's high-water mark) and the
#      estimate (lt_estimate_memory, what `loratune info` prints) for 2x2048 without and with
#      offload, 1x16384 and 1x32768 with offload, as one table; plus `loratune info` for 1x32768.
# Usage: B=build-off bash tests/gpu/offload_check.sh   (OUT: where logs go, default /tmp/out)
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=${B:?set B to the staged CUDA build folder}
for f in "$B"/*.xz "$B"/libs/*.xz; do [ -e "$f" ] && xz -d -f "$f"; done
chmod +x "$B"/loratune "$B"/test_* 2>/dev/null
export LD_LIBRARY_PATH=$PWD/$B:$PWD/$B/libs:${LD_LIBRARY_PATH:-} LT_REPO_ROOT=$PWD
LT=$B/loratune
T=/tmp/lt-offload; rm -rf $T; mkdir -p $T
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 ))s; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
RES=()

# 1. the CUDA test (its model: the 5-layer config of tests/offload, made here); test_cuda_graph
#    where staged (the training pass against the CPU reference: graph.c's buffer sharing,
#    dgate/dup over gate/up and the attention gradients in them, runs there too)
$LT init-random --config tests/offload/config.json --output $T/m5 --seed 5 --dtype f32 --overwrite > /dev/null 2>&1
timeout 120 $B/test_offload_cuda $T/m5 > $OUT/test_offload_cuda.log 2>&1; rc=$?
RES+=("test_offload_cuda rc=$rc: $(tail -1 $OUT/test_offload_cuda.log)")
grep -E "graph replays|CHECK" $OUT/test_offload_cuda.log | head -8
for t in test_cuda_graph; do
  [ -x $B/$t ] || continue
  timeout 150 $B/$t > $OUT/$t.log 2>&1; rc=$?
  RES+=("$t rc=$rc: $(tail -1 $OUT/$t.log)")
done

# 2. bit for bit on the 1.5B shape
$LT init-random --config assets/qwen2-1.5b/config.json --output $T/q15 --seed 1 --dtype bf16 \
  --tokenizer assets/qwen2-tokenizer --overwrite > $OUT/init.log 2>&1 || { echo "init-random failed"; tail -3 $OUT/init.log; }
awk 'BEGIN { srand(7); for (r = 0; r < 40; r++) { printf "{\"input_ids\": ["; for (i = 0; i < 1024; i++)
     printf "%s%d", (i ? ", " : ""), 10 + int(rand() * 150000); print "]}" } }' > $T/fixed.jsonl
for data in fixed notebook; do
  D=$T/fixed.jsonl; [ $data = notebook ] && D=assets/ruozhiba/ruozhiba_qa.json
  for off in 0 1; do
    flag=""; [ $off = 1 ] && flag=--offload-checkpoints
    timeout 150 $LT train --model $T/q15 --data $D --output $T/o_${data}_$off --device cuda --max-steps 5 \
      --batch-size 2 --grad-accum 2 --warmup-steps 0 --lr 1e-4 --deterministic --gen-instruction "" --log-every 1 \
      --overwrite $flag > $OUT/train_${data}_$off.log 2>&1
    echo "train $data offload=$off rc=$? $(el): $(grep -E '^done' $OUT/train_${data}_$off.log)"
  done
  same_log=no; same_adapter=no
  diff <(sed 's/"tokens_per_s": [^,]*, //' $T/o_${data}_0/log.jsonl) \
       <(sed 's/"tokens_per_s": [^,]*, //' $T/o_${data}_1/log.jsonl) > /dev/null 2>&1 && same_log=yes
  cmp -s $T/o_${data}_0/adapter_model.safetensors $T/o_${data}_1/adapter_model.safetensors && same_adapter=yes
  [ -s $T/o_${data}_0/log.jsonl ] || same_log="no (no log)"
  RES+=("bit for bit, $data records, 5 steps: log.jsonl equal: $same_log, adapter equal: $same_adapter; losses $(grep -o '"loss": [0-9.]*' $T/o_${data}_1/log.jsonl | awk '{printf "%s ", $2}')")
done
rm -rf $T/o_*

# 3. speed and memory
bench() { # $1: label, rest: bench flags
  local label=$1; shift
  timeout 200 $LT bench --model $T/q15 --json $OUT/bench_$label.json "$@" > $OUT/bench_$label.log 2>&1
  echo "bench $label rc=$? $(el)"
}
bench dev --shapes 2x2048 --steps 4 --warmup 2
bench host --shapes 2x2048,1x16384,1x32768 --steps 3 --warmup 1 --offload-checkpoints
$LT info --model $T/q15 --device cuda --batch-size 1 --max-seq-len 32768 --optim adamw_torch --offload-checkpoints \
  > $OUT/info_32k.log 2>&1
sed -n '/^memory/,$p' $OUT/info_32k.log

printf '\n%-9s %-5s %10s %9s %8s %7s\n' shape ckpt "tokens/s" "peak GiB" "est GiB" "est/pk"
for label in dev host; do
  grep -o '{[^}]*}' $OUT/bench_$label.json 2>/dev/null | while read -r row; do
    sh=$(echo "$row" | sed 's/.*"shape": "\([^"]*\)".*/\1/')
    ok=$(echo "$row" | sed 's/.*"ok": \([0-9]*\).*/\1/')
    tok=$(echo "$row" | sed 's/.*"tok_per_s": \([0-9.]*\).*/\1/')
    pk=$(echo "$row" | sed 's/.*"peak_gib": \([0-9.]*\).*/\1/')
    es=$(echo "$row" | sed 's/.*"est_gib": \([0-9.]*\).*/\1/')
    ck=$([ $label = host ] && echo host || echo on)
    if [ "$ok" = 1 ]; then
      printf '%-9s %-5s %10.0f %9.2f %8.2f %7s\n' "$sh" $ck "$tok" "$pk" "$es" \
        "$(awk -v e="$es" -v p="$pk" 'BEGIN { printf "%.3f", (p > 0 ? e / p : 0) }')"
    else
      printf '%-9s %-5s FAILED (see %s)\n' "$sh" $ck $OUT/bench_$label.log
    fi
  done
done
grep -h "FAILED" $OUT/bench_*.log | head -4
printf '\n'; printf '%s\n' "${RES[@]}"
echo "total $(el)"
