"""Issue 5 (GPU machine): loratune's step-0 loss and global LoRA gradient norm on a Qwen2 model
(1.5B-shaped random in tests/gpu/verify_1p5b.sh) against transformers + PEFT run on loratune's
own dequantized NF4 weights in bf16, with the same initial adapter and the same 16 records.

  1. loratune (CUDA, NF4, bf16 compute) attaches its fresh adapter (r16 alpha32, seed 3407,
     dropout 0 for this comparison) and saves it as PEFT (WORK/a0);
  2. it exports the merged model with --merge-into dequantized and that zero adapter
     (B = 0, so the file is exactly the dequantized NF4 base) as bf16 safetensors (WORK/deq);
  3. one optimizer step of loratune's trainer (batch 2 x accumulation 8, the notebook's) gives
     the window's loss (sum of CE / labelled tokens) and the global grad norm before clipping;
  4. transformers loads WORK/deq in bf16, PEFT loads WORK/a0 (is_trainable), and the same 8
     micro-batches (loratune's data order, tests/interop/lt_order.py) run forward + backward with
     the same loss definition (right-padded rows, sum of shifted CE / the window's label count);
  5. the same again with an adapter whose B is seeded non-zero (std 0.01; WORK/a1) loaded into
     both, so that A's gradients count too.
Also printed: transformers in fp32 on the same weights (the bf16 noise floor of the reference).
Passes when both relative differences are <= 1e-2 for both adapters.

usage: python3 tests/interop/step0_peft_1p5b.py MODEL_DIR WORK [--device cuda|cpu]
"""
import argparse, json, os, shutil, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import numpy as np, torch
    from safetensors.numpy import load_file, save_file
    from transformers import AutoModelForCausalLM
    from peft import PeftModel, set_peft_model_state_dict
    import loratune as lt
except ImportError as e:
    print("SKIP:", e); sys.exit(77)
from lt_order import micro_batches, padded_rows

ap = argparse.ArgumentParser()
ap.add_argument("model"); ap.add_argument("work")
ap.add_argument("--device", default="cuda")
ap.add_argument("--data", default=os.path.join(os.environ.get("LT_REPO_ROOT", "."), "assets/ruozhiba/ruozhiba_qa.json"))
ap.add_argument("--tokenizer", default=os.path.join(os.environ.get("LT_REPO_ROOT", "."), "assets/qwen2-tokenizer"))
a = ap.parse_args()
os.makedirs(a.work, exist_ok=True)
dev = a.device
t0 = time.time()
BS, ACC, SEED = 2, 8, 3407

# ---- loratune ----
tok = lt.Tokenizer(a.tokenizer)
ds = lt.Dataset(tok, a.data, max_seq_len=2048, seed=SEED)
model = lt.Model(a.model, device=dev, quant="nf4", dtype="bf16" if dev == "cuda" else "auto")
model.add_lora(r=16, alpha=32, dropout=0.0, targets="all", seed=SEED)
a0, a1, deq = (os.path.join(a.work, d) for d in ("a0", "a1", "deq"))
model.save_adapter(a0, overwrite=True)
shutil.rmtree(deq, ignore_errors=True)
lt.export(model, deq, format="merged", quant="bf16", merge_base="dequantized", tokenizer_dir=a.tokenizer,
          overwrite=True)
print(f"[{time.time() - t0:.0f}s] adapter and dequantized base written", flush=True)


def lt_step0():
    with lt.Trainer(model, ds, batch_size=BS, grad_accum=ACC, max_steps=1, lr=0.0, warmup_steps=0,
                    optimizer="adamw_torch", seed=SEED) as tr:
        m = tr.step()
    return m.loss, m.grad_norm


res = {"zero_B": {"loratune": lt_step0()}}
# the same A, B seeded non-zero: A's gradients count too
ad = load_file(os.path.join(a0, "adapter_model.safetensors"))
rng = np.random.default_rng(11)
for k in ad:
    if ".lora_B." in k:
        ad[k] = (rng.standard_normal(ad[k].shape) * 0.01).astype(np.float32)
