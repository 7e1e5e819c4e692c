#!/usr/bin/env python3
"""llamacpp_quantize_families.py - every family's K-quant mixture against llama.cpp's own
llama-quantize: per family (llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3) a random model of
tests/fixtures/families' config with K-quant-sized rows (hidden 256, intermediate 512, head_dim 64,
8 layers so that llama-quantize's use_more_bits layers are there) is exported by loratune as BF16,
Q4_K_M, Q4_K_S, Q5_K_M, Q6_K and Q8_0; llama-quantize turns the BF16 GGUF into each of those, and
the two files must be equal tensor by tensor (names, types, shapes, bytes: gguf_compare.py).
The weights are f32 values that bf16 holds exactly, so that loratune's path (checkpoint -> quantize)
and llama.cpp's (BF16 GGUF -> f32 -> quantize) start from the same numbers.
The checkpoint is written here (numpy + safetensors) rather than by `loratune init-random`, which
does not write Qwen3's q/k norms or Gemma's pre/post-feedforward norms.
usage: LLAMA_BIN_DIR=DIR llamacpp_quantize_families.py [FAMILY,...] (DIR or DIR/bin holds
llama-quantize). Exit 0 when every pair is identical, 1 when one is not, 77 (skip) without
LLAMA_BIN_DIR / llama-quantize, numpy / safetensors / gguf, or the loratune command."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from safetensors.numpy import save_file
    import gguf  # noqa: F401  (gguf_compare.py needs it)
except Exception as e:  # noqa: BLE001
    print(f"SKIP: numpy / safetensors / gguf not importable ({e})")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("LT_REPO_ROOT", os.path.join(HERE, "..", ".."))
CLI = os.environ.get("LORATUNE_CLI") or os.path.join(os.environ.get("LT_BUILD_DIR", "build"), "loratune")
FIX = os.path.join(ROOT, "tests", "fixtures", "families")
TOK = os.path.join(FIX, "tokenizer-bpe256")
FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"]
QUANTS = [("q4_k_m", "Q4_K_M"), ("q4_k_s", "Q4_K_S"), ("q5_k_m", "Q5_K_M"), ("q6_k", "Q6_K"), ("q8_0", "Q8_0")]
C, I, HD, NH, NKV, NL = 256, 512, 64, 4, 2, 8


def bf16_exact(x):
    """f32 values rounded to the nearest bf16 (ties to even), kept as f32."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def make_model(fam, out, rng):
    cfg = json.load(open(os.path.join(FIX, fam, "config.json")))
    cfg.update(hidden_size=C, intermediate_size=I, num_attention_heads=NH, num_key_value_heads=NKV,
               num_hidden_layers=NL, dtype="float32")
    if "head_dim" in cfg:
        cfg["head_dim"] = HD
    if cfg.get("layer_types"):
        cfg["layer_types"] = [cfg["layer_types"][i % len(cfg["layer_types"])] for i in range(NL)]
    if "query_pre_attn_scalar" in cfg:
        cfg["query_pre_attn_scalar"] = HD
    V, mt = cfg["vocab_size"], cfg["model_type"]
    gemma, phi3 = mt.startswith("gemma"), mt == "phi3"

    def w(*shape, std=0.05):
        return bf16_exact(rng.standard_normal(shape) * std)

    def norm(n):  # Gemma stores w of (1 + w)
        return bf16_exact((0.0 if gemma else 1.0) + rng.standard_normal(n) * 0.1)

    ts = {"model.embed_tokens.weight": w(V, C), "model.norm.weight": norm(C)}
    if not cfg.get("tie_word_embeddings", False):
        ts["lm_head.weight"] = w(V, C)
    for i in range(NL):
        p = f"model.layers.{i}."
        ts[p + "input_layernorm.weight"] = norm(C)
        ts[p + "post_attention_layernorm.weight"] = norm(C)
        if gemma:
            ts[p + "pre_feedforward_layernorm.weight"] = norm(C)
            ts[p + "post_feedforward_layernorm.weight"] = norm(C)
        if phi3:
            ts[p + "self_attn.qkv_proj.weight"] = w(NH * HD + 2 * NKV * HD, C)
            ts[p + "mlp.gate_up_proj.weight"] = w(2 * I, C)
        else:
            ts[p + "self_attn.q_proj.weight"] = w(NH * HD, C)
            ts[p + "self_attn.k_proj.weight"] = w(NKV * HD, C)
            ts[p + "self_attn.v_proj.weight"] = w(NKV * HD, C)
            ts[p + "mlp.gate_proj.weight"] = w(I, C)
            ts[p + "mlp.up_proj.weight"] = w(I, C)
        ts[p + "self_attn.o_proj.weight"] = w(C, NH * HD)
        ts[p + "mlp.down_proj.weight"] = w(C, I)
        if cfg.get("attention_bias") or mt == "qwen2":
            for k, n in (("q", NH * HD), ("k", NKV * HD), ("v", NKV * HD)):
                ts[p + f"self_attn.{k}_proj.bias"] = w(n)
        if mt == "qwen3" or mt.startswith("gemma3"):
            ts[p + "self_attn.q_norm.weight"] = norm(HD)
            ts[p + "self_attn.k_norm.weight"] = norm(HD)
    os.makedirs(out)
    save_file(ts, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
    shutil.copy(os.path.join(FIX, fam, "generation_config.json"), out)
    for f in os.listdir(TOK):
        shutil.copy(os.path.join(TOK, f), out)


def run(args, what):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-1500:]}")
    return r.stdout


