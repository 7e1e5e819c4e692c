#!/usr/bin/env python3
"""families_merged.py - the merged export of every model family loads in transformers and gives
the adapter's logits: `loratune export --format merged` of each tests/fixtures/families model
with its PEFT adapter, loaded with AutoModelForCausalLM in float64, against the fixture's logits
(transformers + PEFT with the adapter unmerged), relative error <= 1e-4 (float32 weights on disk).
Skips (77) without torch + transformers."""
import os
import subprocess
import sys
import tempfile

try:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
except Exception as e:  # noqa: BLE001
    print(f"SKIP: torch / transformers / safetensors not importable ({e})")
    sys.exit(77)

ROOT = os.environ.get("LT_REPO_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
CLI = os.environ.get("LORATUNE_CLI", "loratune")
FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"]


def main():
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for fam in FAMILIES:
            src = os.path.join(ROOT, "tests", "fixtures", "families", fam)
            out = os.path.join(tmp, fam)
            r = subprocess.run([CLI, "export", "--model", src, "--adapter", os.path.join(src, "adapter"), "--format",
                                "merged", "--output", out, "--device", "cpu"], capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{fam}: export failed ({r.returncode}): {r.stderr.strip()}")
                bad += 1
                continue
            ex = load_file(os.path.join(src, "expected.safetensors"))
            model = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").double().eval()
            cu = ex["cu_seqlens"].tolist()
            ids = ex["ids"].long()
            with torch.no_grad():
                got = torch.cat([model(input_ids=ids[None, cu[s]:cu[s + 1]]).logits[0] for s in range(len(cu) - 1)])
            want = ex["logits"].double()
            err = float((got - want).norm() / want.norm())
            ok = err <= 1e-4
            bad += not ok
            print(f"{fam}: merged model in transformers, logits relative error {err:.3g} {'ok' if ok else 'FAIL'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
