"""Interop checks against the real Hugging Face stack (run where torch, transformers and peft
are installed: the GPU machine; skipped elsewhere). Each check prints one table row.

  1. an adapter saved by loratune loads in PEFT and gives loratune's logits (<= 1e-4)
  2. an adapter saved by PEFT loads in loratune and gives PEFT's logits (<= 1e-4)
  3. CPU greedy generation equals transformers' greedy generate for 32 new tokens,
     without and with an adapter
  4. merged safetensors exported by loratune load in transformers and give loratune's
     model+adapter logits (<= 1e-5, fp32)
  5. (with --cuda) CUDA prefill logits within bf16 tolerance of the CPU backend, and CUDA
     greedy tokens equal CPU greedy tokens for 16 new tokens

usage: python3 tests/interop/hf_interop.py LIBLORATUNE.so LORATUNE_CLI WORKDIR [--cuda]
"""
import ctypes as C, json, os, subprocess, sys

try:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from peft import LoraConfig, get_peft_model, PeftModel
except ImportError as e:  # not on this machine
    print("SKIP: needs torch, transformers and peft:", e)
    sys.exit(77)

LIB, CLI, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
USE_CUDA = "--cuda" in sys.argv
os.makedirs(WORK, exist_ok=True)
lt = C.CDLL(LIB)
lt.lt_last_error.restype = C.c_char_p
lt.lt_struct_size.restype = C.c_size_t
lt.lt_struct_size.argtypes = [C.c_char_p]


class ModelParams(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("device", C.c_int32), ("device_index", C.c_int32),
                ("quant", C.c_int32), ("compute_dtype", C.c_int32), ("double_quant", C.c_int32),
                ("max_seq_len", C.c_int32), ("n_threads", C.c_int32), ("progress", C.c_void_p),
                ("progress_user_data", C.c_void_p)]


class LoraParams(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("r", C.c_int32), ("alpha", C.c_float), ("dropout", C.c_float),
                ("use_rslora", C.c_int32), ("targets", C.c_uint32), ("seed", C.c_uint64)]


class GenParams(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("max_new_tokens", C.c_int32), ("do_sample", C.c_int32),
                ("temperature", C.c_float), ("top_k", C.c_int32), ("top_p", C.c_float), ("min_p", C.c_float),
                ("repetition_penalty", C.c_float), ("seed", C.c_uint64), ("stop_ids", C.c_void_p),
                ("n_stop_ids", C.c_int32), ("stop_strings", C.c_void_p), ("n_stop_strings", C.c_int32),
                ("tokenizer", C.c_void_p), ("on_text", C.c_void_p), ("user_data", C.c_void_p)]


for name, cls in [("lt_model_params", ModelParams), ("lt_lora_params", LoraParams), ("lt_generate_params", GenParams)]:
    assert lt.lt_struct_size(name.encode()) == C.sizeof(cls), f"{name}: struct size differs from the library"


def ok(st, what):
    if st < 0:
        raise RuntimeError(f"{what}: status {st}: {lt.lt_last_error().decode()}")


def load(path, device=1):
    mp = ModelParams(); lt.lt_model_params_init(C.byref(mp)); mp.device = device
    mp.quant = 1  # LT_QUANT_NONE: compare the exact fp32 weights with transformers
    m = C.c_void_p()
    ok(lt.lt_model_load(path.encode(), C.byref(mp), C.byref(m)), f"load {path}")
    return m


def logits(m, ids, V):
    arr = (C.c_int32 * len(ids))(*ids)
    out = (C.c_float * (len(ids) * V))()
    ok(lt.lt_model_logits(m, arr, C.c_size_t(len(ids)), out), "logits")
    return torch.tensor(list(out)).view(len(ids), V)


def greedy(m, ids, n):
    gp = GenParams(); lt.lt_generate_params_init(C.byref(gp)); gp.max_new_tokens = n
    none = (C.c_int32 * 1)(); gp.stop_ids = C.cast(none, C.c_void_p); gp.n_stop_ids = 0
    arr = (C.c_int32 * len(ids))(*ids); out = (C.c_int32 * (n + 1))(); nout = C.c_size_t()
    ok(lt.lt_generate(m, arr, C.c_size_t(len(ids)), C.byref(gp), out, C.c_size_t(n + 1), C.byref(nout)), "generate")
    return list(out)[: nout.value]


def rel(a, b):
    return float((a - b).norm() / b.norm())


rows = []
def row(name, figure, limit, passed):
    rows.append((name, figure, limit, passed)); print(f"{name}: {figure:.3g} (limit {limit}) {'PASS' if passed else 'FAIL'}", flush=True)


