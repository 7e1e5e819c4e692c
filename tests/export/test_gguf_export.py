#!/usr/bin/env python3
"""test_gguf_export.py - `loratune export` checked with the gguf Python package on a small
random Qwen2 model and a random LoRA adapter:
  - every metadata / tokenizer key with the value type the spec (docs specs/gguf-export.md §2)
    gives and the value from config.json / tokenizer files;
  - F32 tensors = the merged weights W + alpha/r * B @ A (numpy), rounded to the checkpoint's bf16;
  - F16 / BF16 / Q8_0 bytes identical to numpy's float16 and gguf.quants.quantize on the same data;
  - Q4_K / Q6_K bytes identical to an independent numpy port of llama.cpp's reference
    quantizers (quant_ref.py), and gguf.quants.dequantize within the quantizer's error;
  - the q4_k_m type mixture (Q6_K token_embd when tied, attn_v / ffn_down on use_more_bits
    layers, Q4_K otherwise, F32 norms and biases) and the fallbacks for rows not divisible by
    256 (Q5_0 / Q8_0 / F16) on a second model;
  - the GGUF LoRA adapter (§6), the Modelfile (§7), the merged Hugging Face checkpoint (sharded
    and not), refusal to overwrite, and a clean error with no file left for an unwritable path.
Skips (77) without numpy / gguf / safetensors.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
    from gguf import GGUFReader, GGUFValueType as VT, GGMLQuantizationType as QT
    from safetensors.numpy import load_file
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import quant_ref  # noqa: E402

ROOT = os.environ.get("LT_REPO_ROOT", os.path.join(HERE, "..", ".."))
CLI = os.environ.get("LORATUNE_CLI") or os.path.join(os.environ.get("LT_BUILD_DIR", "build"), "loratune")
FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what)
    return cond


def run(*args, ok=True):
    p = subprocess.run([CLI, "export", *args], capture_output=True, text=True)
    if ok and p.returncode != 0:
        print(p.stdout, p.stderr)
        raise SystemExit(f"loratune export {' '.join(args)} failed ({p.returncode})")
    return p


def read_st(path):
    """safetensors -> {name: float32 array}, BF16 included (numpy has no bfloat16)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        buf = f.read()
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        raw = buf[b:e]
        if v["dtype"] == "BF16":
            x = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif v["dtype"] == "F16":
            x = np.frombuffer(raw, np.float16).astype(np.float32)
        else:
            x = np.frombuffer(raw, np.float32)
        out[k] = x.reshape(v["shape"])
    return out, h


def bf16_round(x):
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32) << 16
    return r.view(np.float32)


def field(r, key):
    f = r.fields.get(key)
    if f is None:
        return None, None
    t = f.types
    return t, f.contents()


def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


GGUF_PROJ = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
          "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def hf_to_gguf(name):
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    parts = name.split(".")
    l = parts[2]
    if parts[3] == "input_layernorm":
        return f"blk.{l}.attn_norm.weight"
    if parts[3] == "post_attention_layernorm":
        return f"blk.{l}.ffn_norm.weight"
    return f"blk.{l}.{GGUF_PROJ[parts[4]]}.{parts[5]}"


def merged_reference(model_dir, adapter_dir):
    base, _ = read_st(os.path.join(model_dir, "model.safetensors"))
    ad = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    acfg = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    scale = np.float32(acfg["lora_alpha"] / acfg["r"])
    out = {}
    for k, w in base.items():
        w = w.astype(np.float32).copy()
        if k.endswith("_proj.weight"):
            pre = "base_model.model." + k[: -len(".weight")]
            A, B = ad[pre + ".lora_A.weight"], ad[pre + ".lora_B.weight"]
            w += scale * (B @ A)
        out[hf_to_gguf(k)] = w
    return out, acfg


