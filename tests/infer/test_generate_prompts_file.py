#!/usr/bin/env python3
"""test_generate_prompts_file.py - `loratune generate --prompts-file` on the CPU with the small
random Qwen2 of the infer tests (infer-tiny-qwen2, made by `loratune init-random`): one JSON line
per prompt, in the file's order, for plain lines (instructions through the template) and JSON
lines ({"instruction", "input"} and {"prompt"}); greedy ids equal to generating each prompt
alone with --prompt / --instruction; sampling draws prompt i with --seed + i whatever
--batch-size; bad files are refused with exit 2 and a message naming the line."""
import json
import os
import subprocess
import sys
import tempfile

CLI = os.environ["LORATUNE_CLI"]
MODEL = os.path.join(os.environ["LT_BUILD_DIR"], "infer-tiny-qwen2")
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)


def run(*args):
    return subprocess.run([CLI, "generate", "--model", MODEL, "--device", "cpu", "--max-new-tokens", "6"] + list(args),
                          capture_output=True, text=True, timeout=300)


def rows(p):
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def main():
    if not os.path.isdir(MODEL):
        print("skip: %s is missing (the infer_make_tiny_model test makes it)" % MODEL)
        return 77
    w = tempfile.mkdtemp(prefix="lt_prompts_")
    pf = os.path.join(w, "prompts.jsonl")
    prompts = ["天空为什么是蓝色的？", '{"instruction": "只用中文回答问题", "input": "1+1"}', "",
               '{"prompt": "Hello, my name is"}', "Write a haiku about the sea."]
    with open(pf, "w") as f:
        f.write("\n".join(prompts) + "\n")

    # greedy, all at once: one line per prompt (the blank line skipped), in order, as each alone
    p = run("--prompts-file", pf, "--ids", "--greedy", "--stop-id", "0")
    check(p.returncode == 0, "greedy run exits %d: %s" % (p.returncode, p.stderr[-300:]))
    got = rows(p)
    check([r["index"] for r in got] == [0, 1, 2, 3], "indices %s" % [r.get("index") for r in got])
    alone = [run("--instruction", "天空为什么是蓝色的？", "--ids", "--greedy", "--stop-id", "0"),
             run("--instruction", "只用中文回答问题", "--input", "1+1", "--ids", "--greedy", "--stop-id", "0"),
             run("--prompt", "Hello, my name is", "--ids", "--greedy", "--stop-id", "0"),
             run("--instruction", "Write a haiku about the sea.", "--ids", "--greedy", "--stop-id", "0")]
    for i, a in enumerate(alone):
        check(a.returncode == 0, "prompt %d alone exits %d" % (i, a.returncode))
        if i < len(got) and a.returncode == 0:
            check(got[i]["ids"] == json.loads(a.stdout), "prompt %d: batch %s, alone %s" % (i, got[i]["ids"], a.stdout))
            check(got[i]["n_tokens"] == len(got[i]["ids"]) and isinstance(got[i]["text"], str),
                  "prompt %d: n_tokens/text fields" % i)

    # sampling: the same draws whatever the batch size (prompt i uses --seed + i)
    outs = []
    for bs in ("0", "1", "3"):
        p = run("--prompts-file", pf, "--ids", "--temperature", "0.9", "--seed", "5", "--batch-size", bs)
        check(p.returncode == 0, "sampling --batch-size %s exits %d: %s" % (bs, p.returncode, p.stderr[-300:]))
        outs.append([r["ids"] for r in rows(p)])
    check(outs[0] == outs[1] == outs[2], "sampled ids depend on --batch-size: %s" % outs)
    one = run("--prompt", "Hello, my name is", "--ids", "--temperature", "0.9", "--seed", "7")
    check(one.returncode == 0 and len(outs[0]) == 4 and json.loads(one.stdout) == outs[0][2],
          "prompt 2 sampled in the file differs from alone with --seed 5 + 2")

    # bad input
    bad = os.path.join(w, "bad.jsonl")
    for text, needle in (('ok\n{"instruction": 3}\n', "line 2"), ("{not json\n", "line 1: not JSON"),
                         ("\n\n", "holds no prompt")):
        with open(bad, "w") as f:
            f.write(text)
        p = run("--prompts-file", bad)
        check(p.returncode == 2 and needle in p.stderr, "bad file %r: exit %d, %s" % (text, p.returncode, p.stderr))
    p = run("--prompts-file", os.path.join(w, "missing.jsonl"))
    check(p.returncode != 0 and "prompts-file" in p.stderr, "a missing file: exit %d %s" % (p.returncode, p.stderr))
    p = run("--prompts-file", pf, "--prompt", "x")
    check(p.returncode == 2 and "exclude" in p.stderr, "--prompts-file with --prompt: exit %d" % p.returncode)
    print("test_generate_prompts_file: %d failures" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
