#!/usr/bin/env python3
"""test_ruozhiba_hf.py - the dataset pipeline against the notebook and Hugging Face.

For every ruozhiba record (assets/ruozhiba/ruozhiba_qa.json):
  * the text loratune renders equals alpaca_prompt.format(instruction, input, output) + EOS_TOKEN
    byte for byte (the notebook's formatting function);
  * its token ids equal Hugging Face `tokenizers` on that text;
  * its labels equal TRL SFTTrainer's for packing=False (TRL >= 0.17, hf-formats.md section 6):
    labels = ids (loss on every token, EOS kept), truncated to the first max_length tokens.
Also: truncation (max_seq_len 24) against the same rule, response-only masks against HF's
own offsets, and the `loratune dataset` command. Runs through ctypes on LORATUNE_LIBRARY.
Skips (77) when `tokenizers` is not installed."""
import ctypes as C
import json
import os
import subprocess
import sys

try:
    from tokenizers import Tokenizer
except ImportError:
    print("SKIP: the Python package 'tokenizers' is not installed (pip install tokenizers)")
    sys.exit(77)

ROOT = os.environ.get("LT_REPO_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
LIB = os.environ.get("LORATUNE_LIBRARY")
if not LIB:
    print("LORATUNE_LIBRARY is not set")
    sys.exit(1)
TOKDIR = os.path.join(ROOT, "assets", "qwen2-tokenizer")
DATA = os.path.join(ROOT, "assets", "ruozhiba", "ruozhiba_qa.json")

# The notebook's prompt, verbatim.
alpaca_prompt = """
下面是描述一个任务，以一个输入然后提供一个回复
### Instruction:
{}
### Input:
{}
### Response:
{}
"""


class DatasetParams(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("format", C.c_int32), ("template_name", C.c_char_p),
                ("template_text", C.c_char_p), ("instruction_field", C.c_char_p), ("input_field", C.c_char_p),
                ("output_field", C.c_char_p), ("text_field", C.c_char_p), ("max_seq_len", C.c_int32),
                ("loss_on", C.c_int32), ("add_eos", C.c_int32), ("skip_bad_records", C.c_int32),
                ("eval_fraction", C.c_double), ("seed", C.c_uint64), ("n_threads", C.c_int32),
                ("progress", C.c_void_p), ("progress_user_data", C.c_void_p)]


class DatasetStats(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("n_records", C.c_uint64), ("n_eval", C.c_uint64),
                ("n_skipped", C.c_uint64), ("n_truncated", C.c_uint64), ("n_tokens", C.c_uint64),
                ("n_label_tokens", C.c_uint64), ("min_len", C.c_int32), ("max_len", C.c_int32),
                ("mean_len", C.c_double)]


# A sanitizer build (LT_SANITIZE=ON) needs the ASan runtime loaded first: run again with it preloaded.
if b"libasan.so" in open(LIB, "rb").read() and not os.environ.get("LT_ASAN_REEXEC"):
    asan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, LD_PRELOAD=asan, LT_ASAN_REEXEC="1",
               ASAN_OPTIONS="detect_leaks=0:" + os.environ.get("ASAN_OPTIONS", ""))
    sys.exit(subprocess.run([sys.executable] + sys.argv, env=env).returncode)
lib = C.CDLL(LIB)
lib.lt_last_error.restype = C.c_char_p
lib.lt_struct_size.restype = C.c_size_t
lib.lt_tokenizer_eos_token.restype = C.c_char_p
lib.lt_tokenizer_eos_token.argtypes = [C.c_void_p]
lib.lt_template_builtin.restype = C.c_char_p
lib.lt_dataset_size.restype = C.c_size_t
lib.lt_dataset_size.argtypes = [C.c_void_p]
lib.lt_dataset_get.argtypes = [C.c_void_p, C.c_size_t, C.POINTER(C.c_int32), C.POINTER(C.c_int32), C.c_size_t,
                               C.POINTER(C.c_size_t)]
lib.lt_dataset_load.argtypes = [C.c_char_p, C.c_void_p, C.POINTER(DatasetParams), C.POINTER(C.c_void_p)]
lib.lt_dataset_get_stats.argtypes = [C.c_void_p, C.POINTER(DatasetStats)]
lib.lt_dataset_free.argtypes = [C.c_void_p]
lib.lt_tokenizer_free.argtypes = [C.c_void_p]
lib.lt_template_render.argtypes = [C.c_char_p, C.c_char_p, C.c_char_p, C.c_char_p, C.c_char_p, C.c_size_t,
                                   C.POINTER(C.c_size_t)]

failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        if failures < 20:
            print("FAIL:", what)


def ok(status, what):
    if status != 0:
        print(f"{what} failed ({status}): {lib.lt_last_error().decode()}")
        sys.exit(1)


check(lib.lt_struct_size(b"lt_dataset_params") == C.sizeof(DatasetParams), "lt_dataset_params layout")
check(lib.lt_struct_size(b"lt_dataset_stats") == C.sizeof(DatasetStats), "lt_dataset_stats layout")

tok = C.c_void_p()
ok(lib.lt_tokenizer_load(TOKDIR.encode(), C.byref(tok)), "lt_tokenizer_load")
EOS = lib.lt_tokenizer_eos_token(tok).decode()
check(EOS == "<|im_end|>", f"eos {EOS!r}")
hf = Tokenizer.from_file(os.path.join(TOKDIR, "tokenizer.json"))
records = json.load(open(DATA, encoding="utf-8"))
texts = [alpaca_prompt.format(r["instruction"], r["input"], r["output"]) + EOS for r in records]

