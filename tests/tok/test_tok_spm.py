#!/usr/bin/env python3
"""test_tok_spm.py - SentencePiece-style tokenizer.json files (BPE with byte_fallback and <0xNN>
tokens, Prepend/Replace normalizers, Metaspace pre-tokenizer, the Replace/ByteFallback/Fuse/Strip
and Metaspace decoders: Gemma, Llama 2 / Mistral / Phi-3 as transformers converts them), made by
tests/tok/spm/make_spm_tokenizers.py with Hugging Face `tokenizers` and committed, are loaded by
loratune and compared live with `tokenizers`: ids with and without the post-processor, decode with
and without special tokens, on the tokenizer test corpus, fixed edge cases (characters missing
from the vocabulary, spaces, newlines, special tokens, literal '▁' and '<0x41>') and random texts.
Skips (77) when tokenizers is not importable."""
import atexit
import ctypes
import json
import os
import random
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    from tokenizers import Tokenizer
except ImportError:
    print("SKIP: the Python package 'tokenizers' is not installed")
    sys.exit(77)
from lt_tok_py import Lib, Tokenizer as LtTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("LT_REPO_ROOT", os.path.join(HERE, "..", ".."))
SPM = os.path.join(ROOT, "tests", "tok", "spm")

corpus = [json.loads(l)["text"] for l in open(os.path.join(ROOT, "tests", "data", "tokenizer", "tokenizer_corpus.jsonl"),
                                              encoding="utf-8")]
recs = json.load(open(os.path.join(ROOT, "assets", "ruozhiba", "ruozhiba_qa.json"), encoding="utf-8"))[1000:1040]
FIXED = ["", " ", "  ", "   x", "x   ", "a  b   c", "\n", "\n\n", " \n ", "Hello world", " Hello", "Hello ",
         "\u2581", "\u2581\u2581a", "a\u2581b", "<0x41>", "<0xZZ>", "<0x4", "😀", "🦜🦜", "Ω≈ç√", "鬱鬱蔥蔥", "쀍",
         "x\u0301", "\t\ttab", "def f(x):\n    return x ** 2\n", "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
         "<bos><start_of_turn>user 你好<end_of_turn>", " <start_of_turn> x", "<|user|>\nHello<|end|>\n<|assistant|>",
         "<|user|>  spaced  <|end|>  ", "[INST] 你好 [/INST] 好", "<s>[INST]x[/INST]</s>", "<unk>", "a<unk>b", "x <tool_call>{}</tool_call>",
         "中文 English 混合 text 123", "١٢٣ ٤", "\u00a0nbsp\u3000ideo", "\r\n\r\n", "éèê ÉÈÊ", "ﬁ ＡＢＣ"]
rng = random.Random(20261207)
POOL = ["abc", "Hello", " ", "  ", "\n", "\t", "0123", "中文", "智商", "测试", "😀", "🦜", "Ω", "<0x41>", "\u2581",
        "<s>", "</s>", "<bos>", "<start_of_turn>", "<|end|>", "[INST]", "ﬁ", "ẞ", "the", " the", "ing", "鬱"]


def rand_text():
    return "".join(rng.choice(POOL) for _ in range(rng.randint(0, 12)))


lib = Lib()
L = lib.lib
L.lt_token_stream_new.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_void_p)]
L.lt_token_stream_free.argtypes = [ctypes.c_void_p]
for fn in (L.lt_token_stream_push, ):
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
L.lt_token_stream_flush.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]


def stream_decode(lt, ids, skip):
    """lt_token_stream over ids, one at a time: the pieces joined (bytes)."""
    s = ctypes.c_void_p()
    assert L.lt_token_stream_new(lt.h, int(skip), ctypes.byref(s)) == 0, lib.error()
    buf = ctypes.create_string_buffer(4096)
    n = ctypes.c_size_t()
    out = b""
    for i in ids:
        assert L.lt_token_stream_push(s, i, buf, 4096, ctypes.byref(n)) == 0, lib.error()
        out += buf.raw[: n.value]
    assert L.lt_token_stream_flush(s, buf, 4096, ctypes.byref(n)) == 0, lib.error()
    out += buf.raw[: n.value]
    L.lt_token_stream_free(s)
    return out


failures = checks = 0
names = sorted(n for n in os.listdir(SPM) if os.path.isfile(os.path.join(SPM, n, "tokenizer.json")))
if len(names) < 4:
    print(f"FAIL: expected the four tokenizers in {SPM}, found {names}")
    sys.exit(1)
texts = corpus + [r["instruction"] + "\n" + r["output"] for r in recs] + FIXED + [rand_text() for _ in range(400)]


