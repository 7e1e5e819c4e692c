#!/bin/bash
# llamacpp_greedy.sh - greedy parity between loratune and llama.cpp (built separately, never
# committed): loratune's merged checkpoint generates 16 greedy tokens on the CPU (fp32, no NF4);
# llama.cpp runs loratune's F16 and Q8_0 GGUF of the same model+adapter, and the F16 base GGUF
# with loratune's GGUF LoRA adapter (--lora); all texts must be equal. A control run of the
# base without the adapter must differ (else the adapter was not exercised).
# This is the end-to-end text check (llama.cpp's own tokenizer, sampler and detokenizer, as a
# user runs it); llamacpp_parity.sh / llamacpp_parity.py compare token ids with the logit
# margins, and loratune on the same quantized weights.
# usage: llamacpp_greedy.sh LLAMA_BIN_DIR MODEL_DIR ADAPTER_DIR WORK [prompt...]
# Exit 0 when all texts are equal, 1 when one differs, 77 (skip) without llama.cpp's binaries.
set -u
# the completion program: llama-completion (llama.cpp since its llama-cli became a chat client), else an
# older build's llama-cli (-no-cnv)
COMP=
[ $# -ge 4 ] && for c in llama-completion llama-cli; do [ -x "$1/$c" ] && { COMP=$1/$c; break; }; done
if [ $# -lt 4 ] || [ ! -x "$1/llama-simple" ] || [ -z "$COMP" ]; then
    echo "skip: needs LLAMA_BIN_DIR with llama-simple and llama-completion (or llama-cli) (usage: llamacpp_greedy.sh LLAMA_BIN_DIR MODEL_DIR ADAPTER_DIR WORK [prompt...])"
    exit 77
fi
LB=$1 M=$2 A=$3 W=$4; shift 4
L=${LORATUNE_CLI:-build/loratune}
[ -x "$L" ] || { echo "skip: no loratune command at $L (set LORATUNE_CLI)"; exit 77; }
mkdir -p "$W"
prompts=("$@"); [ ${#prompts[@]} -gt 0 ] || prompts=("Hello, my name is" "下面是一个问题：" "The capital of France")
$L export --model "$M" --adapter "$A" --format merged --overwrite --output "$W/merged" >/dev/null || exit 1
for q in f16 q8_0; do $L export --model "$M" --adapter "$A" --format gguf --quant $q --overwrite --no-modelfile --output "$W/$q.gguf" >/dev/null || exit 1; done
$L export --model "$M" --format gguf --quant f16 --overwrite --no-modelfile --output "$W/base-f16.gguf" >/dev/null || exit 1
$L export --model "$M" --adapter "$A" --format gguf-lora --overwrite --output "$W/lora.gguf" >/dev/null || exit 1
pass=0 fail=0 differs=0
for p in "${prompts[@]}"; do
  ref=$($L generate --model "$W/merged" --prompt "$p" --greedy --max-new-tokens 16 --device cpu --quant none 2>/dev/null)
  for q in f16 q8_0; do
    got=$("$LB/llama-simple" -m "$W/$q.gguf" -n 16 "$p" 2>/dev/null)
    if [ "$got" = "$ref" ]; then pass=$((pass+1)); echo "same  [$q] $p"; else fail=$((fail+1)); echo "DIFF  [$q] $p"; echo "  loratune: $ref"; echo "  llama.cpp: $got"; fi
  done
  got=$("$COMP" -m "$W/base-f16.gguf" --lora "$W/lora.gguf" -p "$p" -n 16 --temp 0 -no-cnv -t 2 2>/dev/null | sed -e 's/[[:space:]]*$//' | head -c 4096)
  if [ "$got" = "$(echo "$ref" | sed -e 's/[[:space:]]*$//')" ]; then pass=$((pass+1)); echo "same  [f16 + --lora] $p"; else fail=$((fail+1)); echo "DIFF  [f16 + --lora] $p"; echo "  llama.cpp: $got"; fi
  base=$("$LB/llama-simple" -m "$W/base-f16.gguf" -n 16 "$p" 2>/dev/null)
  [ "$base" != "$ref" ] && differs=$((differs+1))
done
echo "control: the adapter changed the base model's greedy text for $differs of ${#prompts[@]} prompts"
echo "$pass passed, $fail failed"
[ $fail = 0 ] && [ $differs -gt 0 ]
