#!/usr/bin/env python3
"""families_models.py - the real-shaped random models of issue 18's GPU checks, made with
transformers (bf16 safetensors, the bundled Qwen2 tokenizer copied in so that the step-0 check's
records tokenize): Llama-3.2-1B (llama3 rope scaling), Qwen3-1.7B (q/k norms) and Gemma-2-2B
(soft-caps, sliding layers) with their published shapes. The vocabulary is the tokenizer's
(151936) wherever the real one is smaller, so that its ids fit.

usage: python3 tests/gpu/families_models.py OUT_DIR [name ...]   (names: llama32_1b qwen3_1p7b gemma2_2b)
       python3 tests/gpu/families_models.py --peer OUT.json MODEL_DIR   (the transformers + PEFT bf16 peer
       of that model: tokens/s at 2x512, 2x2048, 16x512 with checkpointing, the format of
       bench/hf_peft_lora_baseline.py)
"""
import json
import os
import shutil
import sys
import time

import torch
import transformers as T

ROOT = os.environ.get("LT_REPO_ROOT", ".")
MODELS = {
    "llama32_1b": (T.LlamaConfig, T.LlamaForCausalLM, dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, max_position_embeddings=131072, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=128000, eos_token_id=151645,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})),
    "qwen3_1p7b": (T.Qwen3Config, T.Qwen3ForCausalLM, dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6,
        tie_word_embeddings=True, eos_token_id=151645, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    "gemma2_2b": (T.Gemma2Config, T.Gemma2ForCausalLM, dict(
        vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, max_position_embeddings=8192, rms_norm_eps=1e-6,
        query_pre_attn_scalar=256, sliding_window=4096, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        eos_token_id=151645)),
}


def make(out, name):
    cfg_cls, model_cls, kw = MODELS[name]
    d = os.path.join(out, name)
    if os.path.exists(os.path.join(d, "model.safetensors")) or os.path.exists(os.path.join(d, "model.safetensors.index.json")):
        return d
    torch.manual_seed(1)
    cfg = cfg_cls(**kw)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = model_cls(cfg).to(torch.bfloat16)
    model.save_pretrained(d, safe_serialization=True)
    for f in os.listdir(os.path.join(ROOT, "assets", "qwen2-tokenizer")):
        shutil.copy(os.path.join(ROOT, "assets", "qwen2-tokenizer", f), d)
    print(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters in {d}", flush=True)
    return d


def peer(out_json, model_dir):
    from peft import LoraConfig, get_peft_model
    res = []
    for seq, bs in [(512, 2), (2048, 2), (512, 16)]:
        try:
            torch.manual_seed(3407)
            model = T.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16,
                                                           attn_implementation="eager" if "gemma2" in model_dir
                                                           else "sdpa").cuda()
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
            lcfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1, bias="none", task_type="CAUSAL_LM",
                              target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
            model = get_peft_model(model, lcfg)
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=4e-5, weight_decay=0.01, fused=True)
            x = torch.randint(0, 151643, (bs, seq), device="cuda")
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            times = []
            for i in range(3 + 8):
                t0 = time.perf_counter()
                o = model(input_ids=x, labels=x)
                o.loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
                if i >= 3:
                    times.append(time.perf_counter() - t0)
            times.sort()
            med = times[len(times) // 2]
            r = dict(seq=seq, bs=bs, ckpt=True, step_s=med, tok_per_s=bs * seq / med,
                     peak_gib=torch.cuda.max_memory_allocated() / 2**30, loss=float(o.loss))
            res.append(r)
            print(json.dumps(r), flush=True)
            del model, opt, o
            torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001
            print("FAILED", seq, bs, repr(e), flush=True)
    json.dump(res, open(out_json, "w"), indent=1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        peer(sys.argv[2], sys.argv[3])
    else:
        out = sys.argv[1]
        for n in sys.argv[2:] or list(MODELS):
            make(out, n)
