#!/bin/bash
# llamacpp_parity.sh - the llama.cpp greedy-parity check of issue 7 in one command: builds the
# models, then runs llamacpp_parity.py on each and prints one table (model, format, reference,
# prompt, tokens equal /16, first difference, margins there, smallest margin, the two engines'
# largest logit difference).
#   tiny:    the export tests' tiny Qwen2 fixture (make_tiny_model.py: 8 layers, hidden 256,
#            the real 151,936-token vocabulary) with its random adapter;
#   trained: the same fixture with a LoRA adapter trained by `loratune train` on the CPU
#            (6 ruozhiba records, memorized), prompted with those records' questions, so that
#            greedy decoding follows learned text instead of noise;
#   1.5b:    a random model of the Qwen2-1.5B shape (tests/gpu/verify_1p5b.sh's config) with a
#            random rank-8 adapter (~10 min of 2 cores, 24 GB RAM is plenty; not run by default).
# llama.cpp is built separately, never committed (any checkout with build/bin/libllama.so).
#
# usage: tests/export/llamacpp_parity.sh LLAMA_CPP_DIR [WORK_DIR] [tiny] [trained] [1.5b]
#   (default: tiny trained). Env: LORATUNE_CLI, LORATUNE_LIBRARY (default build/), THREADS (2),
#   TRAIN_STEPS (default 300), TRAIN_LR (default 1e-2).
# Exit 0 when every required row holds, 1 when one does not, 77 without llama.cpp / numpy / gguf.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LC=${1:-${LLAMA_CPP_DIR:-}}
if [ -z "$LC" ] || [ ! -e "$LC/build/bin/libllama.so" ] && [ ! -e "$LC/bin/libllama.so" ]; then
    echo "skip: no llama.cpp build given (usage: llamacpp_parity.sh LLAMA_CPP_DIR [WORK_DIR] [tiny|trained|1.5b]...)"
    exit 77
fi
WORK=${2:-$(mktemp -d /tmp/lt-llamacpp-parity.XXXXXX)}
shift $(( $# >= 2 ? 2 : $# ))
STAGES=${*:-tiny trained}
export LORATUNE_CLI=${LORATUNE_CLI:-$ROOT/build/loratune}
export LORATUNE_LIBRARY=${LORATUNE_LIBRARY:-$(dirname "$LORATUNE_CLI")/libloratune.so}
[ -x "$LORATUNE_CLI" ] || { echo "skip: no loratune command at $LORATUNE_CLI (set LORATUNE_CLI)"; exit 77; }
python3 -c "import numpy, gguf, safetensors" 2>/dev/null || { echo "skip: needs python3 with numpy, gguf, safetensors"; exit 77; }
T=${THREADS:-2}
mkdir -p "$WORK"
: > "$WORK/rows.jsonl"
rc=0
P="nice python3 $HERE/llamacpp_parity.py --llama $LC --threads $T --json $WORK/rows.jsonl --work"

for stage in $STAGES; do
    case $stage in
    tiny)
        [ -d "$WORK/tiny" ] || python3 "$HERE/make_tiny_model.py" "$WORK/tiny" --adapter "$WORK/tiny-lora" >/dev/null || exit 1
        $P "$WORK/run-tiny" --name tiny --model "$WORK/tiny" --adapter "$WORK/tiny-lora" || rc=1 ;;
    trained)
        [ -d "$WORK/tiny" ] || python3 "$HERE/make_tiny_model.py" "$WORK/tiny" --adapter "$WORK/tiny-lora" >/dev/null || exit 1
        # six ruozhiba records with 30-40 character answers, as "question\nanswer"
        python3 - "$ROOT/assets/ruozhiba/ruozhiba_qa.json" "$WORK/train6.json" <<'PY' || exit 1
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
c = [r for r in d if not r["input"] and 30 <= len(r["output"]) <= 40 and len(r["instruction"]) <= 15][:6]
json.dump(c, open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False)
PY
        if [ ! -f "$WORK/tiny-trained/adapter_model.safetensors" ]; then
            start=$(date +%s)
            nice "$LORATUNE_CLI" train --model "$WORK/tiny" --data "$WORK/train6.json" --template $'{instruction}\n{output}' \
                --output "$WORK/tiny-trained" --device cpu --quant none --optim adamw_torch --lr ${TRAIN_LR:-1e-2} \
                --max-steps ${TRAIN_STEPS:-300} --batch-size 6 --grad-accum 1 --warmup-steps 10 --scheduler constant \
                --lora-dropout 0 --max-grad-norm 0 --gen-instruction "" --threads $T --log-every 50 \
                >"$WORK/train.log" 2>&1 || { tail -5 "$WORK/train.log"; exit 1; }
            echo "trained the tiny adapter in $(( $(date +%s) - start )) s: $(grep -o 'final loss [0-9.]*' "$WORK/train.log")"
        fi
        # each prompt is a question and the newline the template puts before the answer
        prompts=()
        while IFS= read -r q; do prompts+=(--prompt "$q"$'\n'); done < <(python3 -c "
import json
for r in json.load(open('$WORK/train6.json', encoding='utf-8'))[:3]: print(r['instruction'].strip())")
        $P "$WORK/run-trained" --name trained --model "$WORK/tiny" --adapter "$WORK/tiny-trained" "${prompts[@]}" || rc=1 ;;
    1.5b|1p5b)
        if [ ! -f "$WORK/q15/model.safetensors" ]; then
            cp "$ROOT/assets/qwen2-1.5b/config.json" "$WORK/q15.json"
            nice "$LORATUNE_CLI" init-random --config "$WORK/q15.json" --output "$WORK/q15" --seed 1 \
                --tokenizer "$ROOT/assets/qwen2-tokenizer" --threads $T >/dev/null || exit 1
            python3 "$HERE/llamacpp_random_adapter.py" "$WORK/q15" "$WORK/q15-lora" || exit 1
        fi
        $P "$WORK/run-1p5b" --name 1.5B --model "$WORK/q15" --adapter "$WORK/q15-lora" || rc=1 ;;
    *) echo "unknown stage '$stage' (tiny, trained, 1.5b)"; exit 2 ;;
    esac
done
echo
echo "summary ($WORK/rows.jsonl):"
python3 - "$WORK/rows.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("%-8s %-9s %-10s %-8s %-10s %s" % ("model", "format", "reference", "prompts", "tokens", "min margin / max|dlogit|"))
seen = {}
for r in rows:
    seen.setdefault((r["model"], r["format"], r["reference"]), []).append(r)
for (m, f, ref), rs in seen.items():
    print("%-8s %-9s %-10s %d/%-6d %3d/%-6d %.4f / %.4f" % (
        m, f, ref, sum(r["equal"] == r["of"] for r in rs), len(rs), sum(r["equal"] for r in rs),
        sum(r["of"] for r in rs), min(r["min_lt_margin"] for r in rs), max(r["max_abs_logit_diff"] for r in rs)))
PY
echo "llama.cpp: ${LLAMA_CPP_COMMIT:-$(git -C "$LC" rev-parse HEAD 2>/dev/null || echo "commit unknown (not a git checkout; set LLAMA_CPP_COMMIT)")}"
exit $rc
