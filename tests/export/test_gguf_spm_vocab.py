#!/usr/bin/env python3
"""test_gguf_spm_vocab.py - GGUF export of SentencePiece-style vocabularies (tests/tok/spm: Gemma,
Llama 2 legacy, Llama/Mistral Metaspace-first, Metaspace without byte fallback): a tiny random
checkpoint of the matching family (tests/fixtures/families config, vocabulary widened to the
tokenizer's ids rounded up to 64) is exported as F32 GGUF with each tokenizer, and gguf-py reads
the vocabulary keys back: tokenizer.ggml.model "llama", the tokens as in tokenizer.json ("▁"
kept) padded with [PADn], token types (NORMAL, UNKNOWN for the unk token, CONTROL for special
added tokens, USER_DEFINED for the others, BYTE for <0xNN>, UNUSED for padding), scores (-rank of
the merge that makes the token, below every merge for the rest), bos/eos/unk/pad ids,
add_bos_token / add_eos_token and add_space_prefix. Where llama-cpp-python is importable, llama.cpp
loads the vocabulary and tokenizes texts to the same ids as loratune (the byte-fallback
tokenizers; llama.cpp's SPM needs <0xNN> tokens for characters outside the vocabulary).
Skips (77) without numpy / gguf / safetensors or without the loratune command."""
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from gguf import GGUFReader
    from safetensors.numpy import load_file, save_file
except Exception as e:  # noqa: BLE001
    print(f"SKIP: numpy / gguf / safetensors not importable ({e})")
    sys.exit(77)
try:
    from llama_cpp import Llama
    import llama_cpp
except Exception:  # noqa: BLE001
    Llama = None

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("LT_REPO_ROOT", os.path.join(HERE, "..", ".."))
CLI = os.environ.get("LORATUNE_CLI") or os.path.join(os.environ.get("LT_BUILD_DIR", "build"), "loratune")
sys.path.insert(0, os.path.join(ROOT, "tests", "tok"))
from lt_tok_py import Lib, Tokenizer as LtTokenizer  # noqa: E402

# (tokenizer, family fixture, add_space_prefix, byte fallback); phi3 with the Llama-2 style
# vocabulary it ships (the byte-level test vocabulary does not load in llama.cpp's phi3): the whole
# model is loaded in llama.cpp and evaluated, not only its vocabulary
CASES = [("gemma", "gemma3", False, True), ("llama2", "llama", True, True), ("llama-first", "mistral", True, True),
         ("metaspace", "qwen2", True, False), ("llama2", "phi3", True, True)]
# Metaspace prepend_scheme "first" puts "▁" only before the first segment of a text and not
# before one that starts with a space; llama.cpp's SPM (add_space_prefix) puts " " in front of the
# text and after every special token, whatever follows (GGUFs converted from tokenizer.model of
# such models behave the same): texts that start with a space or hold a special token differ
FIRST_ONLY = {"llama-first": "llama.cpp's add_space_prefix cannot say prepend_scheme 'first'"}
TEXTS = ["Hello world", "  two  spaces", "中文 English 混合 text 123", "def f(x):\n    return x ** 2\n", "🦜 鬱 Ω",
         "我花了500块做了个智商测试怎么测出来只有30?", "\n\nnew lines\n", "<start_of_turn>user\nhi<end_of_turn>\n",
         "<s>[INST] 你好 [/INST]", "x"]
failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print(f"FAIL: {what}")
    return cond


def make_model(fam, n_vocab, tj, cfg_tok, out):
    src = os.path.join(ROOT, "tests", "fixtures", "families", fam)
    cfg = json.load(open(os.path.join(src, "config.json")))
    old_v = cfg["vocab_size"]
    cfg["vocab_size"] = n_vocab
    vocab = tj["model"]["vocab"]
    for typ in ("bos", "eos", "pad"):
        t = cfg_tok.get(f"{typ}_token")
        if t in vocab:
            cfg[f"{typ}_token_id"] = vocab[t]
        elif f"{typ}_token_id" in cfg and cfg[f"{typ}_token_id"] is not None:
            cfg[f"{typ}_token_id"] = 0
    rng = np.random.default_rng(0)
    ts = load_file(os.path.join(src, "model.safetensors"))
    for k, v in ts.items():
        if v.ndim == 2 and v.shape[0] == old_v and ("embed_tokens" in k or "lm_head" in k):
            ts[k] = (rng.standard_normal((n_vocab, v.shape[1])) * 0.02).astype(v.dtype)
    os.makedirs(out)
    save_file(ts, os.path.join(out, "model.safetensors"))
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)


