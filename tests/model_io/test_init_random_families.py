#!/usr/bin/env python3
"""test_init_random_families.py - `loratune init-random` for every family the loader accepts
(the configs of tests/fixtures/families): the checkpoint holds exactly the tensors (names and
shapes) of the transformers-made fixture checkpoint of the same config (Qwen3's q_norm/k_norm,
Gemma 2/3's four norms per layer, Phi-3's fused qkv_proj / gate_up_proj), norm weights as
transformers' _init_weights sets them (ones; zeros for Gemma's (1 + w) norms), and it loads and
trains: `loratune train` on the CPU, one step, with a loss near ln(vocab) as a random model gives.
Python standard library only (no torch)."""
import json
import math
import os
import shutil
import struct
import subprocess
import sys

ROOT = os.environ.get("LT_REPO_ROOT") or os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLI = os.environ.get("LORATUNE_CLI")
BUILD = os.environ.get("LT_BUILD_DIR", ".")
FAM = os.path.join(ROOT, "tests", "fixtures", "families")
FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"]
DATA = os.path.join(ROOT, "assets", "ruozhiba", "ruozhiba_qa.json")


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h, 8 + n


def f32_values(path, name):
    h, base = header(path)
    t = h[name]
    assert t["dtype"] == "F32", (name, t["dtype"])
    a, b = t["data_offsets"]
    with open(path, "rb") as f:
        f.seek(base + a)
        raw = f.read(b - a)
    return struct.unpack("<%df" % (len(raw) // 4), raw)


def main():
    if not CLI or not os.path.exists(CLI):
        print("SKIP: LORATUNE_CLI (the loratune command) is not built")
        return 77
    work = os.path.join(BUILD, "test_init_random_families.%d" % os.getpid())
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    failures = []
    try:
        for fam in FAMILIES:
            cfg = json.load(open(os.path.join(FAM, fam, "config.json")))
            out = os.path.join(work, fam)
            r = subprocess.run([CLI, "init-random", "--config", os.path.join(FAM, fam, "config.json"), "--output", out,
                                "--seed", "5", "--dtype", "f32", "--tokenizer", os.path.join(FAM, "tokenizer-bpe256")],
                               capture_output=True, text=True)
            if r.returncode != 0:
                failures.append("%s: init-random failed: %s" % (fam, r.stderr.strip()))
                continue
            mine, _ = header(os.path.join(out, "model.safetensors"))
            ref, _ = header(os.path.join(FAM, fam, "model.safetensors"))
            shapes = {k: v["shape"] for k, v in mine.items()}
            ref_shapes = {k: v["shape"] for k, v in ref.items()}
            if shapes != ref_shapes:
                miss = sorted(set(ref_shapes) - set(shapes))
                extra = sorted(set(shapes) - set(ref_shapes))
                bad = sorted(k for k in set(shapes) & set(ref_shapes) if shapes[k] != ref_shapes[k])
                failures.append("%s: tensors differ from transformers' checkpoint: missing %s, extra %s, shapes %s" %
                                (fam, miss[:4], extra[:4], bad[:4]))
                continue
            want = 0.0 if fam.startswith("gemma") else 1.0
            norms = [k for k in shapes if "norm" in k]
            wrong = [k for k in norms if set(f32_values(os.path.join(out, "model.safetensors"), k)) != {want}]
            if wrong:
                failures.append("%s: norm weights not all %g: %s" % (fam, want, wrong[:3]))
            # loads and trains one step on the CPU
            r = subprocess.run([CLI, "train", "--model", out, "--data", DATA, "--output", os.path.join(work, fam + "-run"),
                                "--device", "cpu", "--max-steps", "1", "--grad-accum", "1", "--batch-size", "2",
                                "--max-seq-len", "64", "--warmup-steps", "0", "--gen-instruction", ""], capture_output=True, text=True)
            if r.returncode != 0:
                failures.append("%s: train failed (%d): %s" % (fam, r.returncode, (r.stderr or r.stdout).strip()[-400:]))
                continue
            log = [json.loads(l) for l in open(os.path.join(work, fam + "-run", "log.jsonl")) if l.strip()]
            losses = [e["loss"] for e in log if "loss" in e]
            gnorm = [e.get("grad_norm", float("nan")) for e in log if "loss" in e]
            lnv = math.log(cfg["vocab_size"])
            if not gnorm or not (math.isfinite(gnorm[0]) and gnorm[0] > 0):
                failures.append("%s: step-1 gradient norm %s (finite and > 0 expected)" % (fam, gnorm[:1]))
                continue
            if not losses or not math.isfinite(losses[0]) or abs(losses[0] - lnv) > 1.0:
                failures.append("%s: step-1 loss %s, a random model gives about ln(%d) = %.3f" %
                                (fam, losses[:1], cfg["vocab_size"], lnv))
                continue
            print("%-8s %3d tensors as transformers writes them (%d norms = %g), 1 step: loss %.4f (ln V %.4f), "
                  "grad norm %.4g" % (fam, len(shapes), len(norms), want, losses[0], lnv, gnorm[0]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for f in failures:
        print("FAIL:", f)
    if failures:
        return 1
    print("test_init_random_families: passed (%d families)" % len(FAMILIES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
