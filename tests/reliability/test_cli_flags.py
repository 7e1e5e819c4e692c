#!/usr/bin/env python3
"""test_cli_flags.py - every subcommand of `loratune`, run with each flag its --help documents, on a
tiny random Qwen2 model (tests/export/make_tiny_model.py) on the CPU.

The flags come from the help text itself (every "--name" in it); each is run on top of a quick
base invocation of its command with the values of VALUES (the help text's choices and defaults).
A documented flag without an entry here fails the test, and so does a run that ends in a usage
error (exit 2: a flag that cannot be used, like `generate --device cpu` was) or any other failure,
except --device cuda on a machine without a GPU, which must say so (LT_ERR_NO_DEVICE / CUDA).
Exit 77 (skip) without numpy / safetensors.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy  # noqa: F401  (make_tiny_model.py needs them)
    import safetensors  # noqa: F401
except ImportError as e:
    print("skip: numpy / safetensors not importable (%s)" % e)
    sys.exit(77)

CLI = os.environ["LORATUNE_CLI"]
ROOT = os.environ["LT_REPO_ROOT"]
W = tempfile.mkdtemp(prefix="lt_cli_flags_")
M = os.path.join(W, "model")
A = os.path.join(W, "adapter")
D = os.path.join(W, "data.json")
CFG = os.path.join(W, "train.json")
n_out = [0]


SW = "<switch>"


def fresh(name="out"):
    n_out[0] += 1
    return os.path.join(W, "%s%d" % (name, n_out[0]))


def no_gpu(out):
    return "NO_DEVICE" in out or "CUDA" in out or "GPU" in out or "cuda" in out


# command -> (base args (a function, fresh each run), {flag: [values or (values, extra args)]})
# A value None is a switch. The base's own flags are replaced when the flag under test is one of them.
def train_base():
    return ["--model", M, "--data", D, "--output", fresh(), "--max-steps", "2", "--batch-size", "2", "--grad-accum",
            "1", "--device", "cpu", "--gen-max-new-tokens", "2", "--warmup-steps", "0", "--threads", "2"]


DATA_VALUES = {
    "--data": [D], "--tokenizer": [M], "--template": ["alpaca-zh", "alpaca", "chatml", "{instruction} {input} {output}"],
    "--format": ["auto", "alpaca"], "--instruction-field": ["instruction"], "--input-field": ["input"],
    "--output-field": ["output"], "--text-field": ["text"], "--max-seq-len": ["64", "2048"],
    "--loss-on": ["all", "response"], "--response-only": [None], "--add-eos": [None], "--no-add-eos": [None],
    "--no-eos": [None], "--skip-bad-records": [None], "--no-skip-bad-records": [None], "--skip-bad": [None],
    "--eval-fraction": ["0.25", "0"], "--seed": ["3407", "1"], "--threads": ["0", "1"],
}

TRAIN_VALUES = dict(DATA_VALUES)
TRAIN_VALUES.update({
    "--model": [M], "--output": ["NEW"], "--config": [CFG], "--overwrite": [None], "--no-overwrite": [None],
    "--resume": ["RESUME"], "--init-adapter": [A], "--device": ["auto", "cpu", "cuda"], "--quant": ["nf4", "none"],
    "--dtype": ["auto", "bf16", "fp16"], "--batch-size": ["2", "1"], "--grad-accum": ["8", "2"],
    "--max-steps": ["2", ("0", ["--epochs", "0.2"])], "--epochs": ["1"], "--lr": ["4e-05", "1e-3"],
    "--warmup-steps": ["50", "0", ("-1", ["--warmup-ratio", "0.5"])], "--warmup-ratio": [("0.5", ["--warmup-steps", "-1"])],
    "--scheduler": ["cosine", "linear", "constant"], "--optim": ["adamw_8bit", "adamw_torch"],
    "--weight-decay": ["0.01"], "--adam-beta1": ["0.9"], "--adam-beta2": ["0.999"], "--adam-eps": ["1e-08"],
    "--max-grad-norm": ["1", "0"], "--gradient-checkpointing": [None], "--no-gradient-checkpointing": [None],
    "--deterministic": [None], "--no-deterministic": [None], "--fuse-micro-batches": [None],
    "--no-fuse-micro-batches": [None], "--bucket-passes": [None], "--no-bucket-passes": [None],
    "--offload-checkpoints": [None], "--no-offload-checkpoints": [None],
    "--lora-r": ["16", "4"], "--lora-alpha": ["32"], "--lora-dropout": ["0.1", "0"],
    "--use-rslora": [None], "--no-use-rslora": [None], "--targets": ["all", "q,k,v,o,gate,up,down", "q_proj,v_proj"],
    "--log-every": ["1", "2"], "--save-every": ["0", "1"], "--save-total-limit": [("1", ["--save-every", "1"])],
    "--eval-data": [D], "--eval-every": [("1", ["--eval-fraction", "0.25"])],
    "--eval-batch-size": [("2", ["--eval-fraction", "0.25"])],
    "--early-stopping-patience": [("1", ["--eval-fraction", "0.25"])],
    "--early-stopping-threshold": [("0", ["--eval-fraction", "0.25"])],
    "--load-best-at-end": [(None, ["--eval-fraction", "0.25"])], "--no-load-best-at-end": [None],
    "--gen-instruction": ["只剩一个心脏了还能活吗？", ""], "--gen-input": [""], "--gen-max-new-tokens": ["2"],
    "--gpus": [("1", [])], "--help": [None],
})
TRAIN_VALUES.pop("--threads")
TRAIN_VALUES["--threads"] = ["0", "1"]

DATASET_VALUES = dict(DATA_VALUES)
DATASET_VALUES.update({"--show": ["3", "0"], "--color": [None], "--no-color": [None], "--help": [None]})


def dataset_base():
    return ["--data", D, "--tokenizer", M]


def generate_base():
    return ["--model", M, "--prompt", "ab", "--max-new-tokens", "2", "--device", "cpu"]


GENERATE_VALUES = {
    "--model": [M], "--adapter": [A], "--prompt": ["hello"], "--instruction": [("hi", ["--prompt", None])],
    "--input": [("x", ["--prompt", None, "--instruction", "hi"])],
    "--template": [(t, ["--prompt", None, "--instruction", "hi"]) for t in ("alpaca-zh", "alpaca", "chatml", "none")]
    + [("TEMPLATE_FILE", ["--prompt", None, "--instruction", "hi"])],
    "--max-new-tokens": ["128", "2"], "--greedy": [None], "--temperature": ["0.7"], "--top-p": ["0.9"],
    "--top-k": ["5"], "--min-p": ["0.05"], "--repetition-penalty": ["1.1"], "--seed": ["1"], "--stop": ["a"],
    "--stop-id": ["3"], "--device": ["auto", "cpu", "cuda"], "--quant": ["nf4", "none"], "--tokenizer": [M],
    "--ids": [None], "--help": [None], "--prompts-file": [("PROMPTS_FILE", ["--prompt", None])],
    "--batch-size": [("1", ["--prompt", None, "--prompts-file", "PROMPTS_FILE"])],
}


def export_base():
    return ["--model", M, "--adapter", A, "--format", "gguf", "--quant", "q8_0", "--output",
            os.path.join(fresh(), "m.gguf"), "--threads", "2", "--device", "cpu"]


EXPORT_VALUES = {
    "--model": [M], "--adapter": [A],
    "--format": [(f, ["--output", "NEWPATH"]) for f in ("peft", "merged", "gguf", "gguf-lora")],
    "--output": ["NEWPATH"], "--quant": ["f32", "f16", "bf16", "q8_0", "q4_k_m", "q4_k_s", "q5_k_m", "q6_k"],
    "--template": ["alpaca-zh", "chatml", "TEMPLATE_FILE"], "--merge-into": ["auto", "original", "dequantized"],
    "--tokenizer": [M], "--max-shard-bytes": [("100000", ["--format", "merged", "--output", "NEWPATH"])],
    "--no-modelfile": [None], "--threads": ["1"], "--device": ["auto", "cpu", "cuda"], "--overwrite": [None],
    "--help": [None],
}


def tokenize_base():
    return ["--tokenizer", M]


TOKENIZE_VALUES = {
    "--tokenizer": [M], "--jsonl": [(None, [], '{"text": "hello"}\n')], "--decode": [(None, [], "1 2 3\n")],
    "--add-special": [None], "--skip-special": [(None, ["--decode", SW], "1 2 3\n")],
    "--offsets": [(None, ["--jsonl", SW], '{"text": "hello"}\n')], "--threads": ["1"], "--help": [None],
}


def info_base():
    return ["--model", M]


INFO_VALUES = {
    "--model": [M], "--device": ["auto", "cpu", "cuda"], "--quant": ["nf4", "none"], "--r": ["16"], "--alpha": ["32"],
    "--targets": ["all", "q_proj,v_proj"], "--batch-size": ["2"], "--max-seq-len": ["2048"],
    "--optim": ["adamw_8bit", "adamw_torch"], "--no-gradient-checkpointing": [None], "--offload-checkpoints": [None],
    "--help": [None],
}


def init_random_base():
    return ["--config", os.path.join(M, "config.json"), "--output", fresh(), "--dtype", "f32", "--threads", "2"]


INIT_RANDOM_VALUES = {
    "--config": [os.path.join(M, "config.json")], "--output": ["NEW"], "--seed": ["0", "5"],
    "--dtype": ["bf16", "f16", "f32"], "--tokenizer": [M], "--threads": ["1"], "--overwrite": [None], "--help": [None],
}

COMMANDS = [
    ("train", train_base, TRAIN_VALUES), ("dataset", dataset_base, DATASET_VALUES),
    ("generate", generate_base, GENERATE_VALUES), ("export", export_base, EXPORT_VALUES),
    ("tokenize", tokenize_base, TOKENIZE_VALUES), ("info", info_base, INFO_VALUES),
    ("init-random", init_random_base, INIT_RANDOM_VALUES),
]


# flags the help text names that belong to other tools (llama.cpp's --lora in export's help)
NOT_OURS = {"export": {"--lora"}}


def documented_flags(cmd):
    p = subprocess.run([CLI, cmd, "--help"], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("%s --help exits %d" % (cmd, p.returncode))
    found = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", p.stdout))
    return sorted(found - NOT_OURS.get(cmd, set()))


def build_args(base, flag, value, extra):
    """base + extra + flag value: extra is [flag, value, ...] where value None drops the base's
    flag and SW adds a switch; the flag under test replaces the base's own value."""
    args = list(base)

    def remove(f):
        if f in args:
            i = args.index(f)
            n = 2 if i + 1 < len(args) and not args[i + 1].startswith("--") else 1
            del args[i:i + n]

    def put(f, v):
        remove(f)
        args.append(f)
        if v is not None and v != SW:
            args.append(v)

    for i in range(0, len(extra), 2):
        f, v = extra[i], extra[i + 1]
        if v is None:
            remove(f)
        else:
            put(f, v)
    put(flag, value)
    return args


