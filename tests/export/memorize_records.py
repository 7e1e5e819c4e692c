#!/usr/bin/env python3
"""memorize_records.py - the few ruozhiba records a LoRA adapter memorizes for the llama.cpp
greedy-parity checks (llamacpp_parity.sh's 'trained' and '1.5b-trained' stages, and
tests/gpu/train_confident_1p5b.sh, which trains the 1.5B-shaped adapter on a GPU): one list, so
that the adapter and the parity prompts always name the same records.

The records are ruozhiba's first N with no input, a question of at most 15 characters and a
30-40 character answer (~33 tokens each with the "{instruction}\\n{output}" template), so that
a 16-token greedy continuation of "question\\n" is memorized answer text.

usage: memorize_records.py OUT.json [--n 3]     writes the records (JSON array, Alpaca fields)
       memorize_records.py --prompts RECORDS.json prints each record's question, one per line
                                                  (the prompt is the question + "\\n")
Only the standard library: it runs on the GPU machine too.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def select(n):
    path = os.path.join(ROOT, "assets", "ruozhiba", "ruozhiba_qa.json")
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    return [r for r in d if not r["input"] and 30 <= len(r["output"]) <= 40 and len(r["instruction"]) <= 15][:n]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?")
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--prompts", metavar="RECORDS.json")
    a = ap.parse_args()
    if a.prompts:
        with open(a.prompts, encoding="utf-8") as f:
            for r in json.load(f):
                print(r["instruction"].strip())
        return 0
    if not a.out:
        ap.error("give OUT.json or --prompts RECORDS.json")
    recs = select(a.n)
    if len(recs) < a.n:
        print("only %d records match, %d asked" % (len(recs), a.n), file=sys.stderr)
        return 1
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(recs, f, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
