#!/bin/sh
# llamacpp_check.sh - checks loratune's GGUF export against a llama.cpp build:
#   1. llama.cpp loads loratune's F16, Q8_0 and Q4_K_M files of a tiny Qwen2 (with the real
#      Qwen2 vocabulary so that its tokenizer loads) and generates a few tokens;
#   2. llama-quantize run on loratune's BF16 (and F16) GGUF gives the same bytes as loratune's
#      own Q4_K_M / Q4_K_S / Q5_K_M / Q6_K / Q8_0, tensor by tensor (gguf_compare.py);
#   3. llama-cli applies loratune's GGUF LoRA adapter on the exported base model.
# The same is done for a model whose rows are not multiples of 256 (the fallback types).
#
# usage: tests/export/llamacpp_check.sh LLAMA_CPP_BUILD_DIR [WORK_DIR]
#   LLAMA_CPP_BUILD_DIR holds bin/llama-quantize, bin/llama-simple (and bin/llama-cli);
#   LORATUNE_CLI (default build/loratune) is the loratune command. Needs python3 + numpy + gguf.
# Exit 0 when every check holds, 77 (skip) without llama.cpp, the loratune command or numpy/gguf.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LB=${1:-${LLAMA_CPP_BUILD_DIR:-}}
# CI has no llama.cpp: skip (77) rather than fail
[ -n "$LB" ] || { echo "skip: no llama.cpp build given (usage: llamacpp_check.sh LLAMA_CPP_BUILD_DIR [WORK_DIR])"; exit 77; }
BIN=$LB/bin
[ -x "$BIN/llama-quantize" ] || BIN=$LB
CLI=${LORATUNE_CLI:-$ROOT/build/loratune}
WORK=${2:-$(mktemp -d /tmp/lt-llamacpp.XXXXXX)}
export LT_REPO_ROOT="$ROOT"
mkdir -p "$WORK"
fails=0
say() { printf '%s\n' "$*"; }
bad() { say "FAIL: $*"; fails=$((fails + 1)); }

for tool in llama-quantize llama-simple; do
    [ -x "$BIN/$tool" ] || { say "skip: no $BIN/$tool (llama.cpp not built there)"; exit 77; }
done
[ -x "$CLI" ] || { say "skip: no loratune command $CLI (set LORATUNE_CLI)"; exit 77; }
python3 -c "import numpy, gguf" 2>/dev/null || { say "skip: needs python3 with numpy and gguf"; exit 77; }

# name hidden inter layers heads kv-heads extra-flags
for spec in "tiny 256 512 8 4 2" "fallback 96 200 3 2 1 --untied"; do
    set -- $spec
    name=$1; M=$WORK/$name; L=$WORK/$name-lora
    say "== $name model (hidden $2, intermediate $3, $4 layers)"
    python3 "$HERE/make_tiny_model.py" "$M" --hidden "$2" --inter "$3" --layers "$4" --heads "$5" \
        --kv-heads "$6" ${7:-} --adapter "$L" >/dev/null || { bad "make_tiny_model $name"; continue; }
    for q in f16 bf16 q8_0 q4_k_m q4_k_s q5_k_m q6_k; do
        "$CLI" export --model "$M" --adapter "$L" --format gguf --quant $q --output "$WORK/$name-$q.gguf" \
            --overwrite --no-modelfile >/dev/null 2>"$WORK/err" || { bad "export $name $q: $(cat "$WORK/err")"; }
    done
    # 1. llama.cpp loads and runs the files
    for q in f16 q8_0 q4_k_m; do
        if "$BIN/llama-simple" -m "$WORK/$name-$q.gguf" -n 4 "Hello" >"$WORK/run.log" 2>&1; then
            say "load+generate $name-$q: ok ($(grep -o 'decoded [0-9]* tokens' "$WORK/run.log"))"
        else
            bad "llama-simple on $name-$q.gguf: $(tail -3 "$WORK/run.log")"
        fi
    done
    # 2. llama-quantize parity
    for pair in q4_k_m:Q4_K_M q4_k_s:Q4_K_S q5_k_m:Q5_K_M q6_k:Q6_K q8_0:Q8_0; do
        q=${pair%%:*}; Q=${pair##*:}
        for src in bf16 f16; do
            if "$BIN/llama-quantize" "$WORK/$name-$src.gguf" "$WORK/lq-$name-$q-$src.gguf" "$Q" 2 \
                >"$WORK/q.log" 2>&1; then
                res=$(python3 "$HERE/gguf_compare.py" "$WORK/$name-$q.gguf" "$WORK/lq-$name-$q-$src.gguf")
                rc=$?
                say "llama-quantize $Q from $src vs loratune $q: $(printf '%s\n' "$res" | tail -1)"
                # bf16 -> llama-quantize is the exact pipeline; from f16 values below 2^-14 lose bits
                [ $rc -eq 0 ] || [ $src = f16 ] || bad "$name $q differs from llama-quantize ($src)"
            elif grep -q "not divisible" "$WORK/q.log" && [ $Q = Q8_0 ]; then
                say "llama-quantize $Q from $src refuses rows not divisible by 32 (loratune writes F16 there, as convert_hf_to_gguf does)"
            else
                bad "llama-quantize $name $Q from $src: $(tail -2 "$WORK/q.log")"
            fi
        done
    done
    # 3. the GGUF LoRA adapter on the unmerged base
    # llama-completion (llama.cpp since its llama-cli became a chat client), else an older llama-cli
    COMP=$BIN/llama-completion
    [ -x "$COMP" ] || COMP=$BIN/llama-cli
    if [ -x "$COMP" ]; then
        "$CLI" export --model "$M" --format gguf --quant f16 --output "$WORK/$name-base.gguf" --overwrite \
            --no-modelfile >/dev/null 2>&1 &&
        "$CLI" export --model "$M" --adapter "$L" --format gguf-lora --output "$WORK/$name-lora.gguf" \
            --overwrite >/dev/null 2>&1 || bad "export base / lora $name"
        # -v: newer builds print libllama's "loaded N tensors from lora file" only when verbose
        if "$COMP" -m "$WORK/$name-base.gguf" --lora "$WORK/$name-lora.gguf" -p "Hello" -n 4 -no-cnv \
            --temp 0 -t 2 -v >"$WORK/lora.log" 2>&1 && grep -q "tensors from lora file" "$WORK/lora.log"; then
            say "$(basename "$COMP") --lora $name-lora.gguf: ok ($(grep -o 'loaded [0-9]* tensors from lora file' "$WORK/lora.log"))"
        else
            bad "$(basename "$COMP") --lora: $(grep -i 'error\|fail' "$WORK/lora.log" | head -3)"
        fi
    fi
done
say "work dir: $WORK"
if [ $fails -eq 0 ]; then say "all llama.cpp checks passed"; else say "$fails llama.cpp check(s) failed"; fi
[ $fails -eq 0 ]
