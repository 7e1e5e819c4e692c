#!/usr/bin/env python3
"""test_tok_hf_variants.py - the tokenizer is not hard-wired to Qwen: byte-level BPE tokenizers of
other shapes are trained here with Hugging Face `tokenizers` itself, saved as tokenizer.json, loaded
by loratune, and compared live with tokenizers on fixed and random texts (ids, add_special_tokens,
decode with and without special tokens):
  gpt2     ByteLevel(add_prefix_space, use_regex) only; added tokens with lstrip / rstrip /
           single_word / normalized flags
  llama3   Split(Llama-3 regex, Isolated) + ByteLevel; TemplateProcessing adding <|begin_of_text|>;
           again with ignore_merges (as Llama-3 ships)
  legacy   merges stored as "a b" strings, NFKC + Lowercase, Digits(individual), Split(' ', MergedWithNext)
  splits   Split behaviours Removed / MergedWithPrevious / Contiguous / invert, NFD
Skips (77) when tokenizers is not importable."""
import json
import os
import random
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors,
                            trainers)
except ImportError:
    print("SKIP: the Python package 'tokenizers' is not installed")
    sys.exit(77)
from lt_tok_py import Lib, Tokenizer as LtTokenizer

ROOT = os.environ.get("LT_REPO_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
          r"|\s+(?!\S)|\s+")

corpus = [json.loads(l)["text"] for l in open(os.path.join(ROOT, "tests", "data", "tokenizer", "tokenizer_corpus.jsonl"),
                                              encoding="utf-8")]
recs = json.load(open(os.path.join(ROOT, "assets", "ruozhiba", "ruozhiba_qa.json"), encoding="utf-8"))[:300]
train = corpus + [r["instruction"] + "\n" + r["output"] for r in recs] + [
    "The quick brown fox jumps over the lazy dog. It's 2024, isn't it? I'll see; we'd go.",
    "def main(argc, argv):\n    return argc * 2  # comment\n\n", "  indented\tand\ttabbed  \n\n\n"] * 3

rng = random.Random(1234)
POOL = ["abc", "XYZ", "Hello", " ", "  ", "\n", "\t", "0123456789", "'s", "'LL", "!?.,", "中文字符", "日本", "Ω", "ﬁ",
        "ＡＢＣ", "e\u0301", "\u0301", "😀", "<s>", "</s>", "[MASK]", " [MASK] ", "<|begin_of_text|>", "<tool>", "xtoolx",
        "İ", "ẞ", "Σ", "\u00a0", "\u3000", "١٢٣", " xyzzy"]


def rand_text():
    return "".join(rng.choice(POOL) for _ in range(rng.randint(0, 14)))


def base(pre, norm=None, special=("<s>", "</s>"), vocab=900):
    tok = Tokenizer(models.BPE())
    if norm is not None:
        tok.normalizer = norm
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                             special_tokens=list(special), show_progress=False)
    tok.train_from_iterator(train, tr)
    return tok


def variants():
    t = base(pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True))
    t.post_processor = processors.ByteLevel(trim_offsets=True)
    t.add_tokens([AddedToken("[MASK]", lstrip=True, rstrip=True, normalized=False),
                  AddedToken("<tool>", single_word=True, normalized=False),
                  AddedToken("xtoolx", single_word=True, normalized=True)])
    t.add_special_tokens([AddedToken("<|begin_of_text|>", normalized=False)])
    yield "gpt2", t.to_str()

    t = base(pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated"),
                                      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
             special=("<|begin_of_text|>", "<|end_of_text|>"))
    t.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", 0)])])
    yield "llama3", t.to_str()
    d = json.loads(t.to_str())
    d["model"]["ignore_merges"] = True  # as Llama-3's tokenizer.json: a piece that is a token is taken whole
    d["model"]["vocab"]["\u0120xyzzy"] = len(d["model"]["vocab"]) + len(d["added_tokens"])  # no merge reaches it
    yield "llama3-ignore-merges", json.dumps(d, ensure_ascii=False)

    t = base(pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                      pre_tokenizers.Split(" ", behavior="merged_with_next"),
                                      pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)]),
             norm=normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()]))
    d = json.loads(t.to_str())
    d["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in d["model"]["merges"]]
    yield "legacy", json.dumps(d, ensure_ascii=False)

    for beh, inv in (("removed", False), ("merged_with_previous", False), ("contiguous", True), ("merged_with_next", True)):
        t = base(pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\s+|[,.!?]"), behavior=beh, invert=inv),
                                          pre_tokenizers.Digits(individual_digits=False),
                                          pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
                 norm=normalizers.Sequence([normalizers.NFD()]), vocab=500)
        yield f"splits-{beh}{'-invert' if inv else ''}", t.to_str()


lib = Lib()
failures = checks = 0
tmp = tempfile.mkdtemp(prefix="lt_tokvar_")
try:
    for name, js in variants():
        path = os.path.join(tmp, name)
        os.makedirs(path)
        with open(os.path.join(path, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(js)
        hf = Tokenizer.from_str(js)
        lt = LtTokenizer(lib, path)
        texts = corpus + [rand_text() for _ in range(400)]
        nfail = 0
        for text in texts:
            for add in (False, True):
                checks += 1
                want = hf.encode(text, add_special_tokens=add).ids
                got = lt.encode(text, add)
                if got != want:
                    nfail += 1
                    if nfail <= 3:
                        print(f"FAIL {name}: ids differ for {text!r} add_special={add}\n  got  {got}\n  want {want}")
                    continue
                for skip in (False, True):
                    checks += 1
                    d, hd = lt.decode(got, skip), hf.decode(want, skip_special_tokens=skip)
                    if d != hd:
                        nfail += 1
                        if nfail <= 3:
                            print(f"FAIL {name}: decode(skip={skip}) {d!r} vs {hd!r}")
        print(f"{name}: {len(texts)} texts, {nfail} failures")
        failures += nfail
        lt.close()
finally:
    shutil.rmtree(tmp)
print(f"{checks - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
