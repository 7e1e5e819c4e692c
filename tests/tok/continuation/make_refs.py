#!/usr/bin/env python3
"""make_refs.py - writes refs.json beside it: for several vocabularies (byte-level BPE: Qwen2's
real tokenizer and the 256-byte one of the family fixtures; SentencePiece-style: the Gemma,
Llama 2 / Phi-3 (legacy), Llama non-legacy and Metaspace tokenizer.json of tests/tok/spm), a few
prompts and the ids a model could generate after them, with what Hugging Face gives for them:
  prompt_ids      transformers' tokenizer(prompt).input_ids (add_special_tokens=True: the
                  post-processor's BOS where it adds one)
  chat_ids        for a text that already starts with the BOS text (as a rendered chat template
                  does): tokenizer(text, add_special_tokens=False).input_ids, what
                  apply_chat_template(tokenize=True) gives
  cases[].new     generated ids: a continuation text encoded without special tokens (so its first
                  token carries SentencePiece's leading space), and seeded random id runs (byte
                  tokens that split UTF-8 characters, special tokens)
  cases[].text    tokenizers' decode(prompt_ids + new, skip_special_tokens=True) minus
                  decode(prompt_ids, skip_special_tokens=True): the text a stream must emit
Run with torch-free transformers + tokenizers (versions are written into refs.json):
    python3 tests/tok/continuation/make_refs.py"""
import json
import os
import random

import tokenizers
import transformers
from tokenizers import Tokenizer
from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
VOCABS = {
    "qwen2": "assets/qwen2-tokenizer",
    "bpe256": "tests/fixtures/families/tokenizer-bpe256",
    "gemma": "tests/tok/spm/gemma",
    "llama2": "tests/tok/spm/llama2",
    "llama-first": "tests/tok/spm/llama-first",
    "metaspace": "tests/tok/spm/metaspace",
}
PROMPTS = [
    "Quick zebras jump",
    "Below is an instruction.\n\n### Instruction:\nName three colours.\n\n### Response:\n",
    "你好，世界",
    "naïve café ",
]
CONTINUATIONS = ["; five boxing wizards", " 是的，很好 🦊 déjà vu", "\n\nNew line\tand tab", "ok"]


def main():
    out = {"versions": {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__},
           "script": "tests/tok/continuation/make_refs.py", "vocabs": []}
    for name, rel in VOCABS.items():
        path = os.path.join(ROOT, rel)
        raw = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        hf = AutoTokenizer.from_pretrained(path)
        v = {"name": name, "dir": rel, "prompts": []}
        bos = hf.bos_token
        for pi, prompt in enumerate(PROMPTS):
            ids = hf(prompt).input_ids
            assert ids == raw.encode(prompt).ids, (name, prompt)
            base = raw.decode(ids, skip_special_tokens=True)
            p = {"prompt": prompt, "prompt_ids": ids, "cases": []}
            if bos:
                chat = bos + prompt
                p["chat_text"] = chat
                p["chat_ids"] = hf(chat, add_special_tokens=False).input_ids
            news = [raw.encode(c, add_special_tokens=False).ids for c in CONTINUATIONS]
            rng = random.Random(1000 * pi + len(name))
            vs = raw.get_vocab_size(with_added_tokens=True)
            for _ in range(3):
                news.append([rng.randrange(vs) for _ in range(rng.randrange(1, 24))])
            for new in news:
                full = raw.decode(ids + new, skip_special_tokens=True)
                if not full.startswith(base):
                    raise SystemExit("%s: decode(prompt + new) does not start with decode(prompt): %r %r" %
                                     (name, base, full))
                p["cases"].append({"new": new, "text": full[len(base):], "alone": raw.decode(new, skip_special_tokens=True)})
            v["prompts"].append(p)
        out["vocabs"].append(v)
    with open(os.path.join(HERE, "refs.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n = sum(len(p["cases"]) for v in out["vocabs"] for p in v["prompts"])
    differ = sum(c["text"] != c["alone"] for v in out["vocabs"] for p in v["prompts"] for c in p["cases"])
    print("wrote refs.json: %d vocabularies, %d cases (%d where decoding the new ids alone differs)" %
          (len(out["vocabs"]), n, differ))


if __name__ == "__main__":
    main()