os.makedirs(a1, exist_ok=True)
save_file(ad, os.path.join(a1, "adapter_model.safetensors"), metadata={"format": "pt"})
shutil.copy(os.path.join(a0, "adapter_config.json"), a1)
model.load_adapter(a1)
res["random_B"] = {"loratune": lt_step0()}
cfg0 = json.load(open(os.path.join(a0, "adapter_config.json")))
print(f"[{time.time() - t0:.0f}s] loratune steps done; adapter_config lora_dropout={cfg0.get('lora_dropout')}",
      flush=True)

# the window's records, in loratune's order
window = micro_batches(len(ds), BS, ACC, SEED)
recs = [[ds[i] for i in mb] for mb in window]
n_items = sum(sum(1 for t in lab[1:] if t != -100) for mb in recs for _, lab in mb)
model.close()

# ---- transformers + PEFT ----
tdev = "cuda" if dev == "cuda" else "cpu"

def hf_step0(pm):
    pm.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for mb in recs:
        ids, att, lab = padded_rows(mb, tdev)
        logits = pm(input_ids=ids, attention_mask=att).logits.float()
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1),
                                               ignore_index=-100, reduction="sum")
        (ce / n_items).backward()
        loss_sum += float(ce.detach())
        del logits, ce
    g = [p.grad.float().pow(2).sum() for n, p in pm.named_parameters() if "lora_" in n and p.grad is not None]
    return loss_sum / n_items, float(torch.stack(g).sum().sqrt())


# (bf16 on a CPU is too slow for a smoke run there: fp32 stands in for it off the GPU)
for dt_name, dtype in (("bf16", torch.bfloat16 if tdev == "cuda" else torch.float32), ("fp32", torch.float32)):
    # any family (tests/gpu/verify_families.sh); eager where soft-capping needs it (Gemma 2)
    base = AutoModelForCausalLM.from_pretrained(deq, dtype=dtype, attn_implementation="sdpa").to(tdev) \
        if "gemma2" not in open(os.path.join(deq, "config.json")).read() else \
        AutoModelForCausalLM.from_pretrained(deq, dtype=dtype, attn_implementation="eager").to(tdev)
    pm = PeftModel.from_pretrained(base, a0, is_trainable=True)
    pm.train()
    lora_dtypes = sorted({str(p.dtype) for n, p in pm.named_parameters() if "lora_" in n})
    res["zero_B"]["peft_" + dt_name] = hf_step0(pm)
    set_peft_model_state_dict(pm, {k: torch.from_numpy(v) for k, v in ad.items()})
    res["random_B"]["peft_" + dt_name] = hf_step0(pm)
    print(f"[{time.time() - t0:.0f}s] transformers {dt_name} done (LoRA params {lora_dtypes})", flush=True)
    del pm, base
    if tdev == "cuda":
        torch.cuda.empty_cache()

rel = lambda x, y: abs(x - y) / abs(y)
ok = True
print(f"window: {ACC} micro-batches x {BS} records, {n_items} labelled tokens; dropout 0")
print(f"| adapter | quantity | loratune ({'CUDA NF4 bf16' if dev == 'cuda' else 'CPU NF4 fp32'}) | PEFT bf16 | PEFT fp32 | rel lt vs PEFT bf16 | rel PEFT bf16 vs fp32 |")
print("|---|---|---|---|---|---|---|")
for name, r in res.items():
    for q, j in (("loss", 0), ("grad norm", 1)):
        x, y, z = r["loratune"][j], r["peft_bf16"][j], r["peft_fp32"][j]
        e = rel(x, y)
        ok &= e <= 1e-2
        print(f"| {name} | {q} | {x:.6g} | {y:.6g} | {z:.6g} | {e:.3g} | {rel(y, z):.3g} |")
json.dump(res, open(os.path.join(a.work, "step0.json"), "w"), indent=1)
print("step-0 loss and grad norm vs PEFT: " + ("1 passed, 0 failed" if ok else "0 passed, 1 failed"))
sys.exit(0 if ok else 1)
