#!/bin/sh
# test_cli_model_io.sh - `loratune init-random` and `loratune info` end to end: random
# checkpoints from the shipped tiny configs load-check cleanly, the same seed gives the same
# bytes, existing outputs are refused, and info prints the notebook's LoRA count for Qwen2-1.5B.
set -u
CLI="${LORATUNE_CLI:?}"
ROOT="${LT_REPO_ROOT:?}"
OUT="${LT_BUILD_DIR:?}/test_cli_model_io.$$"
fail() { echo "FAIL: $*"; exit 1; }
rm -rf "$OUT"; mkdir -p "$OUT"

for m in tiny-qwen2 tiny-llama; do
  "$CLI" init-random --config "$ROOT/assets/$m/config.json" --output "$OUT/$m" --seed 7 \
      --tokenizer "$ROOT/assets/qwen2-tokenizer" || fail "init-random $m"
  for f in config.json model.safetensors generation_config.json tokenizer.json tokenizer_config.json; do
    [ -f "$OUT/$m/$f" ] || fail "$m: $f not written"
  done
  "$CLI" info --model "$OUT/$m" > "$OUT/$m.info" || fail "info $m: $(cat "$OUT/$m.info")"
  grep -q "every tensor config.json needs is there" "$OUT/$m.info" || fail "info $m did not check the tensors"
done
grep -q "q/k/v bias" "$OUT/tiny-qwen2.info" || fail "tiny-qwen2 should have q/k/v biases"
grep -q "tied" "$OUT/tiny-qwen2.info" || fail "tiny-qwen2 should tie its embeddings"
grep -q "untied" "$OUT/tiny-llama.info" || fail "tiny-llama should not tie its embeddings"

# same seed, same file; existing output refused; --overwrite replaces
"$CLI" init-random --config "$ROOT/assets/tiny-qwen2/config.json" --output "$OUT/again" --seed 7 --threads 1 >/dev/null || fail "again"
cmp -s "$OUT/tiny-qwen2/model.safetensors" "$OUT/again/model.safetensors" || fail "same seed gave different weights"
if "$CLI" init-random --config "$ROOT/assets/tiny-qwen2/config.json" --output "$OUT/again" --seed 8 2>"$OUT/err"; then
  fail "an existing output was overwritten"
fi
grep -q "already exists" "$OUT/err" || fail "no 'already exists' message: $(cat "$OUT/err")"
"$CLI" init-random --config "$ROOT/assets/tiny-qwen2/config.json" --output "$OUT/again" --seed 8 --overwrite >/dev/null || fail "overwrite"
cmp -s "$OUT/tiny-qwen2/model.safetensors" "$OUT/again/model.safetensors" && fail "another seed gave the same weights"

# info on Qwen2-1.5B's config (no weights): the notebook's LoRA count
mkdir -p "$OUT/qwen2-1.5b"
cat > "$OUT/qwen2-1.5b/config.json" <<'JSON'
{"architectures":["Qwen2ForCausalLM"],"bos_token_id":151643,"eos_token_id":151645,"hidden_act":"silu","hidden_size":1536,"initializer_range":0.02,"intermediate_size":8960,"max_position_embeddings":32768,"model_type":"qwen2","num_attention_heads":12,"num_hidden_layers":28,"num_key_value_heads":2,"rms_norm_eps":1e-06,"rope_theta":1000000.0,"tie_word_embeddings":true,"torch_dtype":"bfloat16","use_sliding_window":false,"vocab_size":151936}
JSON
"$CLI" info --model "$OUT/qwen2-1.5b" > "$OUT/q.info" || fail "info qwen2-1.5b"
grep -q "trainable params: 18,464,768" "$OUT/q.info" || fail "LoRA count: $(cat "$OUT/q.info")"
grep -q "parameters     1,543,714,304" "$OUT/q.info" || fail "base count: $(cat "$OUT/q.info")"

# bad input: unknown architecture, missing folder
sed 's/Qwen2ForCausalLM/GPTNeoXForCausalLM/' "$OUT/qwen2-1.5b/config.json" > "$OUT/neox.json"
if "$CLI" init-random --config "$OUT/neox.json" --output "$OUT/neox" 2>"$OUT/err"; then fail "unknown architecture accepted"; fi
grep -q "GPTNeoXForCausalLM\" is not supported" "$OUT/err" || fail "message: $(cat "$OUT/err")"
if "$CLI" info --model "$OUT/missing" 2>"$OUT/err"; then fail "missing folder accepted"; fi
grep -q "no such model folder" "$OUT/err" || fail "message: $(cat "$OUT/err")"
rm -rf "$OUT"
echo "test_cli_model_io: passed"
