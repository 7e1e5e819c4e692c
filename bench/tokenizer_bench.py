#!/usr/bin/env python3
"""tokenizer_bench.py - single-thread encode throughput (MB/s of UTF-8 input) of loratune's tokenizer
next to Hugging Face `tokenizers` on the same texts and machine, plus load times.

  python3 bench/tokenizer_bench.py [--lib build/libloratune.so] [--repeat 5]

Texts: the 1,475 ruozhiba records rendered with the alpaca-zh template + "<|im_end|>" (Chinese),
and an English/code mix built from the repository's own C sources. Both tokenizers encode each
text separately (add_special_tokens=False), one thread (RAYON_NUM_THREADS=1 for tokenizers); the
best of --repeat runs is reported. The ids are checked equal first."""
import argparse
import ctypes
import glob
import json
import os
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "tok"))
from lt_tok_py import Lib, Tokenizer  # noqa: E402

TEMPLATE = ("\n下面是描述一个任务，以一个输入然后提供一个回复\n### Instruction:\n{instruction}\n### Input:\n{input}"
            "\n### Response:\n{output}\n")


def corpora():
    recs = json.load(open(os.path.join(ROOT, "assets", "ruozhiba", "ruozhiba_qa.json"), encoding="utf-8"))
    zh = [TEMPLATE.replace("{instruction}", r["instruction"]).replace("{input}", r.get("input", ""))
          .replace("{output}", r["output"]) + "<|im_end|>" for r in recs]
    en = []
    for path in sorted(glob.glob(os.path.join(ROOT, "lib", "**", "*.[ch]"), recursive=True)):
        with open(path, encoding="utf-8", errors="replace") as f:
            txt = f.read()
        en += [txt[i:i + 2000] for i in range(0, len(txt), 2000)]
    return {"ruozhiba (zh)": zh, "C sources (en/code)": en}


def best_of(fn, repeat):
    """Best CPU time of `repeat` runs: both sides run on this one thread, so process CPU time is
    what they cost even on a busy machine (wall time is printed beside the load figures)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    r = fn()
    return r, time.perf_counter() - w, time.process_time() - c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.environ.get("LORATUNE_LIBRARY") or os.path.join(ROOT, "build", "libloratune.so"))
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "assets", "qwen2-tokenizer"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="a third of each corpus, for CI")
    a = ap.parse_args()
    try:
        import tokenizers
    except ImportError:
        print("SKIP: tokenizers is not installed")
        return 77
    lib = Lib(a.lib)
    lt, lt_w, lt_c = timed(lambda: Tokenizer(lib, a.tokenizer))
    hf, hf_w, hf_c = timed(lambda: tokenizers.Tokenizer.from_file(os.path.join(a.tokenizer, "tokenizer.json")))
    loads = []
    for _ in range(3):
        t2, w, c = timed(lambda: Tokenizer(lib, a.tokenizer))
        t2.close()
        loads.append((c, w))
    c2, w2 = min(loads)
    print(f"tokenizers {tokenizers.__version__}, loratune at {a.lib}")
    print(f"{'load Qwen2 tokenizer':<22} loratune {lt_c:6.3f} s cpu ({lt_w:.3f} s wall; best of 3 more: {c2:.3f} s cpu, "
          f"{w2:.3f} s wall)   tokenizers {hf_c:6.3f} s cpu ({hf_w:.3f} s wall)")
    ok = True
    for name, texts in corpora().items():
        if a.quick:
            texts = texts[::3]
        mb = sum(len(s.encode()) for s in texts) / 1e6
        for s in texts:
            if lt.encode(s) != hf.encode(s, add_special_tokens=False).ids:
                print(f"ids differ on {s[:60]!r}")
                ok = False
                break
        enc = lt.encode
        t_lt = best_of(lambda: [enc(s) for s in texts], a.repeat)
        t_hf = best_of(lambda: [hf.encode(s, add_special_tokens=False) for s in texts], a.repeat)
        print(f"{name:<22} loratune {mb / t_lt:7.2f} MB/s   tokenizers {mb / t_hf:7.2f} MB/s   "
              f"ratio {t_hf / t_lt:5.2f}x   ({mb:.2f} MB, {len(texts)} texts, 1 thread, cpu time)")
    lt.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
