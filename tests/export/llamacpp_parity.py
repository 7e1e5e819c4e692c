#!/usr/bin/env python3
"""llamacpp_parity.py - greedy parity between loratune and llama.cpp on loratune's GGUF exports
of one model + LoRA adapter, with the logit margins that make a disagreement judgeable.

For the model and adapter given it:
  1. exports with `loratune export`: the merged HF checkpoint, the merged GGUF in each --formats
     (default f16, q8_0, q4_k_m), the unmerged base as F16 GGUF and the adapter as GGUF LoRA;
  2. loratune references, on the CPU backend in fp32 (--quant none), through libloratune:
       merged: the merged checkpoint (what `loratune generate` on the merged folder prints;
               its weights are rounded to the checkpoint's dtype, bf16 here);
       unmerged: the base with the adapter applied unmerged (fp32 LoRA path, no rounding of
               W + scale*B@A), the reference for llama.cpp's --lora run;
       gguf:   the very weights in each GGUF file, dequantized (gguf-py) into an fp32
               safetensors checkpoint, so that a Q8_0 / Q4_K_M file is compared with loratune
               on the same rounded weights;
     each generates 16 greedy tokens (EOS not honoured, as llama.cpp is not told to stop), then
     one teacher-forced forward over prompt + generated ids gives loratune's top-1 minus top-2
     logit margin at every step;
  3. llama.cpp (libllama through llamacpp_greedy.c, compiled here against the build given) loads
     each GGUF, tokenizes each prompt (checked against loratune's ids), and greedy-decodes 16
     tokens from loratune's prompt ids, also reporting its own margins; the F16 base + GGUF LoRA
     (--lora, scale 1) is run the same way;
     with --control q8_0 (default), llama.cpp also runs the Q8_0 file's dequantized weights
     written as an F32 GGUF (row "q8_0@f32"): the same weights through llama.cpp's f32 path;
  4. prints one row per (format, reference, prompt): equal = tokens equal before the first
     difference (of 16), the step of the first difference, loratune's and llama.cpp's margins
     there, loratune's smallest margin over the 16 steps, and max|dlog|, the largest difference
     between the two engines' logits (all vocab) over the steps where both saw the same context.
A difference is a near-tie when loratune's margin at that step is below 2 * max|dlog| (or
--tie): there the two engines' own numeric difference (fp16 activations and KV cache in
llama.cpp, 8-bit activations in its Q8_0 / K-quant dot products) can order the two best
tokens either way. Exit status 0 when
every row of a required pair (--require, default f16:merged,f16:gguf,q8_0:gguf,q8_0@f32:gguf,
lora:merged,lora:unmerged) is
16/16 or explained, 1 otherwise, 77 when llama.cpp / numpy / gguf are not at hand.

usage: llamacpp_parity.py --llama LLAMA_CPP_DIR --model DIR --adapter DIR --work DIR
                          [--name tiny] [--prompt TEXT]... [--formats f16,q8_0,q4_k_m]
                          [--threads 2] [--keep] [--json OUT.jsonl]
LLAMA_CPP_DIR is a llama.cpp checkout with its build in build/ (build/bin/libllama.so);
LORATUNE_CLI and LORATUNE_LIBRARY name the loratune command and library.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SKIP = 77

try:
    import numpy as np
    import gguf
except ImportError as e:  # CI without the packages: not a failure of loratune
    print("skip: %s" % e)
    sys.exit(SKIP)

sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))


def log(msg):
    print(msg, flush=True)


def run(cmd, what):
    t = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit("%s failed (%d): %s" % (what, p.returncode, (p.stderr or p.stdout)[-2000:]))
    return time.time() - t


# ---- llama.cpp side ---------------------------------------------------------------------------
def llama_paths(d):
    """(include dirs, link arguments) of a llama.cpp checkout d with its build in d/build: a shared
    libllama.so (build/bin; or d/bin, d itself a build beside its source), or the static libraries
    of a -DBUILD_SHARED_LIBS=OFF build (build/src/libllama.a, build/ggml/src/libggml*.a); or None."""
    for build in (os.path.join(d, "build"), d):
        for lib in (os.path.join(build, "bin"), build):
            if os.path.exists(os.path.join(lib, "libllama.so")):
                src = d if os.path.exists(os.path.join(d, "include", "llama.h")) else os.path.dirname(os.path.dirname(lib))
                inc = [os.path.join(src, "include"), os.path.join(src, "ggml", "include")]
                if os.path.exists(os.path.join(inc[0], "llama.h")):
                    return inc, ["-L" + lib, "-lllama", "-Wl,-rpath," + lib]
        static = [os.path.join(build, "src", "libllama.a")] + \
                 [os.path.join(build, "ggml", "src", "libggml%s.a" % s) for s in ("", "-cpu", "-base")]
        if all(os.path.exists(f) for f in static):
            inc = [os.path.join(d, "include"), os.path.join(d, "ggml", "include")]
            if os.path.exists(os.path.join(inc[0], "llama.h")):
                return inc, static + ["-lstdc++", "-lm", "-lpthread", "-fopenmp"]
    return None


def build_client(llama_dir, work):
    inc, link = llama_paths(llama_dir)
    exe = os.path.join(work, "llamacpp_greedy")
    cc = os.environ.get("CC", "cc")
    # llama.h has changed: llama_memory_clear replaced llama_kv_cache_clear, llama_set_adapters_lora
    # llama_set_adapter_lora; the client takes what this llama.h declares
    hdr = open(os.path.join(inc[0], "llama.h"), encoding="utf-8").read()
    defs = (["-DLT_LLAMA_MEMORY_API"] if "llama_memory_clear(" in hdr else []) + \
           (["-DLT_LLAMA_SET_ADAPTERS"] if "llama_set_adapters_lora(" in hdr else [])
    cmd = [cc, "-O2", "-std=c11", *defs, os.path.join(HERE, "llamacpp_greedy.c"), "-o", exe] + \
          ["-I" + i for i in inc] + link
    run(cmd, "compiling llamacpp_greedy.c")
    return exe


class Llama:
    """One llamacpp_greedy process holding one GGUF (+ LoRA) loaded."""

    def __init__(self, exe, gguf_path, threads, lora=None):
        cmd = ["nice", exe, gguf_path, str(threads)] + ([lora] if lora else [])
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        out = self.p.stdout.readline()
        if not out:
            raise SystemExit("llamacpp_greedy stopped (see its stderr above)")
        return json.loads(out)

    def tokenize(self, text):
        return self.ask("T " + text.encode("utf-8").hex())["ids"]

    def greedy(self, ids, n, dump):
        """Greedy ids and margins; the logits of every step are read back from the file dump."""
        r = self.ask("G %d %s %s" % (n, dump, " ".join(map(str, ids))))
        if r["rc"] != 0:
            raise SystemExit("llama_decode failed with %d" % r["rc"])
        r["logits"] = np.fromfile(dump, dtype=np.float32).reshape(n, -1)
        os.remove(dump)
        return r

    def close(self):
        self.p.stdin.close()
        self.p.wait()


# ---- GGUF -> fp32 HF checkpoint (loratune on the same rounded weights) -----------------------
GGUF_TO_HF = {
    "token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head",
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(name):
    parts = name.split(".")
    if parts[0] == "blk":
        return "model.layers.%s.%s.%s" % (parts[1], GGUF_TO_HF[parts[2]], parts[3])
    return "%s.%s" % (GGUF_TO_HF[parts[0]], parts[1])


def gguf_to_hf(gguf_path, like_dir, out_dir):
    """Writes out_dir: like_dir's config/tokenizer files and model.safetensors holding the GGUF's
    tensors dequantized to fp32 (F16 kept as F16: exact), streamed one tensor at a time."""
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    for f in os.listdir(like_dir):
        if not f.endswith(".safetensors") and not f.endswith(".index.json"):
            shutil.copy(os.path.join(like_dir, f), out_dir)
    cfg = json.load(open(os.path.join(out_dir, "config.json")))
    r = gguf.GGUFReader(gguf_path)
    header, off, plan = {}, 0, []
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape.tolist())]  # GGUF lists ne0 (columns) first
        keep16 = t.tensor_type == gguf.GGMLQuantizationType.F16
        nbytes = int(np.prod(shape)) * (2 if keep16 else 4)
        header[hf_name(t.name)] = {"dtype": "F16" if keep16 else "F32", "shape": shape,
                                   "data_offsets": [off, off + nbytes]}
        plan.append((t, shape, keep16))
        off += nbytes
    if cfg.get("tie_word_embeddings") and "lm_head.weight" in header:
        cfg["tie_word_embeddings"] = False
    cfg["torch_dtype"] = "float32"
    json.dump(cfg, open(os.path.join(out_dir, "config.json"), "w"), indent=2)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(out_dir, "model.safetensors"), "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for t, shape, keep16 in plan:
            if keep16:
                a = np.asarray(t.data, dtype=np.float16)
            else:
                a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            a = a.reshape(shape)
            f.write(np.ascontiguousarray(a).tobytes())
    del r


# ---- loratune side ---------------------------------------------------------------------------
def loratune_refs(lt, model_dir, prompts_ids, n, threads, adapter=None):
    """Greedy ids from loratune's generate and, from one teacher-forced forward over prompt +
    generated ids, the top-1 - top-2 margin at each step (and a check that the forward's
    argmax is the generated id)."""
    m = lt.Model(model_dir, device="cpu", quant="none", n_threads=threads, max_seq_len=512)
    if adapter:
        m.load_adapter(adapter)
    out = []
    try:
        for ids in prompts_ids:
            gen = list(m.generate(ids, max_new_tokens=n, stop_ids=[-1]))
            lg = m.logits(ids + gen)[len(ids) - 1:len(ids) - 1 + n]
            top2 = np.sort(np.partition(lg, -2, axis=1)[:, -2:], axis=1)
            margin = (top2[:, 1] - top2[:, 0]).tolist()
            consistent = [int(i) for i in lg.argmax(axis=1)] == gen
            out.append({"ids": gen, "margin": margin, "consistent": consistent, "logits": lg})
    finally:
        m.close()
    return out


def compare(ref, got):
    """(equal tokens before the first difference, the step of the first difference or None)."""
    for i, (a, b) in enumerate(zip(ref, got)):
        if a != b:
            return i, i
    return min(len(ref), len(got)), None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--name", default="model")
    ap.add_argument("--prompt", action="append")
    ap.add_argument("--formats", default="f16,q8_0,q4_k_m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--tie", type=float, default=0.0)
    ap.add_argument("--require", default="f16:merged,f16:gguf,q8_0:gguf,q8_0@f32:gguf,lora:merged,lora:unmerged")
    ap.add_argument("--control", default="q8_0",
                    help="quantized formats whose dequantized weights llama.cpp also runs as F32 GGUF")
    ap.add_argument("--json")
    ap.add_argument("--keep", action="store_true", help="keep the dequantized checkpoints")
    a = ap.parse_args()

    if llama_paths(a.llama) is None:
        print("skip: no llama.cpp build (libllama.so or the static libllama.a + libggml*.a, and include/llama.h) under %s" % a.llama)
        return SKIP
    cli = os.environ.get("LORATUNE_CLI", os.path.join(ROOT, "build", "loratune"))
    if not os.access(cli, os.X_OK):
        print("skip: no loratune command at %s (set LORATUNE_CLI)" % cli)
        return SKIP
    import loratune as lt

    prompts = a.prompt or ["Hello, my name is", "下面是一个问题：", "The capital of France"]
    formats = a.formats.split(",")
    controls = [q for q in a.control.split(",") if q in formats and q not in ("f16", "bf16", "f32")]
    W = a.work
    os.makedirs(W, exist_ok=True)
    exe = build_client(a.llama, W)
    times = {}

    # 1. exports
    M, A = a.model, a.adapter
    merged = os.path.join(W, a.name + "-merged")
    t = run([cli, "export", "--model", M, "--adapter", A, "--format", "merged", "--overwrite",
             "--threads", str(a.threads), "--output", merged], "export merged")
    times["export merged"] = t
    files = {}
    for q in formats:
        files[q] = os.path.join(W, "%s-%s.gguf" % (a.name, q))
        times["export " + q] = run([cli, "export", "--model", M, "--adapter", A, "--format", "gguf", "--quant", q,
                                    "--no-modelfile", "--overwrite", "--threads", str(a.threads),
                                    "--output", files[q]], "export gguf " + q)
    base = os.path.join(W, a.name + "-base-f16.gguf")
    lora = os.path.join(W, a.name + "-lora.gguf")
    times["export base f16"] = run([cli, "export", "--model", M, "--format", "gguf", "--quant", "f16",
                                    "--no-modelfile", "--overwrite", "--threads", str(a.threads),
                                    "--output", base], "export base")
    times["export gguf-lora"] = run([cli, "export", "--model", M, "--adapter", A, "--format", "gguf-lora",
                                     "--overwrite", "--output", lora], "export gguf-lora")

    # 2. loratune references
    tok = lt.Tokenizer(merged)
    pids = [tok.encode(p) for p in prompts]
    refs = {}
    t0 = time.time()
    refs["merged"] = loratune_refs(lt, merged, pids, a.tokens, a.threads)
    times["loratune merged"] = time.time() - t0
    t0 = time.time()
    refs["unmerged"] = loratune_refs(lt, M, pids, a.tokens, a.threads, adapter=A)
    times["loratune unmerged"] = time.time() - t0
    for q in formats:
        d = os.path.join(W, "%s-dq-%s" % (a.name, q))
        t0 = time.time()
        gguf_to_hf(files[q], merged, d)
        refs["gguf:" + q] = loratune_refs(lt, d, pids, a.tokens, a.threads)
        times["loratune on %s weights" % q] = time.time() - t0
        if q in controls:
            # the same rounded weights as an F32 GGUF: llama.cpp then runs its f32 path on them,
            # which isolates its quantized dot products (8-bit activations) from the weights
            files[q + "@f32"] = os.path.join(W, "%s-%s-as-f32.gguf" % (a.name, q))
            times["export %s@f32" % q] = run([cli, "export", "--model", d, "--format", "gguf", "--quant", "f32",
                                              "--no-modelfile", "--overwrite", "--threads", str(a.threads),
                                              "--output", files[q + "@f32"]], "export %s as f32" % q)
            refs["gguf:%s@f32" % q] = refs["gguf:" + q]
        if not a.keep:
            shutil.rmtree(d)

    # 3. llama.cpp
    got, tok_ok = {}, {}
    runs = [(q, files[q], None) for q in formats] + [("lora", base, lora), ("base", base, None)]
    runs += [(q + "@f32", files[q + "@f32"], None) for q in formats if q in controls]
    for q, path, lo in runs:
        t0 = time.time()
        ll = Llama(exe, path, a.threads, lo)
        tok_ok[q] = [ll.tokenize(p) == ids for p, ids in zip(prompts, pids)]
        got[q] = [ll.greedy(ids, a.tokens, os.path.join(W, "logits.f32")) for ids in pids]
        ll.close()
        times["llama.cpp " + q] = time.time() - t0
        if q.endswith("@f32") and not a.keep:
            os.remove(path)

    # 4. table
    rows, fails = [], 0
    required = set(a.require.split(","))
    pairs = []
    for q in formats:
        pairs += [(q, "merged"), (q, "gguf")]
    pairs += [(q + "@f32", "gguf") for q in formats if q in controls]
    pairs += [("lora", "merged"), ("lora", "unmerged"), ("lora", "llama f16")]
    log("\n%-8s %-9s %-10s %-6s %-8s %-5s %-9s %-9s %-9s %-9s %-8s" % (
        "model", "format", "reference", "prompt", "equal", "diff@", "lt_margin", "ll_margin", "min_lt",
        "max|dlog|", "tok_same"))
    for q, refname in pairs:
        for k in range(len(prompts)):
            if refname in ("merged", "unmerged"):
                ref = refs[refname][k]
            elif refname == "gguf":
                ref = refs["gguf:" + q][k]
            else:  # llama.cpp's own merged F16 run
                ref = dict(got["f16"][k], consistent=True)
            g = got[q][k]
            eq, at = compare(ref["ids"], g["ids"])
            # the two runs saw the same context up to and including the first differing step
            upto = a.tokens if at is None else at + 1
            err = float(np.abs(ref["logits"][:upto] - g["logits"][:upto]).max())
            ltm = ref["margin"][at] if at is not None else None
            llm = g["margin"][at] if at is not None else None
            # a flip is a near-tie when the two engines' logits differ by more than half the
            # winner's margin there (then either order is within their numeric difference)
            explained = at is not None and ltm < max(a.tie, 2 * err)
            key = "%s:%s" % (q, refname if refname in ("merged", "unmerged", "gguf") else "llama")
            ok = at is None or explained
            if key in required and not ok:
                fails += 1
            if not ref["consistent"]:
                log("note: loratune's generate and its teacher-forced argmax disagree (%s, prompt %d)" % (refname, k))
                fails += 1
            row = {"model": a.name, "format": q, "reference": refname, "prompt": k, "equal": eq,
                   "of": a.tokens, "diff_at": at, "lt_margin_at_diff": ltm, "ll_margin_at_diff": llm,
                   "min_lt_margin": min(ref["margin"]), "max_abs_logit_diff": err,
                   "tokenizer_same": tok_ok[q][k],
                   "explained_tie": explained}
            rows.append(row)
            f = lambda v: "-" if v is None else "%.4f" % v
            log("%-8s %-9s %-10s %-6d %2d/%-5d %-5s %-9s %-9s %-9s %-9s %-8s%s" % (
                a.name, q, refname, k, eq, a.tokens, "-" if at is None else at, f(ltm), f(llm),
                f(min(ref["margin"])), f(err), "yes" if tok_ok[q][k] else "NO",
                "  (near-tie)" if explained else "" if ok else "  DIFFERS"))
    base_same = sum(got["base"][k]["ids"] == got["lora"][k]["ids"] for k in range(len(prompts)))
    log("control: llama.cpp's base without the adapter equals the --lora run on %d of %d prompts "
        "(0 means the adapter was exercised)" % (base_same, len(prompts)))
    if base_same == len(prompts):
        fails += 1
    if not all(all(v) for v in tok_ok.values()):
        log("note: llama.cpp tokenized some prompt differently from loratune")
        fails += 1
    log("times (s, %d threads): %s" % (a.threads, ", ".join("%s %.1f" % kv for kv in times.items())))
    for k in range(len(prompts)):
        log("prompt %d %r -> loratune %r" % (k, prompts[k], tok.decode(refs["merged"][k]["ids"])))
    if a.json:
        with open(a.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    log("%s: %s" % (a.name, "all required rows equal or near-ties" if fails == 0 else "%d problem(s)" % fails))
    return 0 if fails == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
