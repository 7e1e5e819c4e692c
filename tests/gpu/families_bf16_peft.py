#!/usr/bin/env python3
"""families_bf16_peft.py - how far transformers + PEFT's own bf16 training pass lands from the fp64
gradients of each family fixture (tests/fixtures/families/<fam>/expected.safetensors): the yardstick
for loratune's CUDA bf16 pass in tests/cuda/test_cuda_families.c.

Each fixture is loaded twice: all in bf16 (base and LoRA weights), and fp32 weights under bf16
autocast. The fixture's three sequences run one by one (eager attention), the summed cross-entropy
divided by the labelled-token count is back-propagated, and every LoRA gradient is compared with the
fixture's by the test's measure (||g - ref|| / ||ref||). Prints a line per family and mode and, with
--json FILE, writes {family: {"bf16": worst, "autocast": worst}, "versions": ...}.
Usage: families_bf16_peft.py [--device cuda|cpu] [--json FILE]   (LT_REPO_ROOT: the repository)"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from peft import PeftModel
from safetensors.torch import load_file
import transformers
import peft

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"]


def rel(a, b):
    a, b = a.double(), b.double()
    den = (b * b).sum()
    num = ((a - b) ** 2).sum()
    return float((num / den).sqrt()) if den > 0 else float(num.sqrt())


def worst_error(d, mode, dev):
    ex = load_file(os.path.join(d, "expected.safetensors"))
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    m = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=dtype, attn_implementation="eager").to(dev)
    pm = PeftModel.from_pretrained(m, os.path.join(d, "adapter"), is_trainable=True).to(dev)
    pm.train()
    cu = ex["cu_seqlens"].tolist()
    ids, lab = ex["ids"].long(), ex["labels"].long()
    seqs = [(ids[cu[i]:cu[i + 1]], lab[cu[i]:cu[i + 1]]) for i in range(len(cu) - 1)]
    count = sum(int((l[1:] != -100).sum()) for _, l in seqs)
    total = 0.0
    for s, l in seqs:
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=(mode == "autocast")):
            logits = pm(input_ids=s[None].to(dev)).logits[0]
        ce = F.cross_entropy(logits[:-1].float(), l[1:].to(dev), ignore_index=-100, reduction="sum")
        (ce / count).backward()
        total += float(ce.detach())
    worst, key, n = 0.0, "", 0
    for name, p in pm.named_parameters():
        if not p.requires_grad:
            continue
        k = "grad." + name.replace(".default", "")
        if k not in ex:
            raise SystemExit(f"{d}: no fixture gradient {k}")
        e = rel(p.grad.float().cpu(), ex[k])
        n += 1
        if e > worst:
            worst, key = e, k[5:]
    return total / count, worst, key, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json")
    a = ap.parse_args()
    root = os.environ.get("LT_REPO_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
    out = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                        "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu"}}
    for fam in FAMILIES:
        d = os.path.join(root, "tests", "fixtures", "families", fam)
        want = json.load(open(os.path.join(d, "expected.json")))["loss_batch"]
        out[fam] = {}
        for mode in ("bf16", "autocast"):
            loss, worst, key, n = worst_error(d, mode, a.device)
            out[fam][mode] = round(worst, 4)
            print(f"{fam:8s} {mode:8s} loss {loss:.5f} (fp64 {want:.5f}) worst LoRA gradient error {worst:.4f} "
                  f"of {n} ({key})", flush=True)
    if a.json:
        with open(a.json + ".tmp", "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
        os.replace(a.json + ".tmp", a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