def variants(tmp):
    """The other Metaspace options and decoder settings, derived from llama-first / llama2 in a
    temporary folder: prepend_scheme never / always with split false, first with split true, the
    older {add_prefix_space, str_rep} form, a Metaspace decoder with 'never', Strip(start 2, stop 1)
    (tokenizers panics on an empty string there and prints its panic message: those are skipped),
    no decoder (tokens joined with spaces) and an empty decoder Sequence."""
    SP = "\u2581"
    base = json.load(open(os.path.join(SPM, "llama-first", "tokenizer.json"), encoding="utf-8"))
    legacy = json.load(open(os.path.join(SPM, "llama2", "tokenizer.json"), encoding="utf-8"))
    out = {}
    for scheme, split in (("never", False), ("always", False), ("first", True)):
        d = json.loads(json.dumps(base))
        d["pre_tokenizer"] = {"type": "Metaspace", "replacement": SP, "prepend_scheme": scheme, "split": split}
        d["decoder"] = {"type": "Metaspace", "replacement": SP, "prepend_scheme": scheme, "split": split}
        out[f"v-metaspace-{scheme}-{'split' if split else 'nosplit'}"] = d
    d = json.loads(json.dumps(base))
    d["pre_tokenizer"] = {"type": "Metaspace", "replacement": SP, "add_prefix_space": True, "str_rep": SP}
    out["v-metaspace-old-form"] = d
    d = json.loads(json.dumps(legacy))
    d["decoder"]["decoders"][-1] = {"type": "Strip", "content": " ", "start": 2, "stop": 1}
    out["v-strip-2-1"] = d
    d = json.loads(json.dumps(legacy))
    d["decoder"] = None  # tokenizers then joins the token strings with spaces
    out["v-no-decoder"] = d
    d = json.loads(json.dumps(legacy))
    d["decoder"] = {"type": "Sequence", "decoders": []}
    out["v-empty-decoder"] = d
    for name, d in out.items():
        folder = os.path.join(tmp, name)
        os.makedirs(folder)
        with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(d, f, ensure_ascii=False)
    return [(n, os.path.join(tmp, n)) for n in out]


def hf_decode(hf, ids, skip):
    """tokenizers' decode, or None where it panics: its Strip decoder indexes out of bounds when
    stop > 0 meets a string shorter than start + stop (tokenizers 0.23.3); loratune returns what
    is left after stripping."""
    try:
        return hf.decode(ids, skip_special_tokens=skip)
    except BaseException as e:  # noqa: BLE001 (pyo3's PanicException is a BaseException)
        if type(e).__name__ != "PanicException":
            raise
        return None


tmpdir = tempfile.mkdtemp(prefix="lt_tokspm_")
atexit.register(shutil.rmtree, tmpdir, True)
for name, path in [(n, os.path.join(SPM, n)) for n in names] + variants(tmpdir):
    hf = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    lt = LtTokenizer(lib, path)
    nfail = fallback = 0
    fb_ids = {hf.token_to_id(f"<0x{b:02X}>") for b in range(256)} - {None}
    for text in texts:
        for add in (False, True):
            checks += 1
            want = hf.encode(text, add_special_tokens=add).ids
            got = lt.encode(text, add)
            fallback += any(i in fb_ids for i in want)
            if got != want:
                nfail += 1
                if nfail <= 3:
                    print(f"FAIL {name}: ids differ for {text!r} add_special={add}\n  got  {got}\n  want {want}")
                continue
            for skip in (False, True):
                checks += 1
                d, hd = lt.decode(got, skip), hf_decode(hf, want, skip)
                if hd is None:
                    continue
                if d != hd:
                    nfail += 1
                    if nfail <= 3:
                        print(f"FAIL {name}: decode(skip={skip}) of {text!r}: {d!r} vs {hd!r}")
                if name == "v-strip-2-1":
                    continue  # a Strip with stop > 0 cannot be streamed (the end moves): not compared
                checks += 1
                sd = stream_decode(lt, got, skip).decode("utf-8")
                if sd != hd:  # the stream's pieces join to the whole decode
                    nfail += 1
                    if nfail <= 3:
                        print(f"FAIL {name}: stream(skip={skip}) of {text!r}: {sd!r} vs {hd!r}")
    # decode of arbitrary id runs (broken byte sequences -> one U+FFFD per byte, as ByteFallback)
    n_ids = hf.get_vocab_size()
    for _ in range(200):
        ids = [rng.randrange(n_ids) for _ in range(rng.randint(1, 8))]
        if rng.random() < 0.5 and fb_ids:
            ids += rng.sample(sorted(fb_ids), 2)
        for skip in (False, True):
            checks += 1
            d, hd = lt.decode(ids, skip), hf_decode(hf, ids, skip)
            if hd is None:
                continue
            if d != hd:
                nfail += 1
                if nfail <= 3:
                    print(f"FAIL {name}: decode(skip={skip}) of {ids}: {d!r} vs {hd!r}")
    print(f"{name}: {len(texts)} texts ({fallback} encodings with byte-fallback tokens), {nfail} failures")
    if fb_ids and fallback == 0:
        print(f"FAIL {name}: no text took the byte fallback")
        nfail += 1
    failures += nfail
    lt.close()
print(f"{checks - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
