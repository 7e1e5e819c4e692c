"""Issue 7 on the GPU machine: the merged safetensors of a bf16 Qwen2-1.5B-shaped model with a
random rank-16 adapter on all seven projections, loaded by transformers (bf16, CUDA), give
loratune's model+adapter logits (CUDA, 16-bit base, adapter unmerged) within 1e-2 relative.

usage: python3 tests/interop/merged_bf16_1p5b.py LIBLORATUNE.so LORATUNE_CLI MODEL_DIR WORKDIR
"""
import ctypes as C, json, os, subprocess, sys
try:
    import numpy as np, torch
    from safetensors.numpy import save_file
    from transformers import Qwen2ForCausalLM
except ImportError as e:
    print("SKIP:", e); sys.exit(77)

LIB, CLI, MODEL, WORK = sys.argv[1:5]
os.makedirs(WORK, exist_ok=True)
cfg = json.load(open(os.path.join(MODEL, "config.json")))
H, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
KV = cfg["num_key_value_heads"] * H // cfg["num_attention_heads"]
dims = {"q_proj": (H, H), "k_proj": (H, KV), "v_proj": (H, KV), "o_proj": (H, H),
        "gate_proj": (H, F), "up_proj": (H, F), "down_proj": (F, H)}
rng, r, ad = np.random.default_rng(7), 16, {}
for l in range(L):
    for name, (i, o) in dims.items():
        part = "mlp" if name in ("gate_proj", "up_proj", "down_proj") else "self_attn"
        k = f"base_model.model.model.layers.{l}.{part}.{name}"
        ad[k + ".lora_A.weight"] = (rng.standard_normal((r, i)) / np.sqrt(i)).astype(np.float32)
        ad[k + ".lora_B.weight"] = (rng.standard_normal((o, r)) * 0.02).astype(np.float32)
adir = os.path.join(WORK, "adapter")
os.makedirs(adir, exist_ok=True)
save_file(ad, os.path.join(adir, "adapter_model.safetensors"), metadata={"format": "pt"})
json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 32, "lora_dropout": 0.0,
           "target_modules": list(dims), "bias": "none", "use_rslora": False},
          open(os.path.join(adir, "adapter_config.json"), "w"))

merged = os.path.join(WORK, "merged")
p = subprocess.run([CLI, "export", "--model", MODEL, "--adapter", adir, "--format", "merged", "--overwrite",
                    "--output", merged], capture_output=True, text=True)
if p.returncode:
    print(p.stdout, p.stderr); sys.exit(1)

lt = C.CDLL(LIB)
lt.lt_last_error.restype = C.c_char_p
class ModelParams(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("device", C.c_int32), ("device_index", C.c_int32),
                ("quant", C.c_int32), ("compute_dtype", C.c_int32), ("double_quant", C.c_int32),
                ("max_seq_len", C.c_int32), ("n_threads", C.c_int32), ("progress", C.c_void_p),
                ("progress_user_data", C.c_void_p)]
mp = ModelParams(); lt.lt_model_params_init(C.byref(mp)); mp.device = 2; mp.quant = 1
m = C.c_void_p()
assert lt.lt_model_load(MODEL.encode(), C.byref(mp), C.byref(m)) == 0, lt.lt_last_error()
assert lt.lt_model_load_adapter(m, adir.encode()) == 0, lt.lt_last_error()
V = cfg["vocab_size"]
ids = torch.randint(0, 151643, (64,), generator=torch.Generator().manual_seed(5)).tolist()
out = (C.c_float * (len(ids) * V))()
assert lt.lt_model_logits(m, (C.c_int32 * len(ids))(*ids), C.c_size_t(len(ids)), out) == 0, lt.lt_last_error()
ours = torch.frombuffer(bytearray(out), dtype=torch.float32).view(len(ids), V)
hf = Qwen2ForCausalLM.from_pretrained(merged, dtype=torch.bfloat16).cuda().eval()
with torch.no_grad():
    ref = hf(torch.tensor([ids], device="cuda")).logits[0].float().cpu()
# the same merged file in fp32, and PEFT's unmerged model in fp32: separates the merge's error
# from bf16 compute differences between two implementations
with torch.no_grad():
    hf32 = Qwen2ForCausalLM.from_pretrained(merged, dtype=torch.float32).cuda().eval()
    ref32 = hf32(torch.tensor([ids], device="cuda")).logits[0].float().cpu()
    del hf32
    from peft import PeftModel
    pm = PeftModel.from_pretrained(Qwen2ForCausalLM.from_pretrained(MODEL, dtype=torch.float32), adir).cuda().eval()
    peft32 = pm(torch.tensor([ids], device="cuda")).logits[0].float().cpu()
rel = lambda a, b: float((a - b).norm() / b.norm())
print(f"transformers merged fp32 vs PEFT unmerged fp32: {rel(ref32, peft32):.3g}")
print(f"transformers merged bf16 vs PEFT unmerged fp32: {rel(ref, peft32):.3g}")
print(f"loratune CUDA bf16 (unmerged) vs PEFT unmerged fp32: {rel(ours, peft32):.3g}")
e = float((ours - ref).norm() / ref.norm())
agree = float((ours.argmax(-1) == ref.argmax(-1)).float().mean())
print(f"merged bf16 1.5B (transformers) vs loratune model+adapter logits: rel {e:.3g} (limit 1e-2), "
      f"argmax agreement {agree:.3f}")
print("1 passed, 0 failed" if e <= 1e-2 else "0 passed, 1 failed")
sys.exit(0 if e <= 1e-2 else 1)
