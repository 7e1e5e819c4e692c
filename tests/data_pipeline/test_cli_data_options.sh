#!/bin/sh
# test_cli_data_options.sh - `loratune train` takes every option `loratune dataset` takes, with the
# same effect: on a small BELLE-style file whose fields are named q / ctx / a (not instruction /
# input / output) and which holds three bad records, each data option is given to `dataset` and
# to `train` (one step on a random tiny Qwen2 with the real tokenizer, CPU), and the statistics
# both print (records, eval records, tokens, tokens with loss, truncated, skipped) must agree
# and show the option's effect. The file trains from the CLI with the field mapping and
# --skip-bad, from flags and from --config; without them train fails, naming the fix or the
# bad record's file:line.
set -eu
CLI=${LORATUNE_CLI:?LORATUNE_CLI is not set}
ROOT=${LT_REPO_ROOT:?LT_REPO_ROOT is not set}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$CLI" init-random --config "$ROOT/assets/tiny-qwen2/config.json" --output "$T/model" --seed 1 \
    --tokenizer "$ROOT/assets/qwen2-tokenizer" > /dev/null
D=$T/belle.jsonl
cat > "$D" <<'EOF'
{"q": "只剩一个心脏了还能活吗？", "ctx": "", "a": "能，人本来就只有一个心脏。"}
{"q": "爸爸再婚，我是不是就有了个新娘？", "ctx": "", "a": "不是的，你有了一个继母。"}
{"q": "Translate to English", "ctx": "你好，世界", "a": "Hello, world."}
{"q": "樟脑丸是我吃过最难吃的硬糖有奇怪的味道怎么还有人买", "ctx": "", "a": "樟脑丸不是硬糖，不能吃。"}
{"q": "a record without its answer", "ctx": ""}
{"q": "Summarize", "ctx": "The quick brown fox jumps over the lazy dog.", "a": "A fox jumps over a dog."}
{"q": "蛇为什么没有腿？", "ctx": "", "a": "蛇的祖先在进化中失去了腿。"}
{"q": "What is 2 + 3?", "ctx": "", "a": "2 + 3 = 5."}
{"q": "a torn line", "ctx": "", "a": "unterminated
{"q": "为什么冬天的风很冷？", "ctx": "", "a": "因为冬天的空气温度低。"}
{"q": "Name a primary color.", "ctx": "", "a": "Red."}
{"q": "天上的星星为什么会眨眼？", "ctx": "", "a": "因为大气层的扰动让星光闪烁。"}
{"q": 42, "ctx": "", "a": "the instruction is a number"}
{"q": "Write a haiku about rain.", "ctx": "", "a": "Soft rain on the roof, / the garden drinks in silence, / puddles hold the sky."}
{"q": "鱼会口渴吗？", "ctx": "", "a": "鱼生活在水中，一般不会口渴。"}
EOF
MAP="--instruction-field q --input-field ctx --output-field a"
TRAIN="--model $T/model --max-steps 1 --batch-size 2 --grad-accum 1 --warmup-steps 0 --device cpu --threads 2 --gen-instruction="

# the statistics as one line: train/eval records, tokens, with loss, truncated, skipped
stats_dataset() { # output of `loratune dataset`
  sed -n 's/^  records *[0-9]* (train \([0-9]*\), eval \([0-9]*\)).*/train=\1 eval=\2/p;
          s/^  skipped *\([0-9]*\).*/skipped=\1/p;
          s/^  truncated *\([0-9]*\).*/truncated=\1/p;
          s/^  tokens *\([0-9]*\), with loss \([0-9]*\).*/tokens=\1 loss=\2/p' "$1" | tr '\n' ' '
}
stats_train() { # output of `loratune train`
  r=$(sed -n 's/^data: .*: \([0-9]*\) records, \([0-9]*\) tokens (\([0-9]*\) with loss), .*, \([0-9]*\) truncated to [0-9]*, \([0-9]*\) bad records skipped$/\1 \2 \3 \4 \5/p' "$1")
  e=$(sed -n 's/^eval: \([0-9]*\) records held out.*/\1/p' "$1")
  set -- $r
  echo "train=$1 eval=${e:-0} skipped=$5 truncated=$4 tokens=$2 loss=$3 "
}
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# without the mapping: a message that names the flags
"$CLI" train $TRAIN --data "$D" --output "$T/nomap" > "$T/out" 2> "$T/err" && fail "unmapped fields trained"
grep -q "none of the known fields" "$T/err" && grep -q -- "--instruction-field" "$T/err" \
    || fail "the unmapped-field message does not name the flags: $(cat "$T/err")"
# mapped but strict: the first bad record, by file:line
"$CLI" train $TRAIN $MAP --data "$D" --output "$T/strict" > "$T/out" 2> "$T/err" && fail "bad records trained in strict mode"
grep -q "belle.jsonl:5:.*missing field 'a'" "$T/err" || fail "strict mode: $(cat "$T/err")"

# mapping + --skip-bad: trains, from flags and from --config
"$CLI" train $TRAIN $MAP --skip-bad --data "$D" --output "$T/ok" > "$T/out" 2> "$T/err" || { cat "$T/err"; fail "mapped + --skip-bad did not train"; }
base=$(stats_train "$T/out")
echo "train $MAP --skip-bad: $base"
[ "$(field "$base" train)" = 12 ] && [ "$(field "$base" skipped)" = 3 ] || fail "expected 12 records and 3 skipped: $base"
grep -q "skipped: .*belle.jsonl:9" "$T/err" || fail "the torn line 9 was not reported"
grep -q "skipped: .*belle.jsonl:13:.*field 'q' is an integer" "$T/err" || fail "record 13 (q is a number) was not reported"
for f in adapter_model.safetensors adapter_config.json log.jsonl log.csv loss.svg; do
  [ -s "$T/ok/$f" ] || fail "--skip-bad run: $f missing"
done
cat > "$T/c.json" <<'EOF'
{"instruction_field": "q", "input-field": "ctx", "output_field": "a", "skip_bad_records": true}
EOF
"$CLI" train $TRAIN --config "$T/c.json" --data "$D" --output "$T/cfg" > "$T/out" 2> "$T/err" || { cat "$T/err"; fail "--config mapping did not train"; }
[ "$(stats_train "$T/out")" = "$base" ] || fail "--config gave $(stats_train "$T/out"), flags $base"

# every data option: `dataset` and `train` print the same statistics, and the option shows
printf '{"body": "plain text record one"}\n{"body": "另一条纯文本记录"}\n{"body": "third"}\n' > "$T/text.jsonl"
printf '### Q: {instruction} {input}\n### A: {output}' > "$T/tpl.txt"
i=0
check() { # expectation, then the options (data file last)
  want=$1; shift
  i=$((i + 1))
  "$CLI" dataset --tokenizer "$T/model" --show 0 "$@" > "$T/d$i" 2> "$T/de$i" || { cat "$T/de$i"; fail "dataset $*"; }
  "$CLI" train $TRAIN "$@" --output "$T/o$i" > "$T/t$i" 2> "$T/te$i" || { cat "$T/te$i"; fail "train $*"; }
  sd=$(stats_dataset "$T/d$i"); st=$(stats_train "$T/t$i")
  [ "$(echo $sd | tr ' ' '\n' | sort | tr '\n' ' ')" = "$(echo $st | tr ' ' '\n' | sort | tr '\n' ' ')" ] \
      || fail "$*: dataset says '$sd', train says '$st'"
  eval "$want" || fail "$*: $st does not show the option ($want)"
  echo "ok: $* -> $st"
}
B="$MAP --skip-bad --data $D"
bt=$(field "$base" tokens); bl=$(field "$base" loss)
check '[ "$(field "$st" tokens)" = "$bt" ]' --tokenizer "$T/model" $B
check '[ "$(field "$st" tokens)" = "$bt" ]' --format alpaca $B
check '[ "$(field "$st" tokens)" = "$bt" ]' --threads 1 $B
check '[ "$(field "$st" tokens)" != "$bt" ]' --template alpaca $B
check '[ "$(field "$st" tokens)" != "$bt" ]' --template chatml $B
check '[ "$(field "$st" tokens)" -lt "$bt" ]' --template "$T/tpl.txt" $B
check '[ "$(field "$st" tokens)" -lt "$bt" ]' --template '{instruction}{input}=>{output}' $B
check '[ "$(field "$st" truncated)" -gt 0 ] && [ "$(field "$st" tokens)" -lt "$bt" ]' --max-seq-len 24 $B
check '[ "$(field "$st" loss)" -lt "$bl" ] && [ "$(field "$st" tokens)" = "$bt" ]' --loss-on response $B
check '[ "$(field "$st" loss)" -lt "$bl" ]' --response-only $B
check '[ "$(field "$st" tokens)" = "$((bt - 12))" ]' --no-eos $B
check '[ "$(field "$st" tokens)" = "$((bt - 12))" ]' --add-eos=0 $B
check '[ "$(field "$st" train)" = 9 ] && [ "$(field "$st" eval)" = 3 ]' --eval-fraction 0.25 $B
check '[ "$(field "$st" train)" = 9 ] && [ "$(field "$st" eval)" = 3 ]' --eval-fraction 0.25 --seed 7 $B
check '[ "$(field "$st" skipped)" = 3 ]' $MAP --skip-bad-records --data "$D"
check '[ "$(field "$st" train)" = 3 ]' --text-field body --data "$T/text.jsonl"
check '[ "$(field "$st" train)" = 3 ]' --format text --text-field body --data "$T/text.jsonl"
# train evaluates the records --eval-fraction holds out
grep -q "eval_loss" "$T/o13/log.jsonl" || fail "--eval-fraction: no eval_loss in log.jsonl"
echo "test_cli_data_options: ok ($i option sets)"
