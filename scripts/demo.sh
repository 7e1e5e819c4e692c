#!/usr/bin/env bash
# The main job on the embedded default: a small random Qwen2 model (assets/tiny-qwen2/config.json
# with the real Qwen2 tokenizer) and the bundled ruozhiba data, through the notebook's recipe:
# generate before, LoRA train (r16 a32 dropout .1, 7 targets, 2x8, lr 4e-5, warmup, cosine,
# 8-bit AdamW, wd .01, seed 3407), generate after, save the adapter, export GGUF q4_k_m +
# Ollama Modelfile. Everything lands in $OUT (default demo-out/).
#   STEPS=100 DEVICE=cuda bash scripts/demo.sh    # the notebook's 100 steps on a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target loratune_cli loratune
LT=build/loratune
OUT=${OUT:-demo-out}
DEVICE=${DEVICE:-auto}
STEPS=${STEPS:-12}
WARMUP=${WARMUP:-4}
mkdir -p "$OUT"
if [ ! -f "$OUT/tiny-qwen2/model.safetensors" ]; then
  "$LT" init-random --config assets/tiny-qwen2/config.json --output "$OUT/tiny-qwen2" --seed 3407 \
        --tokenizer assets/qwen2-tokenizer
fi
"$LT" train --model "$OUT/tiny-qwen2" --data assets/ruozhiba/ruozhiba_qa.json --output "$OUT/lora_model" \
      --max-steps "$STEPS" --warmup-steps "$WARMUP" --device "$DEVICE" --max-seq-len 512 --overwrite
"$LT" export --model "$OUT/tiny-qwen2" --adapter "$OUT/lora_model" --format gguf --quant q4_k_m \
      --overwrite --output "$OUT/model-q4_k_m.gguf"
echo
echo "done: adapter in $OUT/lora_model (PEFT format), loss curve $OUT/lora_model/loss.svg,"
echo "      GGUF $OUT/model-q4_k_m.gguf with its Ollama Modelfile beside it."
echo "      Try: ollama create demo -f $OUT/Modelfile && ollama run demo"
