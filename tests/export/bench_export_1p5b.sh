#!/bin/sh
# bench_export_1p5b.sh - times `loratune export --format gguf --quant q4_k_m` of a random
# Qwen2-1.5B-shaped bf16 checkpoint (3 GB, written by `loratune init-random` into WORK) with a
# random rank-16 LoRA adapter on all seven projections. Prints wall and CPU seconds.
# Not part of ctest (it needs ~10 GB of memory and minutes).
#
# usage: tests/export/bench_export_1p5b.sh [WORK_DIR] [QUANT]
#   LORATUNE_CLI (default build/loratune). Needs python3 + numpy + safetensors for the adapter.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CLI=${LORATUNE_CLI:-$ROOT/build/loratune}
WORK=${1:-/tmp/lt-bench-export}
QUANT=${2:-q4_k_m}
mkdir -p "$WORK"
cat >"$WORK/config.json" <<'EOF'
{"architectures":["Qwen2ForCausalLM"],"attention_dropout":0.0,"bos_token_id":151643,"eos_token_id":151645,
 "hidden_act":"silu","hidden_size":1536,"initializer_range":0.02,"intermediate_size":8960,
 "max_position_embeddings":32768,"max_window_layers":28,"model_type":"qwen2","num_attention_heads":12,
 "num_hidden_layers":28,"num_key_value_heads":2,"rms_norm_eps":1e-06,"rope_theta":1000000.0,
 "sliding_window":32768,"tie_word_embeddings":true,"torch_dtype":"bfloat16","use_cache":true,
 "use_sliding_window":false,"vocab_size":151936}
EOF
[ -f "$WORK/model/model.safetensors" ] ||
    "$CLI" init-random --config "$WORK/config.json" --output "$WORK/model" --tokenizer "$ROOT/assets/qwen2-tokenizer"
[ -f "$WORK/lora/adapter_model.safetensors" ] || python3 - "$WORK/lora" <<'EOF'
import json, os, sys
import numpy as np
from safetensors.numpy import save_file
H, I, L, KV, r = 1536, 8960, 28, 256, 16
dims = {"q_proj": (H, H), "k_proj": (KV, H), "v_proj": (KV, H), "o_proj": (H, H),
        "gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}
rng = np.random.default_rng(1)
ad = {}
for l in range(L):
    for m, (o, i) in dims.items():
        k = f"base_model.model.model.layers.{l}.{'self_attn' if m[0] in 'qkvo' else 'mlp'}.{m}"
        ad[k + ".lora_A.weight"] = rng.standard_normal((r, i), dtype=np.float32) / np.float32(np.sqrt(i))
        ad[k + ".lora_B.weight"] = rng.standard_normal((o, r), dtype=np.float32) * np.float32(0.01)
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
save_file(ad, d + "/adapter_model.safetensors", metadata={"format": "pt"})
json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 32, "lora_dropout": 0.0,
           "target_modules": list(dims), "bias": "none", "use_rslora": False}, open(d + "/adapter_config.json", "w"))
EOF
start=$(date +%s.%N)
/usr/bin/time -f "cpu: %U s user + %S s sys, max RSS %M KB" "$CLI" export --model "$WORK/model" --adapter "$WORK/lora" \
    --format gguf --quant "$QUANT" --output "$WORK/out/model-$QUANT.gguf" --overwrite
end=$(date +%s.%N)
echo "export $QUANT of the 1.5B-shaped model: $(echo "$end - $start" | bc) s wall on $(nproc) cores" \
     "(load average $(cut -d' ' -f1 /proc/loadavg))"
ls -l "$WORK/out/model-$QUANT.gguf"
