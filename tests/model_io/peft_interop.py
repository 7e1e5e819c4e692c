#!/usr/bin/env python3
"""peft_interop.py - loratune's adapter files against PEFT itself, both ways.

1. PEFT -> loratune: PEFT makes a LoRA adapter with random A and B (init_lora_weights=False) on
   a random tiny Qwen2 (written by `loratune init-random`) and saves it; loratune loads it
   (lt_model_load_adapter) and saves it again (lt_model_save_adapter). Every tensor must come
   back bit-identical, under the same keys, and the config must carry r / alpha / targets.
2. loratune -> PEFT: PeftModel.from_pretrained on loratune's folder loads with no missing or
   unexpected keys, and its logits equal those of the PEFT model that made the adapter.
3. Where lt_model_logits works (the graph is built), loratune's logits with the adapter match
   PEFT's (f32, CPU) to 1e-4 relative.
A fresh loratune adapter (lt_model_add_lora) is also loaded by PEFT (keys, shapes, B = 0).

Needs torch, transformers, peft, safetensors; skips (77) without them. Run by ctest, or by hand:
  LORATUNE_LIBRARY=build/libloratune.so LORATUNE_CLI=build/loratune LT_REPO_ROOT=. python3 peft_interop.py
"""
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import torch
    import transformers
    import peft
    from safetensors.torch import load_file
except Exception as e:  # pragma: no cover
    print(f"SKIP: needs torch, transformers, peft and safetensors ({e})")
    sys.exit(77)

LIB = os.environ.get("LORATUNE_LIBRARY")
CLI = os.environ.get("LORATUNE_CLI")
ROOT = os.environ.get("LT_REPO_ROOT", ".")
if not LIB or not CLI:
    print("SKIP: set LORATUNE_LIBRARY and LORATUNE_CLI")
    sys.exit(77)

lt = ctypes.CDLL(LIB)


class ModelParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("device", ctypes.c_int32), ("device_index", ctypes.c_int32),
                ("quant", ctypes.c_int32), ("compute_dtype", ctypes.c_int32), ("double_quant", ctypes.c_int32),
                ("max_seq_len", ctypes.c_int32), ("n_threads", ctypes.c_int32), ("progress", ctypes.c_void_p),
                ("progress_user_data", ctypes.c_void_p)]


class LoraParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("r", ctypes.c_int32), ("alpha", ctypes.c_float),
                ("dropout", ctypes.c_float), ("use_rslora", ctypes.c_int32), ("targets", ctypes.c_uint32),
                ("seed", ctypes.c_uint64)]


lt.lt_last_error.restype = ctypes.c_char_p
lt.lt_struct_size.restype = ctypes.c_size_t
lt.lt_struct_size.argtypes = [ctypes.c_char_p]
for name, cls in (("lt_model_params", ModelParams), ("lt_lora_params", LoraParams)):
    size = lt.lt_struct_size(name.encode())
    if size and size != ctypes.sizeof(cls):
        print(f"FAIL: {name} is {size} bytes in the library, {ctypes.sizeof(cls)} here")
        sys.exit(1)


def ok(status, what):
    if status != 0:
        print(f"FAIL: {what}: status {status}: {lt.lt_last_error().decode()}")
        sys.exit(1)


def load_model(path):
    p = ModelParams()
    lt.lt_model_params_init(ctypes.byref(p))
    p.device = 1  # CPU
    p.quant = 1   # keep the base unquantized: the logits comparison is exact f32
    m = ctypes.c_void_p()
    ok(lt.lt_model_load(path.encode(), ctypes.byref(p), ctypes.byref(m)), f"lt_model_load {path}")
    return m


# transformers 5 renamed torch_dtype to dtype
DTYPE_KW = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)