def main():
    d = os.environ.get("LLAMA_BIN_DIR")
    lq = next((os.path.join(c, "llama-quantize") for c in ((os.path.join(d, "bin"), d) if d else ())
               if os.access(os.path.join(c, "llama-quantize"), os.X_OK)), None)
    if not lq:
        print(f"SKIP: no llama-quantize ({'LLAMA_BIN_DIR is not set' if not d else 'not in ' + d + ' or its bin/'})")
        return 77
    if not os.path.exists(CLI):
        print(f"SKIP: no loratune command at {CLI}")
        return 77
    bad = 0
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="lt_lq_fam_") as tmp:
        for fam in (sys.argv[1].split(",") if len(sys.argv) > 1 else FAMILIES):
            try:
                model = os.path.join(tmp, fam)
                make_model(fam, model, rng)
                src = os.path.join(tmp, f"{fam}-bf16.gguf")
                exp = ["--model", model, "--format", "gguf", "--overwrite", "--no-modelfile", "--device", "cpu"]
                run([CLI, "export", *exp, "--quant", "bf16", "--output", src], f"{fam}: export bf16")
                for q, Q in QUANTS:
                    mine, theirs = os.path.join(tmp, f"{fam}-{q}.gguf"), os.path.join(tmp, f"{fam}-lq-{q}.gguf")
                    run([CLI, "export", *exp, "--quant", q, "--output", mine], f"{fam}: export {q}")
                    run([lq, src, theirs, Q, "2"], f"{fam}: llama-quantize {Q}")
                    r = subprocess.run([sys.executable, os.path.join(HERE, "gguf_compare.py"), mine, theirs],
                                       capture_output=True, text=True)
                    lines = r.stdout.strip().splitlines()
                    print(f"{fam} {Q}: loratune vs llama-quantize from BF16: {lines[-1] if lines else r.stderr.strip()} "
                          f"{'ok' if r.returncode == 0 else 'FAIL'}")
                    if r.returncode != 0:
                        bad += 1
                        for line in lines[:-1][:8]:
                            print("  " + line)
                    os.remove(mine)
                    os.remove(theirs)
            except Exception as e:  # noqa: BLE001
                print(f"FAIL {fam}: {e}")
                bad += 1
    print("llamacpp_quantize_families:", "FAIL" if bad else "ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
