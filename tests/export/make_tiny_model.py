#!/usr/bin/env python3
"""make_tiny_model.py - writes a small random Qwen2 checkpoint (config.json, model.safetensors,
generation_config.json, the Qwen2 tokenizer files from assets/qwen2-tokenizer) and, with
--adapter, a random PEFT LoRA adapter beside it, for the export tests.

The vocabulary is the Qwen2 tokenizer's (151936 ids) so that llama.cpp loads the tokenizer.
Hidden sizes default to multiples of 256 so that the K-quants apply without fallbacks;
--hidden 64 exercises the fallbacks (Q5_0 / Q8_0).

usage: make_tiny_model.py OUT_DIR [--hidden 256] [--inter 512] [--layers 8] [--heads 4]
                          [--kv-heads 2] [--dtype bf16|f32] [--untied] [--adapter DIR]
                          [--rank 8] [--alpha 16] [--seed 0] [--head-std 0.02]

--untied --head-std 0.1 gives a head whose logits can reach ~25 for a hidden state aligned with a
row (sqrt(hidden) x |row|), far above log(vocab) ~ 12: LoRA on the frozen random base can then
memorize text to a loss near 0 with large top-1/top-2 margins (llamacpp_parity.sh's 'trained'
fixture). With the tied 0.02 embedding the best reachable logit is ~5 and the loss stays above ~7.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np


def bf16_bits(x):
    """float32 -> bfloat16 bits, round to nearest even (torch's rounding)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--inter", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--small-vocab", type=int, default=0,
                    help="cut the tokenizer to its first N byte-level tokens (+ the 3 special ones) and "
                         "vocab_size to N+24: a quick-to-read GGUF for the Python tests")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--adapter")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--head-std", type=float, default=0.02, help="std of lm_head.weight (with --untied)")
    a = ap.parse_args()
    from safetensors.numpy import save_file

    root = os.environ.get("LT_REPO_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
    tokdir = os.path.join(root, "assets", "qwen2-tokenizer")
    rng = np.random.default_rng(a.seed)
    if a.small_vocab:
        a.vocab = a.small_vocab + 24
    H, I, L, V = a.hidden, a.inter, a.layers, a.vocab
    special = 151643 if not a.small_vocab else a.small_vocab
    hd = H // a.heads
    KV = a.kv_heads * hd
    os.makedirs(a.out, exist_ok=True)
    cfg = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": H,
        "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads, "vocab_size": V, "max_position_embeddings": 4096,
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": not a.untied,
        "torch_dtype": "bfloat16" if a.dtype == "bf16" else "float32", "bos_token_id": special,
        "eos_token_id": special + 2, "hidden_act": "silu", "attention_dropout": 0.0, "use_cache": True,
        "sliding_window": 4096, "max_window_layers": L, "use_sliding_window": False,
        "initializer_range": 0.02,
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": special, "eos_token_id": [special + 2, special], "do_sample": False}, f, indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tokdir, name), os.path.join(a.out, name))
    if a.small_vocab:
        cut_tokenizer(os.path.join(a.out, "tokenizer.json"), a.small_vocab)

    def rnd(*shape, std=0.02):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    t = {"model.embed_tokens.weight": rnd(V, H), "model.norm.weight": 1 + rnd(H, std=0.1)}
    dims = {"q_proj": (H, H), "k_proj": (KV, H), "v_proj": (KV, H), "o_proj": (H, H),
            "gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}
    parent = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
              "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
    for l in range(L):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = 1 + rnd(H, std=0.1)
        t[p + "post_attention_layernorm.weight"] = 1 + rnd(H, std=0.1)
        for m, (o, i) in dims.items():
            t[f"{p}{parent[m]}.{m}.weight"] = rnd(o, i)
            if m in ("q_proj", "k_proj", "v_proj"):
                t[f"{p}{parent[m]}.{m}.bias"] = rnd(o, std=0.1)
    if a.untied:
        t["lm_head.weight"] = rnd(V, H, std=a.head_std)
    if a.dtype == "bf16":
        # safetensors.numpy has no bfloat16: write the bits as a raw file ourselves
        write_bf16(os.path.join(a.out, "model.safetensors"), t)
    else:
        save_file(t, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})

    if a.adapter:
        os.makedirs(a.adapter, exist_ok=True)
        r = a.rank
        ad = {}
        for l in range(L):
            for m, (o, i) in dims.items():
                k = f"base_model.model.model.layers.{l}.{parent[m]}.{m}"
                ad[k + ".lora_A.weight"] = rnd(r, i, std=1.0 / np.sqrt(i))
                ad[k + ".lora_B.weight"] = rnd(o, r, std=0.01)
        save_file(ad, os.path.join(a.adapter, "adapter_model.safetensors"), metadata={"format": "pt"})
        acfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": a.alpha,
                "lora_dropout": 0.0, "target_modules": list(dims.keys()), "bias": "none",
                "use_rslora": False, "fan_in_fan_out": False, "inference_mode": True,
                "base_model_name_or_path": a.out}
        with open(os.path.join(a.adapter, "adapter_config.json"), "w") as f:
            json.dump(acfg, f, indent=2, sort_keys=True)


def cut_tokenizer(path, n):
    """Keeps tokens 0..n-1, the merges among them, and the added tokens renumbered from n."""
    with open(path, encoding="utf-8") as f:
        tj = json.load(f)
    vocab = {k: v for k, v in tj["model"]["vocab"].items() if v < n}
    merges = []
    for m in tj["model"]["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in vocab and b in vocab and (a + b) in vocab:
            merges.append(m)
    tj["model"]["vocab"] = vocab
    tj["model"]["merges"] = merges
    for k, t in enumerate(tj["added_tokens"]):
        t["id"] = n + k
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)


def write_bf16(path, tensors):
    """A safetensors file of BF16 tensors (header padded to 8 bytes, {"format":"pt"})."""
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    blobs = []
    for name in sorted(tensors):
        x = tensors[name]
        b = bf16_bits(x).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(x.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
