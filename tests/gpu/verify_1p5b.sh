#!/bin/bash
# verify_1p5b.sh - closing checks on a Qwen2-1.5B-shaped random model on a GPU machine:
# the original notebook's code end to end through the Python binding (CUDA), and the merged bf16
# export loaded by transformers against loratune's unmerged logits. Stage as verify_all.sh does.
set -u
B=build-gpu
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/$B:$PWD/$B/libs:${LD_LIBRARY_PATH:-} LT_REPO_ROOT=$PWD PYTHONUNBUFFERED=1
export LORATUNE_LIBRARY=$PWD/$B/libloratune.so LORATUNE_CLI=$PWD/$B/loratune PYTHONPATH=$PWD/bindings/python
nvidia-smi --query-gpu=name --format=csv,noheader
python3 - <<'PY'
import json
json.dump(dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=151936, hidden_size=1536,
    intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
    max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
    hidden_act="silu", use_sliding_window=False, bos_token_id=151643, eos_token_id=151645,
    initializer_range=0.02, torch_dtype="bfloat16"), open("/tmp/q15.json", "w"))
PY
$B/loratune init-random --config /tmp/q15.json --output /tmp/q15 --seed 1 --tokenizer assets/qwen2-tokenizer > /dev/null 2>&1
sum=()
timeout 200 python3 tests/interop/merged_bf16_1p5b.py $LORATUNE_LIBRARY $LORATUNE_CLI /tmp/q15 /tmp/m15 > $OUT/merged.log 2>&1
sum+=("merged bf16 1.5B rc=$? $(grep 'rel' $OUT/merged.log | tail -1)")
mkdir -p /tmp/nb && cd /tmp/nb
LT_TINY_MODEL=/tmp/q15 LORATUNE_DEVICE=cuda LORATUNE_MAX_STEPS=10 timeout 250 python3 $LT_REPO_ROOT/tests/bindings/notebook_original.py \
  > $OUT/notebook.log 2>&1; rc=$?
sum+=("notebook_original on 1.5B (cuda, 10 steps) rc=$rc; files: $(ls lora_model model 2>/dev/null | tr '\n' ' ')")
cd $LT_REPO_ROOT
grep -v "it/s\|step/s" $OUT/notebook.log | tail -25
for s in "${sum[@]}"; do echo "$s"; done
