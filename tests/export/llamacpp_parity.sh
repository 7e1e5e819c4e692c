#!/bin/bash
# llamacpp_parity.sh - the llama.cpp greedy-parity check of issue 7 in one command: builds the
# models, then runs llamacpp_parity.py on each and prints one table (model, format, reference,
# prompt, tokens equal /16, first difference, margins there, smallest margin, the two engines'
# largest logit difference).
#   tiny:    the export tests' tiny Qwen2 fixture (make_tiny_model.py: 8 layers, hidden 256,
#            the real 151,936-token vocabulary) with its random adapter;
#   trained: a confident model: the tiny fixture's shape with an untied head of std 0.1
#            (make_tiny_model.py --untied --head-std 0.1; with the tied 0.02 embedding no
#            hidden state can give a logit above ~5, so the loss cannot fall below ~7) and a
#            LoRA adapter (r 16, all 7 projections) trained by `loratune train` on the CPU to
#            memorize 3 ruozhiba records (memorize_records.py; loss ~1e-3 after ~75 steps,
#            ~1 min), prompted with those records' questions: greedy decoding follows memorized
#            text with top-1/top-2 margins of ~12 logits instead of the random models' ~0.001;
#   1.5b:    a random model of the Qwen2-1.5B shape (assets/qwen2-1.5b/config.json, init-random
#            seed 1) with a random rank-8 adapter (~10 min of 2 cores, 24 GB RAM is plenty);
#   1.5b-trained: the same base with a rank-8 adapter (all 7 projections) that memorized the
#            same 3 records: trained here on the CPU (12 steps, lr 1e-3: loss 0.011; 10-20 min
#            of 2 shared cores, 9.3 GB RAM), or given as ADAPTER_1P5B=DIR or the stage word
#            1.5b-trained=DIR, e.g. what tests/gpu/train_confident_1p5b.sh trained on a GPU on
#            the same base (regenerated here bit-identical: init-random is counter-based; the
#            adapter's base.sha256 is checked, its records.json gives the prompts).
# llama.cpp is built separately, never committed (any checkout with build/bin/libllama.so, or a static
# -DBUILD_SHARED_LIBS=OFF build in build/: build/src/libllama.a).
#
# usage: tests/export/llamacpp_parity.sh LLAMA_CPP_DIR [WORK_DIR] [tiny] [trained] [1.5b]
#            [1.5b-trained[=ADAPTER_DIR]]
#   (default: tiny trained). Env: LORATUNE_CLI, LORATUNE_LIBRARY (default build/), THREADS (2),
#   TRAIN_STEPS (default 150), TRAIN_LR (default 3e-3), TRAIN15_STEPS (12), TRAIN15_LR (1e-3),
#   ADAPTER_1P5B, Q15_CONFIG (the 1.5B stages' config, default assets/qwen2-1.5b/config.json;
#   a smaller one smoke-tests the flow).
# Exit 0 when every required row holds, 1 when one does not, 77 without llama.cpp / numpy / gguf.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LC=${1:-${LLAMA_CPP_DIR:-}}
if [ -z "$LC" ] || [ ! -e "$LC/build/bin/libllama.so" ] && [ ! -e "$LC/bin/libllama.so" ] && [ ! -e "$LC/build/src/libllama.a" ]; then
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

# the Qwen2-1.5B-shaped random base, as tests/gpu/train_confident_1p5b.sh makes it (same config,
# seed 1; init-random gives the same bytes for any thread count and machine)
make_q15() {
    [ -f "$WORK/q15/model.safetensors" ] && return 0
    cp "${Q15_CONFIG:-$ROOT/assets/qwen2-1.5b/config.json}" "$WORK/q15.json"
    nice "$LORATUNE_CLI" init-random --config "$WORK/q15.json" --output "$WORK/q15" --seed 1 \
        --tokenizer "$ROOT/assets/qwen2-tokenizer" --threads $T >/dev/null
}