work = tempfile.mkdtemp(prefix="peft_interop.")
try:
    base = os.path.join(work, "base")
    subprocess.run([CLI, "init-random", "--config", os.path.join(ROOT, "assets/tiny-qwen2/config.json"),
                    "--output", base, "--seed", "5", "--dtype", "f32"], check=True)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_pretrained(base, **{DTYPE_KW: torch.float32})
    cfg = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, init_lora_weights=False,
                          task_type="CAUSAL_LM")
    pm = peft.get_peft_model(hf, cfg).eval()
    peft_dir = os.path.join(work, "peft")
    pm.save_pretrained(peft_dir)

    # 1. PEFT -> loratune -> files
    m = load_model(base)
    ok(lt.lt_model_load_adapter(m, peft_dir.encode()), "lt_model_load_adapter(PEFT's adapter)")
    ours = os.path.join(work, "ours")
    ok(lt.lt_model_save_adapter(m, ours.encode(), 0), "lt_model_save_adapter")
    a = load_file(os.path.join(peft_dir, "adapter_model.safetensors"))
    b = load_file(os.path.join(ours, "adapter_model.safetensors"))
    check(sorted(a) == sorted(b), f"keys differ: {sorted(set(a) ^ set(b))[:4]}")
    for k in a:
        if k in b:
            check(a[k].dtype == b[k].dtype == torch.float32 and torch.equal(a[k], b[k]), f"tensor {k} differs")
    oc = json.load(open(os.path.join(ours, "adapter_config.json")))
    pc = json.load(open(os.path.join(peft_dir, "adapter_config.json")))
    for key in ("r", "lora_alpha", "peft_type", "task_type", "bias", "use_rslora", "use_dora", "fan_in_fan_out"):
        check(oc.get(key) == pc.get(key), f"adapter_config {key}: ours {oc.get(key)!r}, PEFT {pc.get(key)!r}")
    check(sorted(oc["target_modules"]) == sorted(pc["target_modules"]), "target_modules differ")
    missing = sorted(set(pc) - set(oc))
    extra = sorted(set(oc) - set(pc))
    print(f"adapter_config keys PEFT {peft.__version__} writes that loratune does not: {missing}")
    print(f"adapter_config keys loratune writes that PEFT {peft.__version__} does not: {extra}")
    check(not missing and not extra, "adapter_config.json key sets differ")

    # 2. loratune -> PEFT
    ids = torch.tensor([[151644, 872, 198, 9707, 11, 1879, 0, 151645, 198, 77091]])
    with torch.no_grad():
        want = pm(input_ids=ids).logits[0]
        hf2 = transformers.AutoModelForCausalLM.from_pretrained(base, **{DTYPE_KW: torch.float32})
        back = peft.PeftModel.from_pretrained(hf2, ours).eval()
        got = back(input_ids=ids).logits[0]
    check(torch.equal(want, got), "PEFT's logits with loratune's adapter differ from the original adapter's")

    # 3. loratune's own logits, where the graph is there
    n = ids.shape[1]
    V = hf.config.vocab_size
    out = (ctypes.c_float * (n * V))()
    cids = (ctypes.c_int32 * n)(*ids[0].tolist())
    st = lt.lt_model_logits(m, cids, ctypes.c_size_t(n), out)
    if st == 0:
        ours_logits = torch.frombuffer(bytearray(out), dtype=torch.float32).view(n, V)
        rel = ((ours_logits - want).norm() / want.norm()).item()
        print(f"loratune vs PEFT logits (f32, CPU): relative error {rel:.3e}")
        check(rel < 1e-4, f"logits relative error {rel:.3e} >= 1e-4")
    else:
        print(f"note: lt_model_logits unavailable ({lt.lt_last_error().decode()}); logits not compared")

    # a fresh loratune adapter loads in PEFT
    lp = LoraParams()
    lt.lt_lora_params_init(ctypes.byref(lp))
    ok(lt.lt_model_add_lora(m, ctypes.byref(lp)), "lt_model_add_lora")
    fresh = os.path.join(work, "fresh")
    ok(lt.lt_model_save_adapter(m, fresh.encode(), 0), "lt_model_save_adapter(fresh)")
    hf3 = transformers.AutoModelForCausalLM.from_pretrained(base, **{DTYPE_KW: torch.float32})
    p3 = peft.PeftModel.from_pretrained(hf3, fresh)
    sd = {k: v for k, v in p3.state_dict().items() if "lora_" in k}
    check(len(sd) == 2 * 7 * hf.config.num_hidden_layers, f"PEFT sees {len(sd)} LoRA tensors")
    check(all(float(v.abs().max()) == 0.0 for k, v in sd.items() if "lora_B" in k), "fresh lora_B is not zero")
    bound = max(float(v.abs().max()) * (v.shape[1] ** 0.5) for k, v in sd.items() if "lora_A" in k)
    check(0.9 < bound <= 1.0, f"fresh lora_A is not U(-1/sqrt(in), 1/sqrt(in)): max |A| sqrt(in) = {bound}")
    lt.lt_model_free(m)
finally:
    shutil.rmtree(work, ignore_errors=True)

if failures:
    print(f"peft_interop: {len(failures)} checks failed")
    sys.exit(1)
print(f"peft_interop: passed (torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__})")
