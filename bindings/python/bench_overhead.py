#!/usr/bin/env python3
"""bench_overhead.py - what the Python layer adds to a training step.

Two ways to run the same training (same model, same LoRA init, same dataset object, same
lt_train_params, same seed, so the same batches in the same order):
  C      a bare ctypes loop: lt_trainer_new, then lt_trainer_step N times (nothing else in Python);
  SFT    SFTTrainer(...).train(): the notebook's path (Metrics objects, logging every step,
         the progress bar when tqdm is installed, the TrainOutput).
Rounds alternate C and SFT (each from a fresh LoRA adapter; the first round warms up and is not
counted) and the medians are compared. Both give the same losses: the check that they did the
same work.

  python3 bench_overhead.py --model Qwen2-1.5B-Instruct --steps 20 --rounds 3 [--device cuda]

Prints a table and the overhead in percent ((SFT - C) / C), the figure the acceptance line
"the Python layer adds < 1% to a training step" is about.
"""
import argparse
import ctypes
import io
import json
import os
import statistics
import sys
import time
from contextlib import redirect_stdout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from loratune import _ffi  # noqa: E402
from loratune.datasets import Dataset as RowDataset  # noqa: E402
from loratune.transformers import TrainingArguments  # noqa: E402
from loratune.trl import SFTTrainer  # noqa: E402
from loratune.unsloth import FastLanguageModel, is_bfloat16_supported  # noqa: E402

ALPACA_ZH = "\n下面是描述一个任务，以一个输入然后提供一个回复\n### Instruction:\n{}\n### Input:\n{}\n### Response:\n{}\n"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model folder or Hub id")
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "assets", "ruozhiba", "ruozhiba_qa.json"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--accum", type=int, default=8)
    ap.add_argument("--device", default=os.environ.get("LORATUNE_DEVICE", "auto"))
    ap.add_argument("--max-seq-length", type=int, default=2048)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    model, tokenizer = FastLanguageModel.from_pretrained(args.model, max_seq_length=args.max_seq_length,
                                                         load_in_4bit=True, device=args.device)
    lora = dict(r=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                lora_alpha=32, lora_dropout=0.1, bias="none", use_gradient_checkpointing="unsloth",
                random_state=3407, use_rslora=False, loftq_config=None)
    model = FastLanguageModel.get_peft_model(model, **lora)
    rows = json.load(open(args.data, encoding="utf-8"))
    eos = tokenizer.eos_token
    texts = [ALPACA_ZH.format(r["instruction"], r.get("input", ""), r["output"]) + eos for r in rows]
    train_args = TrainingArguments(per_device_train_batch_size=args.batch, gradient_accumulation_steps=args.accum,
                                   warmup_steps=min(50, args.steps // 2), max_steps=args.steps, learning_rate=4e-5,
                                   fp16=not is_bfloat16_supported(), bf16=is_bfloat16_supported(), logging_steps=1,
                                   optim="adamw_8bit", weight_decay=0.01, lr_scheduler_type="cosine", seed=3407,
                                   output_dir=None, save_strategy="no")
    sft = SFTTrainer(model=model, tokenizer=tokenizer, train_dataset=RowDataset.from_list([{"text": t} for t in texts]),
                     dataset_text_field="text", max_seq_length=args.max_seq_length, packing=False, args=train_args)
    lib = _ffi.lib()

    def fresh_lora():
        FastLanguageModel.get_peft_model(model, **lora)

    def run_c():
        fresh_lora()
        t0 = time.perf_counter()
        tr = sft._make_trainer()  # the same lt_train_params the SFT path builds
        h, step, m = tr.handle, lib.lt_trainer_step, _ffi.lt_metrics()
        m.struct_size = ctypes.sizeof(m)
        n = 0
        while step(h, ctypes.byref(m)) == _ffi.LT_OK:
            n += 1
        t = time.perf_counter() - t0
        tr.close()
        assert n == args.steps, "C loop took %d steps" % n
        return t, m.loss

    def run_sft():
        fresh_lora()
        t0 = time.perf_counter()
        with redirect_stdout(io.StringIO()):  # the log lines still get formatted, as in a notebook
            out = sft.train()
        t = time.perf_counter() - t0
        sft._trainer.close()
        assert out.global_step == args.steps
        return t, sft.state.log_history[-2]["loss"]

    c_times, sft_times = [], []
    print("%-6s %-5s %10s %10s %12s" % ("round", "path", "seconds", "s/step", "last loss"))
    for r in range(-1, args.rounds):  # round -1 warms up (imports, allocations) and is not counted
        for name, fn, acc in (("C", run_c, c_times), ("SFT", run_sft, sft_times)):
            t, loss = fn()
            if r >= 0:
                acc.append(t)
            print("%-6s %-5s %10.3f %10.4f %12.4f" % (r if r >= 0 else "warm", name, t, t / args.steps, loss))
    c, s = statistics.median(c_times), statistics.median(sft_times)
    overhead = 100.0 * (s - c) / c
    info = model.lt.info()
    print("\ndevice %d, dtype %d, %d steps x %d rounds, batch %d x accum %d" % (
        info.device, info.compute_dtype, args.steps, args.rounds, args.batch, args.accum))
    print("median per step: C %.4f s, SFTTrainer %.4f s -> Python layer adds %.3f%%" % (
        c / args.steps, s / args.steps, overhead))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"c_seconds": c_times, "sft_seconds": sft_times, "steps": args.steps,
                       "overhead_percent": overhead}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
