#!/bin/bash
# big_models.sh - issue 21's larger models on one GPU (~6 minutes on an H100): a random Qwen2-7B
# shape (assets/qwen2-7b/config.json) and a Llama-3.1-8B shape (assets/llama-3.1-8b/config.json, loratune init-random),
# trained at 2x2048 (gradient checkpointing, r=16, all seven projections, dropout 0.1):
# `loratune info` estimate, `loratune bench` tokens/s and measured peak without and with
# --offload-checkpoints, and Unsloth on the same 7B files (loratune's random checkpoint, adopted by the peer) and shape (peer_qlora.py unsloth, dropout
# 0.1, max allocated). Run from the repository root with carry [$B, ".peer-kit"]:
#   B=build-next bash tests/gpu/big_models.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/big"
B=${B:?set B to the staged CUDA build folder}
for f in "$B"/*.xz "$B"/libs/*.xz; do [ -e "$f" ] && xz -d -f "$f"; done
chmod +x "$B"/loratune 2>/dev/null
export LD_LIBRARY_PATH=$PWD/$B:$PWD/$B/libs:${LD_LIBRARY_PATH:-} LT_REPO_ROOT=$PWD
LT=$B/loratune; KIT=${KIT:-.peer-kit}; SITE=/tmp/site; TK=assets/qwen2-tokenizer
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 ))s; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
RES=()
if [ ! -f $SITE/.peer_unpacked ]; then
  mkdir -p $SITE && python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
    $KIT/site.tar.xz $SITE && touch $SITE/.peer_unpacked
fi
# the random checkpoints (bf16, one model.safetensors each + the tokenizer); the peer adopts the 7B one
timeout 200 $LT init-random --config assets/qwen2-7b/config.json --output /tmp/q7 --seed 1 --tokenizer $TK \
  --overwrite > $OUT/big/make7.log 2>&1
RES+=("make 7B rc=$? $(el)")
timeout 200 $LT init-random --config assets/llama-3.1-8b/config.json --output /tmp/l8 --seed 1 --tokenizer $TK \
  --overwrite > $OUT/big/make8.log 2>&1
RES+=("make 8B rc=$? $(el)")
for m in q7 l8; do
  [ -d /tmp/$m ] || continue
  $LT info --model /tmp/$m --device cuda > $OUT/big/info_$m.txt 2>&1
  $LT info --model /tmp/$m --device cuda --offload-checkpoints > $OUT/big/info_off_$m.txt 2>&1
  for o in "" "--offload-checkpoints"; do
    timeout 150 $LT bench --model /tmp/$m --tokenizer $TK --shapes 2x2048 --steps 5 --warmup 2 $o \
      --json $OUT/big/bench_$m$o.json > $OUT/big/bench_$m$o.log 2>&1
    RES+=("bench $m $o rc=$? $(el): $(grep -E '^ *2x2048' $OUT/big/bench_$m$o.log | head -1)")
  done
  RES+=("info $m: $(grep -E '^  total' $OUT/big/info_$m.txt) | offload: $(grep -E '^  total' $OUT/big/info_off_$m.txt)")
done
# Unsloth on the same 7B files and shape
if [ -d /tmp/q7 ] && [ -f $SITE/.peer_unpacked ]; then
  ( export PYTHONPATH=$SITE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DO_NOT_TRACK=1 \
      UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled PYTHONUNBUFFERED=1 \
      UNSLOTH_COMPILE_LOCATION=/tmp/unsloth_compiled_cache UNSLOTH_SKIP_TORCHVISION_CHECK=1
    timeout 240 python3 tests/gpu/peer_7b.py $KIT/peers assets/qwen2-7b/config.json --adopt /tmp/q7 --mode unsloth \
      --out $OUT/big/unsloth_7b.json --shapes 2x2048 --dropout 0.1 --alpha 32 --model-dir /tmp/q7 \
      --tokenizer-dir $TK ) > $OUT/big/unsloth_7b.log 2>&1
  RES+=("unsloth 7B rc=$? $(el): $(python3 -c "import json; r=json.load(open('$OUT/big/unsloth_7b.json'))[0]; print(r.get('tok_per_s'), 'tok/s', r.get('peak_gib'), 'GiB', r.get('error','')[:200])" 2>&1 | tail -1)")
fi
tar -czf $OUT/big.tgz -C $OUT big && rm -rf $OUT/big
printf '%s\n' "${RES[@]}"
