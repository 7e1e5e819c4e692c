#!/usr/bin/env python3
"""llamacpp_random_adapter.py - writes a random PEFT LoRA adapter (adapter_config.json +
adapter_model.safetensors, fp32) for any Qwen2 checkpoint folder, for the llama.cpp parity
check on models too large for a quick CPU training run (the 1.5B shape). Both A and B are
random (PEFT leaves B at zero, which would make the merge a no-op).

usage: llamacpp_random_adapter.py MODEL_DIR OUT_DIR [--rank 8] [--alpha 16] [--b-std 0.01] [--seed 0]
"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--b-std", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    c = json.load(open(os.path.join(a.model, "config.json")))
    H, I, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    hd = c.get("head_dim") or H // c["num_attention_heads"]
    KV = c["num_key_value_heads"] * hd
    Q = c["num_attention_heads"] * hd
    shapes = {"self_attn.q_proj": (Q, H), "self_attn.k_proj": (KV, H), "self_attn.v_proj": (KV, H),
              "self_attn.o_proj": (H, Q), "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H),
              "mlp.down_proj": (H, I)}
    rng = np.random.default_rng(a.seed)
    t = {}
    for layer in range(L):
        for m, (o, i) in shapes.items():
            k = "base_model.model.model.layers.%d.%s" % (layer, m)
            t[k + ".lora_A.weight"] = (rng.standard_normal((a.rank, i), dtype=np.float32) / np.sqrt(i)).astype(np.float32)
            t[k + ".lora_B.weight"] = (rng.standard_normal((o, a.rank), dtype=np.float32) * a.b_std).astype(np.float32)
    os.makedirs(a.out, exist_ok=True)
    save_file(t, os.path.join(a.out, "adapter_model.safetensors"))
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": a.rank, "lora_alpha": a.alpha,
           "lora_dropout": 0.0, "bias": "none", "use_rslora": False, "fan_in_fan_out": False,
           "base_model_name_or_path": os.path.abspath(a.model),
           "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
    json.dump(cfg, open(os.path.join(a.out, "adapter_config.json"), "w"), indent=2)


if __name__ == "__main__":
    main()