def field(r, key):
    f = r.fields.get(key)
    if f is None:
        return None
    if len(f.types) == 1:  # a scalar or a string
        v = f.parts[f.data[0]]
        return bytes(v).decode("utf-8") if f.types[0].name == "STRING" else v.tolist()[0]
    if f.types[1].name == "STRING":
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
    return [f.parts[i].tolist()[0] for i in f.data]


def expected(tj, cfg_tok, n_vocab):
    """tokens, types and scores computed here from tokenizer.json (not from the exporter's code)."""
    m = tj["model"]
    toks = ["[PAD%d]" % i for i in range(n_vocab)]
    types = [5] * n_vocab
    for t, i in m["vocab"].items():
        toks[i] = t
        types[i] = 6 if (len(t) == 6 and t.startswith("<0x") and t.endswith(">")
                         and all(c in "0123456789ABCDEFabcdef" for c in t[3:5])) else 1
    rank = {}
    for r, mg in enumerate(m["merges"]):
        a, b = mg if isinstance(mg, list) else mg.split(" ", 1)
        rank.setdefault(a + b, r)
    for a in tj["added_tokens"]:
        toks[a["id"]] = a["content"]
        types[a["id"]] = 3 if a["special"] else 4
    unk = m["vocab"].get(m.get("unk_token"))
    if unk is not None:
        types[unk] = 2
    merged = {i: -float(rank[t]) for i, t in enumerate(toks) if t in rank and types[i] in (1, 2)}
    return toks, types, merged


