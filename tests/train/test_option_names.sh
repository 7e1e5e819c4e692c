#!/bin/sh
# test_option_names.sh - the options of `loratune dataset` and `loratune train` against the one
# list, tests/train/option_names.txt (the Python keywords are checked against the same list in
# bindings/python/tests/test_hf_args.py):
#   - --list-options (the table the CLI parses with) names exactly the list's options, kinds too;
#   - --help shows exactly the list's flags (and the shorthands);
#   - every option is accepted as a flag and as a --config key (train), and lands as given:
#     --print-options shows the value it was set to, from the flag and from the config;
#   - the shorthands set what the list says; unknown keys and wrong types are refused by name.
set -eu
CLI=${LORATUNE_CLI:?LORATUNE_CLI is not set}
ROOT=${LT_REPO_ROOT:?LT_REPO_ROOT is not set}
LIST=$ROOT/tests/train/option_names.txt
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# "name kind" per command, from the list (enum:... -> enum)
for cmd in dataset train; do
  grep -v '^#' "$LIST" | awk -v c="$cmd" 'NF >= 4 && $1 != "alias" && $1 != "flag" {
      n = split($2, cs, ","); for (i = 1; i <= n; i++) if (cs[i] == c) { k = $3; sub(/:.*/, "", k); print $1, k } }' \
    | sort > "$T/list.$cmd"
  "$CLI" "$cmd" --list-options | grep -v '^alias ' | sort > "$T/table.$cmd"
  diff -u "$T/list.$cmd" "$T/table.$cmd" || fail "$cmd: the option table differs from option_names.txt"
  # the flags --help shows: every option's --name (--name, --no-name for bools) and nothing else
  "$CLI" "$cmd" --help | grep -o '^  --[a-z0-9-]*' | sed 's/^  //' | sort -u > "$T/help.$cmd"
  { awk '{ f = $1; gsub(/_/, "-", f); print "--" f }' "$T/list.$cmd"
    awk -v c="$cmd" '$1 == "flag" { n = split($3, cs, ","); for (i = 1; i <= n; i++) if (cs[i] == c) print $2 }' "$LIST"
  } | sort -u > "$T/flags.$cmd"
  diff -u "$T/flags.$cmd" "$T/help.$cmd" || fail "$cmd: --help flags differ from option_names.txt"
  echo "$cmd: $(wc -l < "$T/list.$cmd") options, table = --help = option_names.txt"
done

# a value per kind, and how --print-options writes it
value_of() { # name kind enumvalues -> "flagvalue|jsonvalue|printed"
  case "$2" in
    string)
      case "$1" in
        template) echo 'chatml|"chatml"|"chatml"' ;;
        targets) echo 'q,v|"q,v"|"q,v"' ;;
        *) echo "v_$1|\"v_$1\"|\"v_$1\"" ;;
      esac ;;
    int) echo '5|5|5' ;;
    number) echo '0.25|0.25|0.25' ;;
    u64) echo '12345|12345|12345' ;;
    bool) echo '0|false|false' ;;
    enum:*) v=$(echo "$2" | sed 's/^enum://' | cut -d'|' -f2); echo "$v|\"$v\"|\"$v\"" ;;
  esac
}

