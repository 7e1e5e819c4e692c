#!/usr/bin/env python3
"""families_bnb.py - pre-quantized bitsandbytes 4-bit checkpoints (the unsloth/*-bnb-4bit layout:
NF4, double quantization, the quant_state tensors beside each weight) of every family: each
tests/fixtures/families model is quantized by transformers + bitsandbytes (BitsAndBytesConfig
load_in_4bit, nf4, double quant, float32 compute) and saved with save_pretrained; loratune loads
the folder as it is (no re-quantization): its CPU logits, with and without the family's PEFT
adapter, match a float64 transformers model whose 4-bit weights are dequantized here from the
saved tensors (relative error <= 1e-4), and are within 2e-2 of transformers + bitsandbytes on the
same folder (bitsandbytes' CPU path does not compute in float32: about 0.6% apart).
Skips (77) without torch / transformers / peft / bitsandbytes or the Python binding's library."""
import os
import sys
import tempfile

try:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from peft import PeftModel
    import bitsandbytes  # noqa: F401
    from safetensors.numpy import load_file
except Exception as e:  # noqa: BLE001
    print(f"SKIP: torch / transformers / peft / bitsandbytes not importable ({e})")
    sys.exit(77)
ROOT = os.environ.get("LT_REPO_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
try:
    import loratune as lt
except Exception as e:  # noqa: BLE001
    print(f"SKIP: the loratune Python binding cannot load its library ({e})")
    sys.exit(77)

def dequant(st, key, shape):
    """bitsandbytes NF4 with double quantization, from the saved tensors: nibbles high first, one
    absmax per 64 values stored as 8-bit codes of the nested map, one nested absmax per 256 blocks."""
    packed = st[key].reshape(-1)
    q = np.empty(packed.size * 2, dtype=np.int64)
    q[0::2] = packed >> 4
    q[1::2] = packed & 15
    code = st[key + ".quant_map"].astype(np.float64)
    if key + ".nested_absmax" in st:
        nested = st[key + ".nested_quant_map"].astype(np.float32)[st[key + ".absmax"].astype(np.int64)]
        scale = st[key + ".nested_absmax"].astype(np.float32)
        import json as _j
        meta = _j.loads(bytes(st[key + ".quant_state.bitsandbytes__nf4"]).decode())
        absmax = nested * np.repeat(scale, 256)[:nested.size] + np.float32(meta.get("nested_offset", 0.0))
    else:
        absmax = st[key + ".absmax"].astype(np.float32)
    n = int(np.prod(shape))
    w = code[q[:n]] * np.repeat(absmax.astype(np.float64), 64)[:n]
    return w.reshape(shape)


FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"]


def main():
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for fam in FAMILIES:
            src = os.path.join(ROOT, "tests", "fixtures", "families", fam)
            out = os.path.join(tmp, fam + "-bnb-4bit")
            q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.float32)
            hf = AutoModelForCausalLM.from_pretrained(src, quantization_config=q, device_map="cpu",
                                                      attn_implementation="eager", dtype=torch.float32)
            hf.save_pretrained(out, safe_serialization=True)
            ex = load_file(os.path.join(src, "expected.safetensors"))
            cu = ex["cu_seqlens"].tolist()
            ids = [int(t) for t in ex["ids"][cu[0]:cu[1]]]
            with torch.no_grad():
                hf_base = hf(input_ids=torch.tensor([ids])).logits[0].double().numpy()
            # the reference: the float32 original with every 4-bit weight replaced by its values
            # dequantized here from the saved tensors (bitsandbytes' NF4 layout), in float64
            st = load_file(os.path.join(out, "model.safetensors"))
            ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float64, attn_implementation="eager")
            n_q = 0
            with torch.no_grad():
                for name, mod in ref.named_modules():
                    if name + ".weight.quant_map" not in st:
                        continue
                    mod.weight.copy_(torch.from_numpy(dequant(st, name + ".weight", tuple(mod.weight.shape))))
                    n_q += 1
                want_base = ref(input_ids=torch.tensor([ids])).logits[0].numpy()
                want = PeftModel.from_pretrained(ref, os.path.join(src, "adapter"))(
                    input_ids=torch.tensor([ids])).logits[0].numpy()
            m = lt.Model(out, device="cpu")
            got_base = np.asarray(m.logits(ids), dtype=np.float64).reshape(want_base.shape)
            m.load_adapter(os.path.join(src, "adapter"))
            got = np.asarray(m.logits(ids), dtype=np.float64).reshape(want.shape)
            del m
            rel = lambda x, y: float(np.linalg.norm(x - y) / np.linalg.norm(y))  # noqa: E731
            e0, e1, eh = rel(got_base, want_base), rel(got, want), rel(got_base, hf_base)
            ok = n_q > 0 and e0 <= 1e-4 and e1 <= 1e-4 and eh <= 2e-2
            bad += not ok
            print(f"{fam}: bnb-4bit checkpoint ({n_q} NF4 weights) logits vs its dequantized weights: base {e0:.3g}, "
                  f"with the adapter {e1:.3g}; vs transformers + bitsandbytes' CPU path {eh:.3g} {'ok' if ok else 'FAIL'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