def check_keys(r, cfg, tok_dir, ftype_id):
    tc = json.load(open(os.path.join(tok_dir, "tokenizer_config.json")))
    tj = json.load(open(os.path.join(tok_dir, "tokenizer.json")))
    V = cfg["vocab_size"]
    added = {t["content"]: t["id"] for t in tj["added_tokens"]}
    want = {
        "general.architecture": ([VT.STRING], "qwen2"),
        "general.type": ([VT.STRING], "model"),
        "qwen2.block_count": ([VT.UINT32], cfg["num_hidden_layers"]),
        "qwen2.context_length": ([VT.UINT32], cfg["max_position_embeddings"]),
        "qwen2.embedding_length": ([VT.UINT32], cfg["hidden_size"]),
        "qwen2.feed_forward_length": ([VT.UINT32], cfg["intermediate_size"]),
        "qwen2.attention.head_count": ([VT.UINT32], cfg["num_attention_heads"]),
        "qwen2.attention.head_count_kv": ([VT.UINT32], cfg["num_key_value_heads"]),
        "general.file_type": ([VT.UINT32], ftype_id),
        "tokenizer.ggml.model": ([VT.STRING], "gpt2"),
        "tokenizer.ggml.pre": ([VT.STRING], "qwen2"),
        "tokenizer.ggml.eos_token_id": ([VT.UINT32], added[tc["eos_token"]]),
        "tokenizer.ggml.padding_token_id": ([VT.UINT32], added[tc["pad_token"]]),
        "tokenizer.ggml.bos_token_id": ([VT.UINT32], cfg["bos_token_id"]),
        "tokenizer.ggml.add_bos_token": ([VT.BOOL], False),
        "tokenizer.chat_template": ([VT.STRING], tc["chat_template"]),
        "general.quantization_version": ([VT.UINT32], 2),
    }
    for k, (types, val) in want.items():
        t, v = field(r, k)
        check(t == types, f"key {k}: type {t}, expected {types}")
        check(v == val, f"key {k}: value {v!r:.80}, expected {val!r:.80}")
    for k, val in (("qwen2.rope.freq_base", cfg["rope_theta"]),
                   ("qwen2.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])):
        t, v = field(r, k)
        check(t == [VT.FLOAT32], f"key {k}: type {t}")
        check(v is not None and np.float32(v) == np.float32(val), f"key {k}: {v} != {val}")
    check("general.alignment" not in r.fields, "no general.alignment key (llama.cpp default 32)")
    # tokens, types, merges
    t, toks = field(r, "tokenizer.ggml.tokens")
    check(t == [VT.ARRAY, VT.STRING] and len(toks) == V, f"tokens: {t}, {len(toks or [])} entries, want {V}")
    t, tt = field(r, "tokenizer.ggml.token_type")
    check(t == [VT.ARRAY, VT.INT32] and len(tt) == V, f"token_type: {t}")
    inv = {i: s for s, i in tj["model"]["vocab"].items()}
    for s, i in added.items():
        inv[i] = s
    for i in range(V):
        if i in inv:
            want_type = 3 if inv[i] in added else 1
            if toks[i] != inv[i] or tt[i] != want_type:
                check(False, f"token {i}: {toks[i]!r} type {tt[i]}, expected {inv[i]!r} type {want_type}")
                break
        elif toks[i] != f"[PAD{i}]" or tt[i] != 5:
            check(False, f"token {i}: {toks[i]!r} type {tt[i]}, expected [PAD{i}] UNUSED")
            break
    t, merges = field(r, "tokenizer.ggml.merges")
    src = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    check(t == [VT.ARRAY, VT.STRING] and merges == src, "merges equal tokenizer.json's, in order")


def tensor_map(r):
    return {t.name: t for t in r.tensors}


def as_f32(t):
    return np.asarray(t.data, dtype=np.float32).reshape(-1)


def expected_q4km(name, n_layer, tied, ne0):
    if name.endswith("_norm.weight") or name.endswith(".bias"):
        return QT.F32
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        t = QT.Q6_K if ne0 % 256 == 0 else QT.Q8_0
    else:
        t = QT.Q4_K
        parts = name.split(".")
        if name.startswith("blk.") and parts[2] in ("attn_v", "ffn_down") and use_more_bits(int(parts[1]), n_layer):
            t = QT.Q6_K
    if ne0 % 256:
        t = {QT.Q4_K: QT.Q5_0, QT.Q6_K: QT.Q8_0}.get(t, t)
        if ne0 % 32:
            t = QT.F16
    return t


def main():
    if not os.path.exists(CLI):
        print(f"SKIP: no loratune command at {CLI}")
        return 77
    tmp = tempfile.mkdtemp(prefix="lt-export-")
    try:
        return body(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def body(tmp):
    mk = os.path.join(HERE, "make_tiny_model.py")
    model, lora = os.path.join(tmp, "m"), os.path.join(tmp, "lora")
    subprocess.run([sys.executable, mk, model, "--small-vocab", "1000", "--hidden", "256", "--inter", "512",
                    "--layers", "8", "--adapter", lora, "--rank", "8", "--alpha", "16"], check=True)
    cfg = json.load(open(os.path.join(model, "config.json")))
    ref, acfg = merged_reference(model, lora)
    out = os.path.join(tmp, "out")
    files = {}
    for q in ("f32", "f16", "bf16", "q8_0", "q4_k_m"):
        files[q] = os.path.join(out, f"m-{q}.gguf")
        run("--model", model, "--adapter", lora, "--format", "gguf", "--quant", q, "--output", files[q],
            "--overwrite", "--threads", "2")
    readers = {q: GGUFReader(p) for q, p in files.items()}
    ftype_ids = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_k_m": 15}
    for q, r in readers.items():
        check_keys(r, cfg, model, ftype_ids[q])
    n_layer = cfg["num_hidden_layers"]
    t32, t16, tb16, t8, tk = (tensor_map(readers[q]) for q in ("f32", "f16", "bf16", "q8_0", "q4_k_m"))
    check(set(t32) == set(ref), f"tensor names: {sorted(set(t32) ^ set(ref))}")
    check(len(t32) == 2 + 12 * n_layer, f"{len(t32)} tensors, expected {2 + 12 * n_layer}")
    worst_k = {}
    blocks = {QT.Q4_K: ([], []), QT.Q6_K: ([], [])}
    for name, w in ref.items():
        x = t32[name]
        check(list(x.shape) == list(reversed(w.shape)) or (w.ndim == 1 and list(x.shape) == [w.shape[0]]),
              f"{name}: ne {list(x.shape)} for HF shape {w.shape}")
        check(x.tensor_type == QT.F32, f"{name}: F32 file holds {x.tensor_type.name}")
        got = as_f32(x)
        want = bf16_round(w).reshape(-1)
        # the C merge sums B@A in another order than numpy's matmul: allow one bf16 step
        diff = np.abs(got - want)
        ulp = np.maximum(np.abs(want), np.abs(got)) * 2.0 ** -7 + 1e-9
        exact = float(np.mean(got == want))
        check(np.all(diff <= ulp) and exact > 0.99, f"{name}: merged weights differ (exact {exact:.4f}, "
                                                   f"max diff {diff.max():.3g})")
        two_d = w.ndim == 2
        # F16 / BF16: plain conversions of the same data
        check(t16[name].tensor_type == (QT.F16 if two_d else QT.F32), f"{name}: F16 file type {t16[name].tensor_type.name}")
        if two_d:
            b16 = np.asarray(t16[name].data).view(np.uint8).reshape(-1)
            check(np.array_equal(b16, got.astype(np.float16).view(np.uint8)), f"{name}: F16 bytes differ from numpy")
            bb = np.asarray(tb16[name].data).view(np.uint8).reshape(-1)
            check(np.array_equal(bb, gguf.quants.quantize(got, QT.BF16).view(np.uint8).reshape(-1)),
                  f"{name}: BF16 bytes differ from gguf.quants")
            # Q8_0: identical to gguf's numpy quantizer
            check(t8[name].tensor_type == QT.Q8_0, f"{name}: Q8_0 file type {t8[name].tensor_type.name}")
            b8 = np.asarray(t8[name].data).view(np.uint8).reshape(-1)
            check(np.array_equal(b8, gguf.quants.quantize(got.reshape(-1, w.shape[1]),
                                                          QT.Q8_0).view(np.uint8).reshape(-1)),
                  f"{name}: Q8_0 bytes differ from gguf.quants.quantize")
        # Q4_K_M mixture and accuracy
        k = tk[name]
        ne0 = w.shape[1] if two_d else w.shape[0]
        want_t = expected_q4km(name, n_layer, cfg["tie_word_embeddings"], ne0)
        check(k.tensor_type == want_t, f"{name}: q4_k_m type {k.tensor_type.name}, expected {want_t.name}")
        raw = np.asarray(k.data).view(np.uint8)
        if k.tensor_type in (QT.Q4_K, QT.Q6_K):
            deq = gguf.quants.dequantize(raw, k.tensor_type).reshape(-1)
            rel = float(np.sqrt(np.mean((deq - got) ** 2)) / np.sqrt(np.mean(got ** 2)))
            worst_k[k.tensor_type] = max(worst_k.get(k.tensor_type, 0.0), rel)
            bs = 144 if k.tensor_type == QT.Q4_K else 210
            nb = min(got.size // 256, 48)  # the first blocks of each tensor go to the byte oracle
            blocks[k.tensor_type][0].append(got[: nb * 256].reshape(nb, 256))
            blocks[k.tensor_type][1].append(raw.reshape(-1)[: nb * bs].reshape(nb, bs))
        elif k.tensor_type == QT.F32:
            check(np.array_equal(as_f32(k), got), f"{name}: F32 in q4_k_m differs")
    # the quantizers' dequantized error on N(0, 0.02) weights (ggml: ~7-8% Q4_K, ~2% Q6_K)
    print("worst relative RMS error:", {t.name: round(v, 4) for t, v in worst_k.items()})
    check(worst_k.get(QT.Q4_K, 1) < 0.12, f"Q4_K error {worst_k.get(QT.Q4_K)}")
    check(worst_k.get(QT.Q6_K, 1) < 0.035, f"Q6_K error {worst_k.get(QT.Q6_K)}")
    for qt, fn in ((QT.Q4_K, quant_ref.quantize_q4_k), (QT.Q6_K, quant_ref.quantize_q6_k)):
        xs, bs = blocks[qt]
        if not xs:
            check(False, f"no {qt.name} tensors")
            continue
        mine = np.concatenate(bs)
        oracle = fn(np.concatenate(xs))
        same = float(np.mean(np.all(mine == oracle, axis=1)))
        print(f"{qt.name}: {same * 100:.2f}% of {mine.shape[0]} blocks identical to the numpy reference port")
        check(same == 1.0, f"{qt.name} blocks differ from the reference quantizer")

    # Modelfile beside the GGUF
    mf = open(os.path.join(out, "Modelfile"), encoding="utf-8").read()
    check("FROM ./m-q4_k_m.gguf" in mf, "Modelfile FROM names the last GGUF written beside it")
    check("### Instruction:\n{{ .Prompt }}" in mf and "{{ .Response }}" in mf, "Modelfile TEMPLATE is alpaca-zh")
    check('PARAMETER stop "<|im_end|>"' in mf, "Modelfile stops at <|im_end|>")
    run("--model", model, "--adapter", lora, "--format", "gguf", "--quant", "q8_0", "--template", "chatml",
        "--output", os.path.join(tmp, "chat", "c.gguf"))
    mf = open(os.path.join(tmp, "chat", "Modelfile"), encoding="utf-8").read()
    check("<|im_start|>user\n{{ .Prompt }}" in mf and 'PARAMETER stop "<|im_start|>"' in mf, "ChatML Modelfile")

    # refusal to overwrite; unwritable path
    before = open(files["q8_0"], "rb").read()
    p = run("--model", model, "--adapter", lora, "--format", "gguf", "--quant", "q8_0", "--output", files["q8_0"],
            ok=False)
    check(p.returncode != 0 and "already exists" in p.stderr, f"existing output refused: {p.stderr.strip()}")
    check(open(files["q8_0"], "rb").read() == before, "refused export left the file as it was")
    blocker = os.path.join(tmp, "afile")
    open(blocker, "w").write("x")
    p = run("--model", model, "--format", "gguf", "--quant", "f16", "--output", os.path.join(blocker, "x.gguf"), ok=False)
    check(p.returncode != 0 and p.stderr.strip() != "", f"unwritable path is an error: {p.stderr.strip()}")
    ro = os.path.join(tmp, "ro")
    os.makedirs(ro)
    os.chmod(ro, 0o500)
    if os.geteuid() != 0:  # root writes anywhere
        p = run("--model", model, "--format", "gguf", "--quant", "f16", "--output", os.path.join(ro, "x.gguf"), ok=False)
        check(p.returncode != 0 and not os.listdir(ro), "read-only folder: error and nothing left")

    # GGUF LoRA adapter
    lg = os.path.join(tmp, "lora.gguf")
    run("--model", model, "--adapter", lora, "--format", "gguf-lora", "--output", lg)
    r = GGUFReader(lg)
    for k, (types, val) in {"general.architecture": ([VT.STRING], "qwen2"), "general.type": ([VT.STRING], "adapter"),
                            "adapter.type": ([VT.STRING], "lora"),
                            "adapter.lora.alpha": ([VT.FLOAT32], acfg["lora_alpha"])}.items():
        t, v = field(r, k)
        check(t == types and v == val, f"LoRA key {k}: {t} {v}")
    check("tokenizer.ggml.tokens" not in r.fields and "general.file_type" not in r.fields, "LoRA GGUF has no vocab")
    ad = load_file(os.path.join(lora, "adapter_model.safetensors"))
    lt = tensor_map(r)
    check(len(lt) == 2 * 7 * n_layer, f"LoRA tensors: {len(lt)}")
    for key, a in ad.items():
        parts = key.split(".")  # base_model.model.model.layers.L.parent.proj.lora_X.weight
        name = f"blk.{parts[4]}.{GGUF_PROJ[parts[6]]}.weight.lora_{parts[7][-1].lower()}"
        t = lt.get(name)
        if not check(t is not None, f"LoRA tensor {name} missing"):
            continue
        check(t.tensor_type == QT.F32 and list(t.shape) == [a.shape[1], a.shape[0]], f"{name}: {t.shape}")
        check(np.array_equal(as_f32(t), a.reshape(-1)), f"{name}: bytes differ from the PEFT tensor")

    # PEFT adapter (lt_model_save_adapter): the same tensors and alpha / r back
    pd = os.path.join(tmp, "peft")
    run("--model", model, "--adapter", lora, "--format", "peft", "--output", pd)
    pc = json.load(open(os.path.join(pd, "adapter_config.json")))
    check(pc.get("peft_type") == "LORA" and pc.get("r") == acfg["r"] and pc.get("lora_alpha") == acfg["lora_alpha"],
          f"PEFT config {pc.get('peft_type')} r={pc.get('r')} alpha={pc.get('lora_alpha')}")
    pt = load_file(os.path.join(pd, "adapter_model.safetensors"))
    check(set(pt) == set(ad) and all(np.array_equal(pt[k], ad[k]) for k in ad), "PEFT tensors round trip")

    # merged Hugging Face checkpoint, one file and sharded
    for shard in (None, "2000000"):
        d = os.path.join(tmp, "merged" + ("-sharded" if shard else ""))
        args = ["--model", model, "--adapter", lora, "--format", "merged", "--output", d]
        if shard:
            args += ["--max-shard-bytes", shard]
        run(*args)
        if shard:
            idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
            shards = sorted(set(idx["weight_map"].values()))
            check(len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors", f"shards {shards}")
            tensors = {}
            for s in shards:
                part, _ = read_st(os.path.join(d, s))
                tensors.update(part)
            check(idx["metadata"]["total_size"] == sum(v.size * 2 for v in tensors.values()), "index total_size")
        else:
            tensors, hdr = read_st(os.path.join(d, "model.safetensors"))
            check(hdr["__metadata__"] == {"format": "pt"}, "merged safetensors metadata")
            check(all(v["dtype"] == "BF16" for k, v in hdr.items() if k != "__metadata__"), "merged dtype BF16")
        for name, w in tensors.items():
            got = as_f32(t32[hf_to_gguf(name)])
            check(np.array_equal(w.reshape(-1), got), f"merged {name} differs from the GGUF's merged weights")
        for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
            check(open(os.path.join(d, f), "rb").read() == open(os.path.join(model, f), "rb").read(), f"{f} copied")

    # fallbacks: rows of 96 (Q4_K -> Q5_0, Q6_K -> Q8_0) and 200 (-> F16), untied head, f32 checkpoint
    fb = os.path.join(tmp, "fb")
    subprocess.run([sys.executable, mk, fb, "--small-vocab", "1000", "--hidden", "96", "--inter", "200", "--layers",
                    "3", "--heads", "2", "--kv-heads", "1", "--dtype", "f32", "--untied"], check=True)
    fcfg = json.load(open(os.path.join(fb, "config.json")))
    fq, f32p = os.path.join(tmp, "fb-q4km.gguf"), os.path.join(tmp, "fb-f32.gguf")
    run("--model", fb, "--format", "gguf", "--quant", "q4_k_m", "--output", fq, "--no-modelfile")
    run("--model", fb, "--format", "gguf", "--quant", "f32", "--output", f32p, "--no-modelfile")
    base, _ = read_st(os.path.join(fb, "model.safetensors"))
    fr, f32r = tensor_map(GGUFReader(fq)), tensor_map(GGUFReader(f32p))
    check("output.weight" in fr, "untied model writes output.weight")
    for hf, w in base.items():
        name = hf_to_gguf(hf)
        ne0 = w.shape[-1]
        want_t = expected_q4km(name, fcfg["num_hidden_layers"], False, ne0)
        t = fr[name]
        check(t.tensor_type == want_t, f"fallback {name}: {t.tensor_type.name}, expected {want_t.name}")
        check(np.array_equal(as_f32(f32r[name]), w.reshape(-1)), f"f32 checkpoint {name} kept exactly")
        raw = np.asarray(t.data).view(np.uint8)
        if t.tensor_type in (QT.Q5_0, QT.Q8_0):
            check(np.array_equal(raw.reshape(-1), gguf.quants.quantize(w.reshape(-1, ne0), t.tensor_type)
                                 .view(np.uint8).reshape(-1)), f"{name}: {t.tensor_type.name} bytes differ from gguf")
        elif t.tensor_type == QT.F16:
            check(np.array_equal(raw.reshape(-1), w.astype(np.float16).view(np.uint8).reshape(-1)), f"{name}: F16")
    print("FAILED:" if FAILS else "all checks passed", len(FAILS))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
