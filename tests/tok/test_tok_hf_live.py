#!/usr/bin/env python3
"""test_tok_hf_live.py - live comparison with Hugging Face `tokenizers` (Tokenizer.from_file on the
shipped assets/qwen2-tokenizer/tokenizer.json):
  1. all 1,475 ruozhiba records rendered with the notebook's alpaca-zh template + "<|im_end|>",
     through the CLI (`loratune tokenize --jsonl`, several threads) and through ctypes;
  2. 3,000 random strings (seeded) mixing scripts, whitespace, digits, combining marks, emoji and
     special-token text: ids equal, and decode equals tokenizers' decode.
Skips (77) when tokenizers is not importable."""
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import tokenizers
except ImportError:
    print("SKIP: the Python package 'tokenizers' is not installed")
    sys.exit(77)
from lt_tok_py import Lib, Tokenizer

ROOT = os.environ.get("LT_REPO_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
TOKDIR = os.path.join(ROOT, "assets", "qwen2-tokenizer")
CLI = os.environ.get("LORATUNE_CLI")
TEMPLATE = ("\n下面是描述一个任务，以一个输入然后提供一个回复\n### Instruction:\n{instruction}\n### Input:\n{input}"
            "\n### Response:\n{output}\n")
EOS = "<|im_end|>"

hf = tokenizers.Tokenizer.from_file(os.path.join(TOKDIR, "tokenizer.json"))
lt = Tokenizer(Lib(), TOKDIR)
failures = 0


def fail(msg):
    global failures
    failures += 1
    if failures <= 10:
        print("FAIL:", msg)


def render(r):
    # str.replace, not format: the records contain braces
    return (TEMPLATE.replace("{instruction}", r.get("instruction", "")).replace("{input}", r.get("input", ""))
            .replace("{output}", r.get("output", ""))) + EOS


records = json.load(open(os.path.join(ROOT, "assets", "ruozhiba", "ruozhiba_qa.json"), encoding="utf-8"))
texts = [render(r) for r in records]
want = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]

# 1a. through ctypes
for i, (t, w) in enumerate(zip(texts, want)):
    got = lt.encode(t)
    if got != w:
        fail(f"ruozhiba record {i}: ids differ (ctypes)\n  text {t[:80]!r}\n  got  {got[:20]}\n  want {w[:20]}")
# 1b. through the CLI (encode on several threads)
if CLI:
    inp = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    out = subprocess.run([CLI, "tokenize", "--tokenizer", TOKDIR, "--jsonl", "--threads", "2"], input=inp.encode(),
                         capture_output=True, check=False)
    if out.returncode != 0:
        fail(f"CLI failed: {out.stderr.decode()}")
    else:
        lines = out.stdout.decode().splitlines()
        if len(lines) != len(texts):
            fail(f"CLI wrote {len(lines)} lines for {len(texts)} records")
        for i, (line, w) in enumerate(zip(lines, want)):
            if json.loads(line)["ids"] != w:
                fail(f"ruozhiba record {i}: ids differ (CLI --jsonl)")
print(f"ruozhiba: {len(texts)} records compared, {sum(len(w) for w in want)} tokens")

# 2. random strings
rng = random.Random(3407)
POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789", " ", "  ", "\n", "\r\n", "\t", "\u00a0", "\u3000", "\u2003", "\u0085", "\u200b",
    "'s", "'T", "'re", "'LL", "'d", "!?.,;:-_()[]{}<>/\\\"'#$%&*+=@^`|~", "，。！？、；：“”‘’（）《》",
    "我你他的是了在有不这个人中国大学生学习", "日本語のテキスト", "한국어텍스트", "русский", "العربية١٢٣", "ελληνικά", "हिन्दी",
    "\u0301", "\u0308", "\u0327", "\u0338", "e\u0301", "A\u030a", "\u1100\u1161", "ﬁ", "ＡＢＣ１２３", "Ω", "Å",
    "😀", "👍🏽", "👨\u200d👩\u200d👧", "🇨🇳", "\U0001F9D1\u200d\U0001F4BB",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_", "|>", "<|",
    "\x00", "\x07", "\x7f", "\u00ad", "\ufeff", "\U00010348", "\U000E0001",
]


def random_text():
    parts = []
    for _ in range(rng.randint(0, 12)):
        k = rng.random()
        if k < 0.1:
            parts.append(chr(rng.choice([rng.randint(0x20, 0x7e), rng.randint(0xa0, 0x2fff), rng.randint(0x3000, 0xd7ff),
                                         rng.randint(0xe000, 0xfffd), rng.randint(0x10000, 0x10ffff)])))
        else:
            pool = rng.choice(POOLS)
            n = rng.randint(1, 6)
            parts.append("".join(rng.choice([pool, pool[rng.randrange(len(pool))]]) for _ in range(n)))
    return "".join(parts)


rand = [random_text() for _ in range(3000)]
rand_want = hf.encode_batch(rand, add_special_tokens=False)
for t, w in zip(rand, rand_want):
    got = lt.encode(t)
    if got != w.ids:
        fail(f"random text {t!r}: ids differ\n  got  {got}\n  want {w.ids}")
        continue
    for skip in (False, True):
        d = lt.decode(got, skip)
        hd = hf.decode(w.ids, skip_special_tokens=skip)
        if d != hd:
            fail(f"random text {t!r}: decode(skip_special={skip}) {d!r} vs tokenizers {hd!r}")
print(f"random: {len(rand)} texts compared")
lt.close()
checks = 2 * len(texts) + 3 * len(rand)
print(f"{checks - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
