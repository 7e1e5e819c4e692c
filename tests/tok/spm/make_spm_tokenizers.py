#!/usr/bin/env python3
"""make_spm_tokenizers.py - writes the SentencePiece-style tokenizer.json test files in this folder
(tests/tok/spm/<name>/tokenizer.json) with Hugging Face `tokenizers` (the version is written to
VERSIONS). A small BPE is trained on tests/data/tokenizer + the first ruozhiba records + some
English and code, with a limited alphabet so that rare characters are missing and take the byte
fallback; its vocabulary then gets the layout and the components that transformers'
convert_slow_tokenizer.py gives the real models' tokenizer.json:
  gemma          GemmaConverter: <pad> <eos> <bos> <unk> first, Replace(' ', '▁') normalizer,
                 Split(' ', merged_with_previous) pre-tokenizer, decoder Replace('▁', ' ') +
                 ByteFallback + Fuse, "<bos> $A"; <start_of_turn>/<end_of_turn> special
  llama2         LlamaConverter legacy (Llama 2, Mistral v0.1, Phi-3): <unk> <s> </s>, normalizer
                 Prepend('▁') + Replace(' ', '▁'), no pre-tokenizer, decoder Replace + ByteFallback +
                 Fuse + Strip(' ', 1, 0), fuse_unk, "<s> $A"; Phi-3's <|endoftext|> <|user|> <|end|> (rstrip) and
                 Mistral's [INST] [/INST] as added tokens, <tool_call> </tool_call> not special
  llama-first    LlamaConverter non-legacy: no normalizer, Metaspace(prepend_scheme first, split
                 false), same decoder
  metaspace      SpmConverter's default: Metaspace(always, split true) pre-tokenizer and Metaspace
                 decoder (prepend always), no byte fallback (an <unk> instead, fused), ignore_merges
Run: python3 tests/tok/spm/make_spm_tokenizers.py (from anywhere). A rerun may number the pieces
in another order (the trainer breaks ties between equal counts by hash order); the tests compare
live with tokenizers, so any run serves."""
import json
import os

import tokenizers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..", "..")
SP = "\u2581"


def corpus():
    texts = [json.loads(l)["text"] for l in open(os.path.join(ROOT, "tests", "data", "tokenizer", "tokenizer_corpus.jsonl"),
                                                 encoding="utf-8")]
    recs = json.load(open(os.path.join(ROOT, "assets", "ruozhiba", "ruozhiba_qa.json"), encoding="utf-8"))[:200]
    texts += [r["instruction"] + "\n" + r["output"] for r in recs]
    texts += ["The quick brown fox jumps over the lazy dog. It's 2024, isn't it? I'll see; we'd go.",
              "def main(argc, argv):\n    return argc * 2  # comment\n\n", "  indented\tand\ttabbed  \n\n\n",
              "Machine learning models are trained on large amounts of text and then fine-tuned."] * 3
    return texts


def train(vocab_size):
    t = Tokenizer(models.BPE())
    t.normalizer = normalizers.Replace(" ", SP)
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SP, prepend_scheme="never", split=True)
    tr = trainers.BpeTrainer(vocab_size=vocab_size, limit_alphabet=400, show_progress=False)
    t.train_from_iterator(corpus(), tr)
    d = json.loads(t.to_str())
    pieces = sorted(d["model"]["vocab"].items(), key=lambda kv: kv[1])
    return [p for p, _ in pieces], d["model"]["merges"]


def build(head, pieces, merges, byte_fallback=True, extra_added=(), unk="<unk>"):
    vocab = {}
    for t in head:
        vocab[t] = len(vocab)
    if byte_fallback:
        for b in range(256):
            vocab[f"<0x{b:02X}>"] = len(vocab)
    for p in pieces:
        if p not in vocab:
            vocab[p] = len(vocab)
    added = [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for t in head]
    for content, rstrip, special in extra_added:
        vocab[content] = len(vocab)
        added.append({"id": vocab[content], "content": content, "single_word": False, "lstrip": False,
                      "rstrip": rstrip, "normalized": False, "special": special})
    model = {"type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": byte_fallback, "ignore_merges": False,
             "vocab": vocab, "merges": merges}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": None, "post_processor": None, "decoder": None, "model": model}


def post(bos, bos_id):
    return json.loads(processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                    special_tokens=[(bos, bos_id)]).__getstate__())


def comp(obj):
    return json.loads(obj.__getstate__())


def main():
    pieces, merges = train(1400)
    out = {}

    d = build(["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"], pieces, merges)
    d["normalizer"] = comp(normalizers.Replace(" ", SP))
    d["pre_tokenizer"] = comp(pre_tokenizers.Split(" ", "merged_with_previous"))
    d["decoder"] = comp(decoders.Sequence([decoders.Replace(SP, " "), decoders.ByteFallback(), decoders.Fuse()]))
    d["post_processor"] = post("<bos>", 2)
    out["gemma"] = (d, {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
                        "add_bos_token": True, "add_eos_token": False})

    llama_dec = comp(decoders.Sequence([decoders.Replace(SP, " "), decoders.ByteFallback(), decoders.Fuse(),
                                        decoders.Strip(content=" ", left=1)]))
    extra = [("<|endoftext|>", False, True), ("<|user|>", True, True), ("<|assistant|>", True, True), ("<|end|>", True, True),
             ("[INST]", False, True), ("[/INST]", False, True), ("<tool_call>", False, False), ("</tool_call>", False, False)]
    d = build(["<unk>", "<s>", "</s>"], pieces, merges, extra_added=extra)
    d["normalizer"] = comp(normalizers.Sequence([normalizers.Prepend(SP), normalizers.Replace(" ", SP)]))
    d["decoder"] = llama_dec
    d["post_processor"] = post("<s>", 1)
    cfg = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}
    out["llama2"] = (d, cfg)

    d = build(["<unk>", "<s>", "</s>"], pieces, merges, extra_added=extra)
    d["pre_tokenizer"] = comp(pre_tokenizers.Metaspace(replacement=SP, prepend_scheme="first", split=False))
    d["decoder"] = llama_dec
    d["post_processor"] = post("<s>", 1)
    out["llama-first"] = (d, cfg)

    d = build(["<pad>", "</s>", "<unk>"], pieces, merges, byte_fallback=False)
    d["model"]["ignore_merges"] = True
    d["pre_tokenizer"] = comp(pre_tokenizers.Metaspace(replacement=SP, prepend_scheme="always", split=True))
    d["decoder"] = comp(decoders.Metaspace(replacement=SP, prepend_scheme="always", split=True))
    out["metaspace"] = (d, {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})

    for name, (d, cfg) in out.items():
        folder = os.path.join(HERE, name)
        os.makedirs(folder, exist_ok=True)
        js = json.dumps(d, ensure_ascii=False, indent=None, separators=(",", ":"))
        Tokenizer.from_str(js)  # tokenizers must accept it
        with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(js + "\n")
        with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=1)
            f.write("\n")
    with open(os.path.join(HERE, "VERSIONS"), "w") as f:
        f.write(f"tokenizers {tokenizers.__version__}\n")


if __name__ == "__main__":
    main()
