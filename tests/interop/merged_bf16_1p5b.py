"""Issue 7 (GPU machine): the merged bf16 safetensors of a Qwen2 model (1.5B-shaped random in
tests/gpu/verify_1p5b.sh) with an adapter of realistic scale, loaded by transformers, against
loratune's model+adapter logits (CUDA, bf16 compute, 16-bit base = --quant none, so that both
start from the same original weights; the adapter unmerged).

The adapter is one loratune trained (ADAPTER: e.g. 100 notebook steps on ruozhiba from
tests/interop/loss_curve_1p5b.py --save-adapter); without one, a random adapter with B std
matched to 100 notebook steps (3e-3). Inputs: 4 ruozhiba records (alpaca-zh + EOS), <= 256 tokens.

Metric (stated): relative L2 over all logits, ||x - y|| / ||y||, and max |x - y| / max |y|,
and top-1 (argmax) agreement. The reference for "what the merged model should give" is the
exact math in fp32: PEFT, unmerged, fp32 on the original weights. Every bf16 implementation is
measured against it, which gives the noise floor: transformers' own bf16 forward of the merged
file. Pass: loratune vs transformers-bf16-merged <= 1e-2 rel L2.

usage: python3 tests/interop/merged_bf16_1p5b.py LORATUNE_CLI MODEL_DIR WORK [ADAPTER_DIR]
"""
import json, os, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import numpy as np, torch
    from safetensors.numpy import load_file, save_file
    from transformers import Qwen2ForCausalLM
    from peft import PeftModel
    import loratune as lt
except ImportError as e:
    print("SKIP:", e); sys.exit(77)

CLI, MODEL, WORK = sys.argv[1:4]
ADAPTER = sys.argv[4] if len(sys.argv) > 4 and os.path.isdir(sys.argv[4]) else None
root = os.environ.get("LT_REPO_ROOT", ".")
dev = "cuda" if torch.cuda.is_available() else "cpu"
os.makedirs(WORK, exist_ok=True)
t0 = time.time()
cfg = json.load(open(os.path.join(MODEL, "config.json")))
if ADAPTER is None:
    H, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    KV = cfg["num_key_value_heads"] * H // cfg["num_attention_heads"]
    dims = {"q_proj": (H, H), "k_proj": (H, KV), "v_proj": (H, KV), "o_proj": (H, H),
            "gate_proj": (H, F), "up_proj": (H, F), "down_proj": (F, H)}
    rng, r, ad = np.random.default_rng(7), 16, {}
    for l in range(L):
        for name, (i, o) in dims.items():
            part = "mlp" if name in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            k = f"base_model.model.model.layers.{l}.{part}.{name}"
            ad[k + ".lora_A.weight"] = rng.uniform(-1, 1, (r, i)).astype(np.float32) / np.sqrt(i)
            ad[k + ".lora_B.weight"] = (rng.standard_normal((o, r)) * 3e-3).astype(np.float32)
    ADAPTER = os.path.join(WORK, "adapter")
    os.makedirs(ADAPTER, exist_ok=True)
    save_file(ad, os.path.join(ADAPTER, "adapter_model.safetensors"), metadata={"format": "pt"})
    json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 32, "lora_dropout": 0.0,
               "target_modules": list(dims), "bias": "none", "use_rslora": False},
              open(os.path.join(ADAPTER, "adapter_config.json"), "w"))
ad = load_file(os.path.join(ADAPTER, "adapter_model.safetensors"))
bstd = float(np.sqrt(np.mean([np.mean(v.astype(np.float64) ** 2) for k, v in ad.items() if ".lora_B." in k])))
print(f"adapter {ADAPTER}: lora_B rms {bstd:.3g}")

merged = os.path.join(WORK, "merged")
p = subprocess.run([CLI, "export", "--model", MODEL, "--adapter", ADAPTER, "--format", "merged", "--quant", "bf16",
                    "--merge-into", "original", "--overwrite", "--output", merged], capture_output=True, text=True)
if p.returncode:
    print(p.stdout, p.stderr); sys.exit(1)
print(f"[{time.time() - t0:.0f}s] merged bf16 export written", flush=True)

# inputs: real text through the training template
tok = lt.Tokenizer(os.path.join(root, "assets/qwen2-tokenizer"))
ds = lt.Dataset(tok, os.path.join(root, "assets/ruozhiba/ruozhiba_qa.json"), max_seq_len=256)
seqs = [ds[i][0] for i in range(4)]

m = lt.Model(MODEL, device=dev, quant="none", dtype="bf16" if dev == "cuda" else "auto")
m.load_adapter(ADAPTER)
ours = [torch.from_numpy(m.logits(s)) for s in seqs]
m.close()
print(f"[{time.time() - t0:.0f}s] loratune logits done", flush=True)


def hf_logits(path, dtype, adapter=None):
    model = Qwen2ForCausalLM.from_pretrained(path, dtype=dtype).to(dev).eval()
    if adapter:
        model = PeftModel.from_pretrained(model, adapter).to(dev).eval()
    with torch.no_grad():
        out = [model(torch.tensor([s], device=dev)).logits[0].float().cpu() for s in seqs]
    del model
    if dev == "cuda":
        torch.cuda.empty_cache()
    return out


ref = {"merged bf16 (transformers bf16)": hf_logits(merged, torch.bfloat16),
       "merged bf16 file, fp32 compute": hf_logits(merged, torch.float32),
       "PEFT unmerged bf16": hf_logits(MODEL, torch.bfloat16, ADAPTER),
       "exact (PEFT unmerged fp32)": hf_logits(MODEL, torch.float32, ADAPTER)}
print(f"[{time.time() - t0:.0f}s] transformers logits done", flush=True)
cat = lambda xs: torch.cat(xs, 0)
ours_c = cat(ours)


def metrics(x, y):
    x, y = cat(x) if isinstance(x, list) else x, cat(y) if isinstance(y, list) else y
    return (float((x - y).norm() / y.norm()), float((x - y).abs().max() / y.abs().max()),
            float((x.argmax(-1) == y.argmax(-1)).float().mean()))


exact = ref["exact (PEFT unmerged fp32)"]
hfm = ref["merged bf16 (transformers bf16)"]
ltname = "loratune CUDA bf16 (unmerged)" if dev == "cuda" else "loratune CPU fp32 (unmerged)"
rows = [(ltname, "transformers bf16 (merged file)", metrics(ours_c, hfm))]
rows += [(name, "exact fp32", metrics(v, exact)) for name, v in ref.items() if v is not exact]
rows += [(ltname, "exact fp32", metrics(ours_c, exact))]
n_tok = ours_c.shape[0]
print(f"{len(seqs)} sequences, {n_tok} positions x {ours_c.shape[1]} logits; logit std {float(cat(exact).std()):.3g}")
print("| x | y | rel L2 | max abs / max abs y | argmax agree |")
print("|---|---|---|---|---|")
for x, y, (e, mx, ag) in rows:
    print(f"| {x} | {y} | {e:.3g} | {mx:.3g} | {ag:.4f} |")
e = rows[0][2][0]
print(f"merged bf16 1.5B (transformers) vs loratune model+adapter logits: rel {e:.3g} (limit 1e-2), "
      f"argmax agreement {rows[0][2][2]:.4f}")
print("1 passed, 0 failed" if e <= 1e-2 else "0 passed, 1 failed")
sys.exit(0 if e <= 1e-2 else 1)