n=0
grep -v '^#' "$LIST" | awk 'NF >= 4 && $1 != "alias" && $1 != "flag" { print $1, $2, $3 }' > "$T/all"
while read -r name cmds kind; do
  [ "$name" = config ] && continue
  flag="--$(echo "$name" | tr _ -)"
  v=$(value_of "$name" "$kind")
  fv=${v%%|*}; rest=${v#*|}; jv=${rest%%|*}; pv=${rest#*|}
  for cmd in $(echo "$cmds" | tr , ' '); do
    case "$kind" in bool) set -- "$flag=$fv" ;; *) set -- "$flag" "$fv" ;; esac
    out=$("$CLI" "$cmd" "$@" --print-options) || fail "$cmd $* refused"
    echo "$out" | grep -qF "\"$name\": $pv" || fail "$cmd $flag $fv: --print-options shows $(echo "$out" | grep "\"$name\"")"
    if [ "$cmd" = train ]; then
      printf '{"%s": %s}\n' "$name" "$jv" > "$T/c.json"
      out=$("$CLI" train --config "$T/c.json" --print-options) || fail "--config {\"$name\": $jv} refused"
      echo "$out" | grep -qF "\"$name\": $pv" || fail "--config $name: --print-options shows $(echo "$out" | grep "\"$name\"")"
      # the '-' spelling of the key too
      printf '{"%s": %s}\n' "$(echo "$name" | tr _ -)" "$jv" > "$T/c.json"
      "$CLI" train --config "$T/c.json" --print-options | grep -qF "\"$name\": $pv" || fail "--config with '-': $name"
    fi
    n=$((n + 1))
  done
done < "$T/all"
echo "every option set as a flag (and a --config key for train): $n checks"

# bool switches: --name sets true, --no-name false
"$CLI" train --no-add-eos --print-options | grep -qF '"add_eos": false' || fail "--no-add-eos"
"$CLI" train --load-best-at-end --print-options | grep -qF '"load_best_at_end": true' || fail "--load-best-at-end"
"$CLI" train --skip-bad-records=true --print-options | grep -qF '"skip_bad_records": true' || fail "--x=true"
# the shorthands of the list
grep '^alias ' "$LIST" | while read -r _ short long; do
  key=$(echo "$long" | sed 's/^--//; s/=.*//; s/^no-//' | tr - _)
  case "$long" in
    --no-*) want=false ;;
    *=*) want="\"${long#*=}\"" ;;
    *) want=true ;;
  esac
  for cmd in dataset train; do
    "$CLI" "$cmd" "$short" --print-options | grep -qF "\"$key\": $want" || fail "$cmd $short is not $long"
  done
  grep -qF "alias $short" "$T/table.dataset" 2>/dev/null || "$CLI" dataset --list-options | grep -qF "alias $short" \
    || fail "$short is not in the table's shorthands"
done
# the defaults printed are lt_*_params_init's (a few that the CLI once restated)
out=$("$CLI" train --print-options)
for kv in '"batch_size": 2' '"grad_accum": 8' '"max_steps": 100' '"lr": 4.0000000000000003e-05' '"warmup_steps": 50' \
          '"max_seq_len": 2048' '"seed": 3407' '"lora_r": 16' '"lora_dropout": 0.100000001' '"scheduler": "cosine"' \
          '"optim": "adamw_8bit"' '"instruction_field": "instruction"' '"eval_every": 0' '"save_total_limit": 0'; do
  echo "$out" | grep -qF "$kv" || fail "default $kv not shown"
done
# refusals name the key
echo '{"instruction_fieldx": "q"}' > "$T/c.json"
"$CLI" train --config "$T/c.json" --print-options 2> "$T/err" && fail "an unknown key was accepted"
grep -q 'unknown option "instruction_fieldx"' "$T/err" || fail "unknown key: $(cat "$T/err")"
echo '{"show": 3}' > "$T/c.json"
"$CLI" train --config "$T/c.json" --print-options 2> "$T/err" && fail "a dataset-only key was accepted by train"
echo '{"skip_bad_records": "yes"}' > "$T/c.json"
"$CLI" train --config "$T/c.json" --print-options 2> "$T/err" && fail "a string for a bool was accepted"
grep -q '"skip_bad_records" must be true, false, 0 or 1' "$T/err" || fail "bad type: $(cat "$T/err")"
"$CLI" train --format csv --print-options 2> "$T/err" && fail "an unknown enum value was accepted"
grep -q "unknown value 'csv'" "$T/err" || fail "bad enum: $(cat "$T/err")"
"$CLI" dataset --batch-size 2 --print-options 2> /dev/null && fail "dataset accepted a train-only flag"
echo "test_option_names: ok"
