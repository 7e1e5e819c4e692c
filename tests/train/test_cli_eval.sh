#!/bin/sh
# test_cli_eval.sh - `loratune train` with evaluation on the tiny fixture model (CPU): eval loss
# on the log lines and in log.jsonl / log.csv, the eval line of loss.svg, early stopping,
# --save-total-limit, --load-best-at-end (the adapter written is the best checkpoint's, byte for
# byte), --eval-data, the end-of-run summary, and the warmup warning of a short run.
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
while [ $i -lt 32 ]; do
  n=$((5 + i % 9)); ids=""; k=0
  while [ $k -lt $n ]; do ids="$ids${ids:+, }$((3 + (i * 31 + k * 17) % 250))"; k=$((k + 1)); done
  echo "{\"input_ids\": [$ids]}" >> "$T/data.jsonl"
  [ $i -lt 6 ] && echo "{\"input_ids\": [$ids]}" >> "$T/eval.jsonl"
  i=$((i + 1))
done
COMMON="--model $MODEL --tokenizer $TOK --device cpu --optim adamw_torch --lr 0.01 --warmup-steps 0 --batch-size 2
        --grad-accum 1 --gen-instruction="

# a threshold no evaluation can beat: step 2's eval stays the best, patience 2 stops after step 6
"$CLI" train $COMMON --data "$T/data.jsonl" --output "$T/a" --max-steps 20 --eval-fraction 0.25 --eval-every 2 \
    --save-every 2 --save-total-limit 2 --load-best-at-end --early-stopping-patience 2 \
    --early-stopping-threshold 1e9 > "$T/a.txt" 2> "$T/a.err" || { cat "$T/a.err"; fail "train with eval failed"; }
cat "$T/a.txt"
grep -q "^eval: 8 records held out" "$T/a.txt" || fail "no eval split line"
grep -q "^step 2/20 loss [0-9.]* .* eval_loss [0-9.]* eval_acc [0-9.]*" "$T/a.txt" || fail "no eval on the log line"
grep -q "^early stopping after step 6" "$T/a.txt" || fail "early stopping did not stop after step 6"
grep -q "^done: 6 of 20 steps (early stopping), [0-9]* tokens in .* tokens/s), final loss" "$T/a.txt" || fail "summary line"
grep -q "^  eval: *best loss [0-9.]* at step 2 (3 evaluations); the adapter is that step's" "$T/a.txt" || fail "eval summary"
[ "$(ls -d "$T"/a/checkpoint-* | wc -l)" -eq 2 ] && [ -d "$T/a/checkpoint-2" ] && [ -d "$T/a/checkpoint-6" ] \
    || fail "--save-total-limit 2 with --load-best-at-end should keep checkpoint-2 and checkpoint-6: $(ls "$T/a")"
cmp "$T/a/adapter_model.safetensors" "$T/a/checkpoint-2/adapter_model.safetensors" || fail "the adapter is not step 2's"
cmp -s "$T/a/adapter_model.safetensors" "$T/a/checkpoint-6/adapter_model.safetensors" && fail "the adapter equals step 6's"
[ "$(grep -c '"eval_loss"' "$T/a/log.jsonl")" -eq 3 ] || fail "log.jsonl should hold 3 eval rows"
head -1 "$T/a/log.csv" | grep -q "^step,loss,lr,grad_norm,tokens,tokens_per_s,epoch,eval_loss,eval_accuracy$" || fail "log.csv header"
[ "$(wc -l < "$T/a/log.csv")" -eq 7 ] || fail "log.csv should hold a header and 6 rows"
grep -q "^2,[0-9.e-]*,.*,[0-9.e-]*,[0-9.e-]*$" "$T/a/log.csv" || fail "log.csv row 2 lacks the eval cells"
grep -q 'id="eval"' "$T/a/loss.svg" && grep -q 'id="train-smoothed"' "$T/a/loss.svg" || fail "loss.svg lacks its lines"

# --eval-data: every record of another file, evaluated at every log step and at the end
"$CLI" train $COMMON --data "$T/data.jsonl" --output "$T/b" --max-steps 3 --log-every 2 --eval-data "$T/eval.jsonl" \
    > "$T/b.txt" 2> "$T/b.err" || { cat "$T/b.err"; fail "--eval-data failed"; }
grep -q "^eval: .*eval.jsonl: 6 records" "$T/b.txt" || fail "no --eval-data line"
[ "$(grep -c '"eval_loss"' "$T/b/log.jsonl")" -eq 2 ] || fail "--eval-data: evals at steps 2 and 3 expected"

# the short run the issue names: --max-steps 3 with 50 warmup steps warns
"$CLI" train $COMMON --data "$T/data.jsonl" --output "$T/c" --max-steps 3 --warmup-steps 50 > "$T/c.txt" 2> "$T/c.err" \
    || { cat "$T/c.err"; fail "short run failed"; }
grep -q "warning.*warmup_steps 50 >= max_steps 3" "$T/c.err" || fail "no warmup warning: $(cat "$T/c.err")"
echo "test_cli_eval: ok"