def main():
    if not os.path.exists(CLI):
        print(f"SKIP: no loratune command at {CLI}")
        return 77
    lib = Lib()
    tmp = tempfile.mkdtemp(prefix="lt_gguf_spm_")
    try:
        for name, fam, space_prefix, fallback in CASES:
            tdir = os.path.join(ROOT, "tests", "tok", "spm", name)
            tj = json.load(open(os.path.join(tdir, "tokenizer.json"), encoding="utf-8"))
            cfg_tok = json.load(open(os.path.join(tdir, "tokenizer_config.json")))
            n_ids = 1 + max(list(tj["model"]["vocab"].values()) + [a["id"] for a in tj["added_tokens"]])
            n_vocab = (n_ids + 63) // 64 * 64
            mdir = os.path.join(tmp, f"{name}-{fam}-model")
            make_model(fam, n_vocab, tj, cfg_tok, mdir)
            out = os.path.join(tmp, f"{name}-{fam}.gguf")
            p = subprocess.run([CLI, "export", "--model", mdir, "--tokenizer", tdir, "--format", "gguf", "--quant", "f32",
                                "--output", out, "--device", "cpu"], capture_output=True, text=True)
            if not check(p.returncode == 0, f"{name}: export failed ({p.returncode}): {p.stderr.strip()}"):
                continue
            r = GGUFReader(out)
            toks, types, merged = expected(tj, cfg_tok, n_vocab)
            check(field(r, "tokenizer.ggml.model") == "llama", f"{name}: tokenizer.ggml.model {field(r, 'tokenizer.ggml.model')!r}")
            check(field(r, "tokenizer.ggml.merges") is None, f"{name}: a llama (SPM) vocabulary has no merges key")
            got_t = field(r, "tokenizer.ggml.tokens")
            check(got_t == toks, f"{name}: tokens differ (first at {next((i for i, (a, b) in enumerate(zip(got_t or [], toks)) if a != b), None)})")
            got_ty = field(r, "tokenizer.ggml.token_type")
            check(got_ty == types, f"{name}: token types differ (first at {next((i for i, (a, b) in enumerate(zip(got_ty or [], types)) if a != b), None)})")
            sc = field(r, "tokenizer.ggml.scores") or []
            check(len(sc) == n_vocab and all(np.isfinite(sc)), f"{name}: {len(sc)} scores, want {n_vocab} finite")
            bad = [i for i, s in merged.items() if sc[i] != s]
            check(not bad, f"{name}: merged tokens' scores are not -rank (e.g. id {bad[:3]})")
            lo = min(merged.values())
            rest = [i for i in range(n_vocab) if i not in merged]
            check(all(sc[i] < lo for i in rest), f"{name}: a token no merge makes scores above a merge")
            vocab = tj["model"]["vocab"]
            want_ids = {"bos": vocab.get(cfg_tok.get("bos_token")), "eos": vocab.get(cfg_tok.get("eos_token")),
                        "unknown": vocab.get(tj["model"]["unk_token"]), "padding": vocab.get(cfg_tok.get("pad_token"))}
            for k, v in want_ids.items():
                if v is not None:
                    check(field(r, f"tokenizer.ggml.{k}_token_id") == v,
                          f"{name}: {k}_token_id {field(r, f'tokenizer.ggml.{k}_token_id')} want {v}")
            check(bool(field(r, "tokenizer.ggml.add_bos_token")) == bool(cfg_tok.get("add_bos_token", False)),
                  f"{name}: add_bos_token")
            check(field(r, "tokenizer.ggml.add_space_prefix") == space_prefix,
                  f"{name}: add_space_prefix {field(r, 'tokenizer.ggml.add_space_prefix')} want {space_prefix}")
            print(f"{name}: GGUF vocabulary of {n_vocab} ids checked ({sum(t == 6 for t in types)} BYTE, "
                  f"{sum(t == 3 for t in types)} CONTROL, {sum(t == 4 for t in types)} USER_DEFINED, {len(merged)} merged)")
            if Llama is None or not fallback:
                if Llama is None:
                    print(f"{name}: llama.cpp tokenization not checked (llama_cpp not importable)")
                continue
            if fam == "phi3":
                llm = Llama(model_path=out, n_ctx=64, verbose=os.environ.get("LT_VERBOSE") == "1", n_threads=2)
                llm.eval([1, 300, 400, 500])
                check(bool(np.isfinite(np.array(llm.scores[:4])).all()), f"{name}/{fam}: non-finite logits in llama.cpp")
                print(f"{name}/{fam}: the phi3 GGUF loads in llama.cpp and gives finite logits")
                continue
            llm = Llama(model_path=out, vocab_only=True, verbose=False)
            lt = LtTokenizer(lib, tdir)
            nbad = nknown = 0
            corpus = [json.loads(l)["text"] for l in open(os.path.join(ROOT, "tests", "data", "tokenizer",
                                                                       "tokenizer_corpus.jsonl"), encoding="utf-8")]
            recs = json.load(open(os.path.join(ROOT, "assets", "ruozhiba", "ruozhiba_qa.json"), encoding="utf-8"))[:100]
            texts = TEXTS + ["call <tool_call>{}</tool_call> ok"] + corpus + [r["instruction"] + "\n" + r["output"] for r in recs]
            for text in texts:
                want = lt.encode(text, False)
                got = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
                if got != want and name in FIRST_ONLY and (text[:1].isspace() or any(
                        a["content"] in text for a in tj["added_tokens"])):
                    print(f"{name}: {text!r} differs in llama.cpp, as expected: {FIRST_ONLY[name]}")
                    nknown += 1
                    continue
                if got != want:
                    nbad += 1
                    print(f"FAIL {name}: llama.cpp ids for {text!r}\n  llama.cpp {got}\n  loratune  {want}")
            lt.close()
            failures_add = nbad
            check(not failures_add, f"{name}: {nbad} of {len(texts)} texts tokenize differently in llama.cpp")
            print(f"{name}: llama.cpp tokenizes {len(texts) - nbad - nknown}/{len(texts)} texts as loratune"
                  f"{f' ({nknown} differ as expected)' if nknown else ''}")
    finally:
        shutil.rmtree(tmp)
    print("OK" if not failures else f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