for stage in $STAGES; do
    case $stage in
    tiny)
        [ -d "$WORK/tiny" ] || python3 "$HERE/make_tiny_model.py" "$WORK/tiny" --adapter "$WORK/tiny-lora" >/dev/null || exit 1
        $P "$WORK/run-tiny" --name tiny --model "$WORK/tiny" --adapter "$WORK/tiny-lora" || rc=1 ;;
    trained)
        # the confident fixture: same shape as tiny, untied head of std 0.1 (see the header)
        [ -d "$WORK/tiny-head" ] || python3 "$HERE/make_tiny_model.py" "$WORK/tiny-head" --untied --head-std 0.1 \
            >/dev/null || exit 1
        python3 "$HERE/memorize_records.py" "$WORK/memorize3.json" || exit 1
        if [ ! -f "$WORK/tiny-head-trained/adapter_model.safetensors" ]; then
            start=$(date +%s)
            nice "$LORATUNE_CLI" train --model "$WORK/tiny-head" --data "$WORK/memorize3.json" \
                --template $'{instruction}\n{output}' --output "$WORK/tiny-head-trained" --device cpu --quant none \
                --optim adamw_torch --lr ${TRAIN_LR:-3e-3} --max-steps ${TRAIN_STEPS:-150} --batch-size 3 \
                --grad-accum 1 --warmup-steps 10 --scheduler cosine --lora-r 16 --lora-alpha 32 --lora-dropout 0 \
                --max-grad-norm 1 --gen-instruction "" --threads $T --log-every 25 \
                >"$WORK/train.log" 2>&1 || { tail -5 "$WORK/train.log"; exit 1; }
            echo "trained the tiny-head adapter in $(( $(date +%s) - start )) s: $(grep -o 'final loss [0-9.]*' "$WORK/train.log")"
        fi
        # each prompt is a question and the newline the template puts before the answer
        prompts=()
        while IFS= read -r q; do prompts+=(--prompt "$q"$'\n'); done < <(python3 "$HERE/memorize_records.py" --prompts "$WORK/memorize3.json")
        $P "$WORK/run-trained" --name trained --model "$WORK/tiny-head" --adapter "$WORK/tiny-head-trained" "${prompts[@]}" || rc=1 ;;
    1.5b|1p5b)
        make_q15 || exit 1
        [ -f "$WORK/q15-lora/adapter_model.safetensors" ] || python3 "$HERE/llamacpp_random_adapter.py" "$WORK/q15" "$WORK/q15-lora" || exit 1
        $P "$WORK/run-1p5b" --name 1.5B --model "$WORK/q15" --adapter "$WORK/q15-lora" || rc=1 ;;
    1.5b-trained*|1p5b-trained*)
        AD=${stage#*=}; [ "$AD" = "$stage" ] && AD=${ADAPTER_1P5B:-}
        make_q15 || exit 1
        if [ -z "$AD" ]; then
            # no adapter given: memorize the records here on the CPU (fp32; loss 12.2 -> 0.011 in 12
            # steps at lr 1e-3, ~40-90 s a step on 2 shared cores, 9.3 GB RAM)
            AD=$WORK/q15-trained
            python3 "$HERE/memorize_records.py" "$WORK/memorize3.json" || exit 1
            if [ ! -f "$AD/adapter_model.safetensors" ]; then
                start=$(date +%s)
                nice "$LORATUNE_CLI" train --model "$WORK/q15" --data "$WORK/memorize3.json" \
                    --template $'{instruction}\n{output}' --output "$AD" --device cpu --quant none --optim adamw_torch \
                    --lr ${TRAIN15_LR:-1e-3} --max-steps ${TRAIN15_STEPS:-12} --batch-size 3 --grad-accum 1 \
                    --warmup-steps 2 --scheduler constant --lora-r 8 --lora-alpha 16 --lora-dropout 0 \
                    --max-grad-norm 1 --gen-instruction "" --threads $T --log-every 1 \
                    >"$WORK/train15.log" 2>&1 || { tail -5 "$WORK/train15.log"; exit 1; }
                cp "$WORK/train15.log" "$AD/train.log"; cp "$WORK/memorize3.json" "$AD/records.json"
                echo "trained the 1.5B adapter on the CPU in $(( $(date +%s) - start )) s"
            fi
        fi
        [ -f "$AD/adapter_model.safetensors" ] || {
            echo "1.5b-trained: no adapter_model.safetensors in $AD (1.5b-trained=DIR or ADAPTER_1P5B=DIR: the \$OUT/adapter-1p5b of tests/gpu/train_confident_1p5b.sh)"; exit 2; }
        if [ -f "$AD/base.sha256" ]; then
            want=$(cut -d' ' -f1 "$AD/base.sha256"); have=$(sha256sum "$WORK/q15/model.safetensors" | cut -d' ' -f1)
            if [ "$want" = "$have" ]; then echo "1.5b-trained: regenerated base == the adapter's base (sha256 $have)"
            else echo "1.5b-trained: WARNING the regenerated base differs from the one the adapter was trained on ($have vs $want)"; fi
        fi
        [ -f "$AD/train.log" ] && echo "1.5b-trained adapter: $(grep -o 'final loss [0-9.]*' "$AD/train.log")"
        recs="$AD/records.json"; [ -f "$recs" ] || { python3 "$HERE/memorize_records.py" "$WORK/memorize3.json" || exit 1; recs="$WORK/memorize3.json"; }
        prompts=()
        while IFS= read -r q; do prompts+=(--prompt "$q"$'\n'); done < <(python3 "$HERE/memorize_records.py" --prompts "$recs")
        $P "$WORK/run-1p5b-trained" --name 1.5B-tr --model "$WORK/q15" --adapter "$AD" "${prompts[@]}" || rc=1 ;;
    *) echo "unknown stage '$stage' (tiny, trained, 1.5b, 1.5b-trained[=DIR])"; exit 2 ;;
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