def main():
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "export", "make_tiny_model.py"), M, "--small-vocab",
                    "1000", "--hidden", "64", "--inter", "128", "--layers", "2", "--heads", "4", "--kv-heads", "2",
                    "--dtype", "bf16", "--adapter", A, "--rank", "4", "--alpha", "8"], check=True)
    recs = [{"instruction": "q%d" % i, "input": "x" if i % 2 else "", "output": "answer %d" % i} for i in range(8)]
    json.dump(recs, open(D, "w"))
    json.dump({"lr": 1e-3}, open(CFG, "w"))
    tfile = os.path.join(W, "template.txt")
    open(tfile, "w").write("Q: {instruction} {input}\nA: {output}")
    pfile = os.path.join(W, "prompts.jsonl")
    open(pfile, "w").write('hi\n{"instruction": "q", "input": "x"}\n{"prompt": "ab"}\n')
    # a checkpoint to --resume from
    ck_out = os.path.join(W, "ck")
    subprocess.run([CLI, "train"] + train_base()[:4] + ["--output", ck_out] + train_base()[6:] + ["--save-every", "1"],
                   capture_output=True, check=True)
    resume = os.path.join(ck_out, "checkpoint-1")

    failures, runs = [], 0
    for cmd, base_fn, values in COMMANDS:
        flags = documented_flags(cmd)
        for flag in flags:
            if flag not in values:
                failures.append("%s %s: documented but not exercised (add values to test_cli_flags.py)" % (cmd, flag))
                continue
            for item in values[flag]:
                value, extra, stdin = item, [], None
                if isinstance(item, tuple):
                    value, extra = item[0], item[1]
                    stdin = item[2] if len(item) > 2 else None
                subst = {"NEW": fresh(), "NEWPATH": os.path.join(fresh(), "x.gguf"), "RESUME": resume,
                         "TEMPLATE_FILE": tfile, "PROMPTS_FILE": pfile}
                value = subst.get(value, value)
                extra = [subst.get(e, e) if isinstance(e, str) else e for e in extra]
                if flag == "--format" and cmd == "export" and value in ("peft", "merged"):
                    extra = ["--output", fresh()]
                args = build_args(base_fn(), flag, value, extra)
                if cmd == "train" and flag == "--resume":  # resume with the checkpoint's settings
                    args = build_args(args, "--max-steps", "2", [])
                p = subprocess.run([CLI, cmd] + args, capture_output=True, text=True,
                                   input=stdin if stdin is not None else "hello world\n", timeout=300)
                runs += 1
                out = p.stdout + p.stderr
                label = "%s %s %s" % (cmd, flag, "" if value is None else repr(value))
                if re.search(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:", p.stderr):
                    failures.append("%s: sanitizer report: %s" % (label, p.stderr[-1500:]))
                    continue
                if value == "cuda" and p.returncode == 1 and no_gpu(out):
                    continue  # the flag is taken; there is no GPU here
                if p.returncode != 0:
                    failures.append("%s: exit %d: %s" % (label, p.returncode, out.strip()[-300:]))
    shutil.rmtree(W, ignore_errors=True)
    print("%d runs of %d commands" % (runs, len(COMMANDS)))
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