torch.manual_seed(3407)
V = 512
for tied in (True, False):
    tag = "tied" if tied else "untied"
    cfg = Qwen2Config(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=tied, use_sliding_window=False,
                      bos_token_id=0, eos_token_id=1)
    base = Qwen2ForCausalLM(cfg).float().eval()
    with torch.no_grad():  # random q/k/v biases (init zeros them) so the bias path is tested
        for layer in base.model.layers:
            for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                p.bias.normal_(0, 0.05)
    mdir = os.path.join(WORK, f"tiny-{tag}")
    base.save_pretrained(mdir, safe_serialization=True)
    ids = torch.randint(2, V, (23,)).tolist()
    ref_base = base(torch.tensor([ids])).logits[0].detach()

    # --- 2: PEFT-saved adapter -> loratune -------------------------------------------
    lcfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj",
                      "o_proj", "gate_proj", "up_proj", "down_proj"], init_lora_weights=True)
    pm = get_peft_model(Qwen2ForCausalLM.from_pretrained(mdir).float(), lcfg)
    with torch.no_grad():
        for n_, p in pm.named_parameters():
            if "lora_B" in n_: p.normal_(0, 0.05)
    pm.eval()
    adir = os.path.join(WORK, f"peft-adapter-{tag}")
    pm.save_pretrained(adir)
    ref_peft = pm(torch.tensor([ids])).logits[0].detach()
    m = load(mdir)
    row(f"[{tag}] base logits vs transformers", rel(logits(m, ids, V), ref_base), 1e-4, rel(logits(m, ids, V), ref_base) <= 1e-4)
    ok(lt.lt_model_load_adapter(m, adir.encode()), "load PEFT adapter")
    e = rel(logits(m, ids, V), ref_peft)
    row(f"[{tag}] PEFT adapter in loratune vs PEFT logits", e, 1e-4, e <= 1e-4)

    # --- 3: greedy generation, with and without the adapter ---------------------------
    prompt = ids[:9]
    want = pm.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False, min_new_tokens=32,
                       eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    got = greedy(m, prompt, 32)
    row(f"[{tag}] greedy 32 tokens with adapter == transformers", sum(a == b for a, b in zip(got, want)), 32, got == want)
    m0 = load(mdir)
    want0 = base.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False, min_new_tokens=32,
                          eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    got0 = greedy(m0, prompt, 32)
    row(f"[{tag}] greedy 32 tokens without adapter == transformers", sum(a == b for a, b in zip(got0, want0)), 32, got0 == want0)

    # --- 1: loratune-saved adapter -> PEFT ----------------------------------------------
    out_dir = os.path.join(WORK, f"lt-adapter-{tag}")
    ok(lt.lt_model_save_adapter(m, out_dir.encode(), 1), "save adapter")
    pm2 = PeftModel.from_pretrained(Qwen2ForCausalLM.from_pretrained(mdir).float(), out_dir).eval()
    e = rel(logits(m, ids, V), pm2(torch.tensor([ids])).logits[0].detach())
    row(f"[{tag}] loratune adapter in PEFT vs loratune logits", e, 1e-4, e <= 1e-4)

    # --- 4: merged safetensors -> transformers -------------------------------------------
    merged = os.path.join(WORK, f"merged-{tag}")
    r = subprocess.run([CLI, "export", "--model", mdir, "--adapter", out_dir, "--format", "merged", "--overwrite",
                        "--device", "cpu", "--output", merged], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        row(f"[{tag}] merged safetensors vs loratune logits", float("inf"), 1e-5, False)
    else:
        mm = Qwen2ForCausalLM.from_pretrained(merged).float().eval()
        e = rel(mm(torch.tensor([ids])).logits[0].detach(), logits(m, ids, V))
        row(f"[{tag}] merged safetensors (transformers) vs loratune logits", e, 1e-5, e <= 1e-5)

    # --- 5: CUDA vs CPU ---------------------------------------------------------------------
    if USE_CUDA:
        mc = load(mdir, device=2)
        ok(lt.lt_model_load_adapter(mc, adir.encode()), "load adapter on CUDA")
        e = rel(logits(mc, ids, V), logits(m, ids, V))
        row(f"[{tag}] CUDA prefill logits vs CPU", e, 1e-2, e <= 1e-2)
        gc, gcpu = greedy(mc, prompt, 16), greedy(m, prompt, 16)
        row(f"[{tag}] CUDA greedy 16 tokens == CPU", sum(a == b for a, b in zip(gc, gcpu)), 16, gc == gcpu)
        lt.lt_model_free(mc)
    lt.lt_model_free(m); lt.lt_model_free(m0)

print("\n| check | figure | limit | result |\n|---|---|---|---|")
for name, fig, lim, p in rows:
    print(f"| {name} | {fig:.3g} | {lim} | {'PASS' if p else 'FAIL'} |")
n_fail = sum(not p for *_, p in rows)
print(f"{len(rows) - n_fail} passed, {n_fail} failed")
sys.exit(1 if n_fail else 0)
