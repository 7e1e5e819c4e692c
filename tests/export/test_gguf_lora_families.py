#!/usr/bin/env python3
"""test_gguf_lora_families.py - `loratune export --format gguf-lora` of every family
(tests/fixtures/families: llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3, each with its PEFT
adapter), checked without llama.cpp, with the gguf Python package:
  - general.architecture equals the base GGUF's (llama.cpp refuses an adapter of another
    architecture; Mistral's is "llama"), general.type "adapter", adapter.type "lora";
  - the adapted tensors are exactly those the adapter's target_modules name, under llama.cpp's
    names (q_proj -> blk.N.attn_q ... down_proj -> blk.N.ffn_down; Phi-3's fused qkv_proj ->
    blk.N.attn_qkv and gate_up_proj -> blk.N.ffn_up), each "<name>.lora_a" / ".lora_b" pair in
    F32 with the shapes llama.cpp's adapter loader requires against the base GGUF's tensor
    (a.ne[0] = w.ne[0], b.ne[1] = w.ne[1], a.ne[1] = b.ne[0] = r);
  - the values: what llama.cpp adds, alpha / r * B @ A in the GGUF's own layout, equals the merged
    F32 GGUF minus the base F32 GGUF tensor by tensor (rel <= 1e-5), so that Llama's permuted q/k
    rows, Phi-3's fused rows and the scale are right; and the adapter changes something
    (every delta non-zero).
Exit 0 pass, 1 fail, 77 skip (no numpy / gguf, or no loratune command)."""
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from gguf import GGUFReader
except Exception as e:  # noqa: BLE001
    print(f"SKIP: numpy / gguf not importable ({e})")
    sys.exit(77)

ROOT = os.environ.get("LT_REPO_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CLI = os.environ.get("LORATUNE_CLI") or os.path.join(os.environ.get("LT_BUILD_DIR", "build"), "loratune")
FIX = os.path.join(ROOT, "tests", "fixtures", "families")
TOK = os.path.join(FIX, "tokenizer-bpe256")
FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"]
ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2",
        "gemma3": "gemma3", "phi3": "phi3"}
# PEFT module name -> llama.cpp tensor name (llama.cpp's tensor map, written out here on purpose:
# the exporter's own table is what is checked)
GGUF_NAME = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down", "qkv_proj": "attn_qkv",
             "gate_up_proj": "ffn_up"}


def export(*args):
    r = subprocess.run([CLI, "export", "--tokenizer", TOK, "--device", "cpu", "--overwrite", *args],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"loratune export {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-1500:]}")


def kv(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    v = f.parts[f.data[0]]
    return bytes(v).decode() if v.dtype == np.uint8 else v.tolist()[0]


def tensors(reader):
    return {t.name: t for t in reader.tensors}


def check(tmp, fam):
    src = os.path.join(FIX, fam)
    ad = os.path.join(src, "adapter")
    acfg = json.load(open(os.path.join(ad, "adapter_config.json")))
    ncfg = json.load(open(os.path.join(src, "config.json")))
    base, merged, lora = (os.path.join(tmp, f"{fam}-{k}.gguf") for k in ("base", "merged", "lora"))
    export("--model", src, "--format", "gguf", "--quant", "f32", "--no-modelfile", "--output", base)
    export("--model", src, "--adapter", ad, "--format", "gguf", "--quant", "f32", "--no-modelfile", "--output", merged)
    export("--model", src, "--adapter", ad, "--format", "gguf-lora", "--output", lora)
    rb, rm, rl = GGUFReader(base), GGUFReader(merged), GGUFReader(lora)
    errs = []
    arch = kv(rl, "general.architecture")
    if arch != kv(rb, "general.architecture") or arch != ARCH[fam]:
        errs.append(f"general.architecture {arch!r}, base GGUF {kv(rb, 'general.architecture')!r}, want {ARCH[fam]!r}")
    for key, want in (("general.type", "adapter"), ("adapter.type", "lora")):
        if kv(rl, key) != want:
            errs.append(f"{key} {kv(rl, key)!r}, want {want!r}")
    alpha = kv(rl, "adapter.lora.alpha")
    tb, tm, tl = tensors(rb), tensors(rm), tensors(rl)
    want_names = {f"blk.{i}.{GGUF_NAME[m]}.weight" for i in range(ncfg["num_hidden_layers"])
                  for m in acfg["target_modules"]}
    got_names = {n[:-len(".lora_a")] for n in tl if n.endswith(".lora_a")}
    if got_names != want_names or len(tl) != 2 * len(want_names):
        errs.append(f"adapted tensors {sorted(set(tl) - {n + s for n in want_names for s in ('.lora_a', '.lora_b')})} "
                    f"extra, {sorted(want_names - got_names)} missing")
    worst, n_checked, zero = 0.0, 0, []
    for name in sorted(got_names & want_names):
        a, b, w = tl.get(name + ".lora_a"), tl.get(name + ".lora_b"), tb.get(name)
        if b is None or w is None:
            errs.append(f"{name}: lora_b or the base tensor missing")
            continue
        an, bn, wn = [int(x) for x in a.shape], [int(x) for x in b.shape], [int(x) for x in w.shape]  # ne order
        if a.tensor_type.name != "F32" or b.tensor_type.name != "F32":
            errs.append(f"{name}: lora types {a.tensor_type.name}/{b.tensor_type.name}, want F32")
        if an[0] != wn[0] or bn[1] != wn[1] or an[1] != bn[0] or an[1] != acfg["r"]:
            errs.append(f"{name}: lora_a ne {an}, lora_b ne {bn}, weight ne {wn}, r {acfg['r']}")
            continue
        A = np.asarray(a.data, dtype=np.float64).reshape(an[1], an[0])
        B = np.asarray(b.data, dtype=np.float64).reshape(bn[1], bn[0])
        delta = np.asarray(tm[name].data, dtype=np.float64) - np.asarray(w.data, dtype=np.float64)
        delta = delta.reshape(wn[1], wn[0])
        mine = alpha / an[1] * (B @ A)
        if not np.abs(delta).max() > 0:
            zero.append(name)
        err = float(np.linalg.norm(mine - delta) / max(np.linalg.norm(delta), 1e-30))
        worst = max(worst, err)
        n_checked += 1
        if err > 1e-5:
            errs.append(f"{name}: alpha/r * B @ A differs from merged - base by rel {err:.2e}")
    if zero:
        errs.append(f"the adapter changes nothing in {zero}")
    print(f"{fam}: arch {arch}, alpha {alpha}, {n_checked} adapted tensors "
          f"({', '.join(sorted({n.split('.', 2)[2][:-7] for n in got_names}))}); "
          f"alpha/r * B @ A vs merged - base F32: worst rel {worst:.1e} {'ok' if not errs else 'FAIL'}")
    for e in errs:
        print(f"  FAIL {fam}: {e}")
    return len(errs)


def main():
    if not os.path.exists(CLI):
        print(f"SKIP: no loratune command at {CLI}")
        return 77
    bad = 0
    with tempfile.TemporaryDirectory(prefix="lt_gguf_lora_") as tmp:
        for fam in (sys.argv[1].split(",") if len(sys.argv) > 1 else FAMILIES):
            try:
                bad += check(tmp, fam)
            except Exception as e:  # noqa: BLE001
                print(f"FAIL {fam}: {e}")
                bad += 1
    print("test_gguf_lora_families:", "FAIL" if bad else "ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
