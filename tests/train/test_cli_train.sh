#!/bin/sh
# test_cli_train.sh - `loratune train` end to end on the tiny fixture model (CPU): a --config
# file overridden by flags, the output folder (adapter, log.jsonl, loss.svg, checkpoints), and
# --resume from a checkpoint giving the same adapter bytes as the straight run.
set -eu
CLI=${LORATUNE_CLI:?LORATUNE_CLI is not set}
ROOT=${LT_REPO_ROOT:?LT_REPO_ROOT is not set}
MODEL=$ROOT/tests/fixtures/data/tiny-untied
TOK=$ROOT/assets/qwen2-tokenizer
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# token records (ids < 256: the fixture's vocabulary)
i=0
while [ $i -lt 24 ]; do
  n=$((5 + i % 9)); ids=""; k=0
  while [ $k -lt $n ]; do ids="$ids${ids:+, }$((3 + (i * 31 + k * 17) % 250))"; k=$((k + 1)); done
  echo "{\"input_ids\": [$ids]}" >> "$T/data.jsonl"
  i=$((i + 1))
done
cat > "$T/config.json" <<JSON
{"max_steps": 6, "lr": 0.001, "batch_size": 3, "grad_accum": 2, "warmup_steps": 1, "lora_r": 8,
 "save_every": 3, "log_every": 2, "device": "cpu", "optim": "adamw_torch"}
JSON

"$CLI" train --help | grep -q -- "--grad-accum" || fail "--help does not list the flags"
"$CLI" train --model "$MODEL" --data "$T/data.jsonl" 2>/dev/null && fail "missing --output accepted"
"$CLI" train --model "$MODEL" --tokenizer "$TOK" --data "$T/data.jsonl" --output "$T/a" \
    --config "$T/config.json" --batch-size 2 > "$T/a.txt"
cat "$T/a.txt"
grep -q "training: batch 2 x accumulation 2, lr 0.001" "$T/a.txt" || fail "flags did not override the config"
for f in adapter_config.json adapter_model.safetensors log.jsonl loss.svg checkpoint-3/optimizer.safetensors \
         checkpoint-6/trainer_state.json; do
  [ -e "$T/a/$f" ] || fail "missing $f in the output folder"
done
[ "$(wc -l < "$T/a/log.jsonl")" -eq 3 ] || fail "log.jsonl should have 3 rows (steps 2, 4, 6)"
grep -q '"step": 6' "$T/a/log.jsonl" || fail "log.jsonl lacks step 6"
grep -q "<polyline" "$T/a/loss.svg" || fail "loss.svg has no curve"
grep -q "loratune export" "$T/a.txt" || fail "no next-step hint"
cmp "$T/a/adapter_model.safetensors" "$T/a/checkpoint-6/adapter_model.safetensors" || fail "final adapter differs from checkpoint-6"

# resume from checkpoint-3: the same adapter as the straight run, byte for byte
"$CLI" train --model "$MODEL" --tokenizer "$TOK" --data "$T/data.jsonl" --output "$T/b" \
    --config "$T/config.json" --batch-size 2 --resume "$T/a/checkpoint-3" > "$T/b.txt"
grep -q "resumed from" "$T/b.txt" || fail "no resume message"
cmp "$T/a/adapter_model.safetensors" "$T/b/adapter_model.safetensors" || fail "resumed adapter differs"
cmp "$T/a/checkpoint-6/optimizer.safetensors" "$T/b/checkpoint-6/optimizer.safetensors" || fail "optimizer state differs"
echo "test_cli_train: ok"