# 1. rendering, byte for byte
buf = C.create_string_buffer(1 << 16)
n = C.c_size_t()
for i, r in enumerate(records):
    ok(lib.lt_template_render(b"alpaca-zh", r["instruction"].encode(), r["input"].encode(), r["output"].encode(),
                              buf, len(buf), C.byref(n)), "lt_template_render")
    check(buf.raw[:n.value] + EOS.encode() == texts[i].encode(), f"record {i}: rendered text differs")


def load(max_seq_len=2048, loss_on=0):
    p = DatasetParams()
    lib.lt_dataset_params_init(C.byref(p))
    p.max_seq_len = max_seq_len
    p.loss_on = loss_on
    ds = C.c_void_p()
    ok(lib.lt_dataset_load(DATA.encode(), tok, C.byref(p), C.byref(ds)), "lt_dataset_load")
    return ds


def get(ds, i):
    ids = (C.c_int32 * 8192)()
    labels = (C.c_int32 * 8192)()
    ok(lib.lt_dataset_get(ds, i, ids, labels, 8192, C.byref(n)), "lt_dataset_get")
    return list(ids[:n.value]), list(labels[:n.value])


encs = hf.encode_batch(texts, add_special_tokens=True)

# 2 + 3. ids equal tokenizers; labels follow TRL's rule; then the same with truncation
for max_len in (2048, 24):
    ds = load(max_len)
    check(lib.lt_dataset_size(ds) == len(records), f"size {lib.lt_dataset_size(ds)}")
    bad_ids = bad_labels = 0
    for i, e in enumerate(encs):
        want = e.ids[:max_len]                # TRL: keep the first max_length tokens
        want_labels = list(want)              # TRL >= 0.17 collator: labels = ids (no padding inside a record)
        ids, labels = get(ds, i)
        bad_ids += ids != want
        bad_labels += labels != want_labels
        if ids != want and bad_ids < 3:
            print(f"record {i}: ids differ\n  ours {ids[:40]}\n  hf   {want[:40]}")
    check(bad_ids == 0, f"max_seq_len {max_len}: {bad_ids} records' ids differ from tokenizers")
    check(bad_labels == 0, f"max_seq_len {max_len}: {bad_labels} records' labels differ from TRL's rule")
    st = DatasetStats()
    st.struct_size = C.sizeof(st)
    ok(lib.lt_dataset_get_stats(ds, C.byref(st)), "lt_dataset_get_stats")
    n_trunc = sum(len(e.ids) > max_len for e in encs)
    check(st.n_truncated == n_trunc, f"n_truncated {st.n_truncated} want {n_trunc}")
    check(st.n_tokens == sum(min(len(e.ids), max_len) for e in encs), "n_tokens")
    print(f"max_seq_len {max_len}: {len(records)} records, {st.n_tokens} tokens, {st.n_truncated} truncated: "
          f"ids and labels match")
    lib.lt_dataset_free(ds)

# 4. response-only masks by TRL's prompt-completion rule: the first len(tokenizer(prompt)) tokens
# (the prompt, up to the output, encoded alone) carry no loss, every later one does; not a byte
# rule: where a token merges across the boundary (records 1399 and 1468) it carries no loss
ds = load(2048, 1)
bad = merged = 0
for i, (r, e) in enumerate(zip(records, encs)):
    prompt = alpaca_prompt.format(r["instruction"], r["input"], "\0").split("\0")[0]
    p_ids = hf.encode(prompt, add_special_tokens=True).ids
    merged += e.ids[:len(p_ids)] != p_ids
    want = [-100] * len(p_ids) + e.ids[len(p_ids):]
    ids, labels = get(ds, i)
    bad += labels != want
check(bad == 0, f"response-only: {bad} records' masks differ from TRL's prompt-token-count rule")
check(merged == 2, f"{merged} records with a token across the prompt/response boundary, expected 2")
lib.lt_dataset_free(ds)
lib.lt_tokenizer_free(tok)

# 5. the command shows statistics and masked examples
cli = os.environ.get("LORATUNE_CLI")
if cli:
    out = subprocess.run([cli, "dataset", "--data", DATA, "--tokenizer", TOKDIR, "--show", "1", "--response-only",
                          "--no-color"], capture_output=True, text=True)
    check(out.returncode == 0, f"loratune dataset exited {out.returncode}: {out.stderr}")
    check(f"records       {len(records)}" in out.stdout, "CLI record count")
    check("format        alpaca (template alpaca-zh)" in out.stdout, "CLI format line")
    check("⟦\n下面是描述一个任务" in out.stdout and "⟧能，人本来就只有一个心脏。\n<|im_end|>" in out.stdout,
          "CLI masked example:\n" + out.stdout)
    bad_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"lt_cli_bad_{os.getpid()}.jsonl")
    with open(bad_file, "w") as f:
        f.write('{"instruction": "a", "output": "b"}\n{"instruction": "a"}\n')
    out = subprocess.run([cli, "dataset", "--data", bad_file, "--tokenizer", TOKDIR], capture_output=True, text=True)
    check(out.returncode != 0 and f"{bad_file}:2:1: record 2: missing field 'output'" in out.stderr,
          f"CLI on a bad file: {out.returncode} {out.stderr}")
    out = subprocess.run([cli, "dataset", "--data", bad_file, "--tokenizer", TOKDIR, "--skip-bad"],
                         capture_output=True, text=True)
    check(out.returncode == 0 and "skipped       1" in out.stdout and "missing field 'output'" in out.stderr,
          f"CLI --skip-bad: {out.returncode} {out.stdout} {out.stderr}")
    os.unlink(bad_file)

if failures:
    print(f"test_ruozhiba_hf: {failures} checks failed")
    sys.exit(1)
print("test_ruozhiba_hf: all checks passed")
