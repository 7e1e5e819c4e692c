#!/usr/bin/env python3
"""make_refs.py - writes refs.json (and the tokenizer folders under tok/) beside it: what TRL's
SFTTrainer makes of loratune's record kinds, for the families' tokenizers, for test_data_trl.c;
and ruozhiba_counts.json: for each of the 1,475 ruozhiba records as a prompt-completion record
through the notebook's template, Qwen2's token counts of the prompt (the tokens that carry no
loss) and of the whole record, for test_data_ruozhiba.c.

It runs TRL's own code: SFTTrainer._prepare_dataset (the add-EOS, chat-template and tokenize
steps, packing off, no truncation) on a one-record datasets.Dataset, then TRL's
DataCollatorForLanguageModeling (completion_only_loss) for the labels. Record kinds:
  text          {"text": ...}: TRL's language-modeling record
  alpaca        the notebook's formatting function: the template with instruction / input /
                output filled in, as {"text": ...} (loss on every token)
  alpaca_resp   the same as a prompt-completion record, {"prompt": template up to {output},
                "completion": the rest} (loss on the completion only: TRL masks the first
                len(tokenizer(prompt)) tokens of tokenizer(prompt + completion)). ALPACA_MERGE's
                record begins its output with "\n\n", which Qwen2's BPE merges with the
                template's "Response:\n" into one token: the prompt's own tokens then do not
                begin the record's (TRL warns), and the count still decides
  chat          {"messages": [...]}: TRL's conversational record (apply_chat_template)
Tokenizers: Qwen2's (assets/qwen2-tokenizer: adds nothing), and BOS-adding ones made here from
the repository's small test vocabularies with each family's chat template and special-token
names (tests/tok/templates): llama3 (the byte-level BPE of tests/fixtures/families with Llama 3's
added tokens and TemplateProcessing BOS), gemma, phi3 (Llama-2 style SentencePiece, as Phi-3
ships) and mistral (tests/tok/spm).
Needs trl + datasets + transformers + torch (run: /work/venv-trl/bin/python make_refs.py; the
versions are written into refs.json). The committed test needs none of them."""
import json
import os
import shutil
import types

import datasets
import tokenizers
import torch  # noqa: F401  (the collator returns tensors)
import transformers
import trl
from transformers import AutoTokenizer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling, SFTTrainer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
TPL = os.path.join(ROOT, "tests", "tok", "templates")

# the notebook's kind of prompt template (Python str.format; loratune reads the same text)
TEMPLATE = ("Below is an instruction that describes a task. Write a response that completes the request.\n\n"
            "### Instruction:\n{}\n\n### Input:\n{}\n\n### Response:\n{}")
ALPACA = [
    ("Name three primary colours.", "", "Red, yellow and blue."),
    ("把这句话翻译成英文。", "今天天气很好。", "The weather is nice today."),
    ("Say nothing special", "<s> and <bos> as text", "Fine: </s> is just text here."),
]
# a token merges across the prompt/completion boundary (':\n' + '\n\n' -> ':\n\n\n' for Qwen2)
ALPACA_MERGE = [
    ("Answer after a blank line.", "", "\n\nThe answer comes after a blank line."),
]
# the notebook's alpaca_prompt, verbatim (loratune's alpaca-zh) for ruozhiba_counts.json
NOTEBOOK_TEMPLATE = "\n下面是描述一个任务，以一个输入然后提供一个回复\n### Instruction:\n{}\n### Input:\n{}\n### Response:\n{}\n"
RUOZHIBA = "assets/ruozhiba/ruozhiba_qa.json"
TEXTS = [
    "Quick zebras jump over the lazy dog.",
    "你好，世界！ naïve café",
    "A line\n\nwith blank lines\tand tabs ",
]
CHATS = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
     {"role": "user", "content": "Thanks"}, {"role": "assistant", "content": "You're welcome."}],
]


def llama3_tokenizer(out):
    """The 256-byte BPE with Llama 3's special tokens and its BOS post-processor."""
    tj = json.load(open(os.path.join(ROOT, "tests/fixtures/families/tokenizer-bpe256/tokenizer.json")))
    nxt = 1 + max(list(tj["model"]["vocab"].values()) + [a["id"] for a in tj["added_tokens"]])
    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    ids = {}
    for n in names:
        ids[n] = nxt
        tj["added_tokens"].append({"id": nxt, "content": n, "single_word": False, "lstrip": False, "rstrip": False,
                                   "normalized": False, "special": True})
        nxt += 1
    bos = "<|begin_of_text|>"
    tj["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [ids[bos]], "tokens": [bos]}},
    }
    json.dump(tj, open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)
    return {"bos_token": bos, "eos_token": "<|eot_id|>", "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": open(os.path.join(TPL, "llama3.jinja")).read()}


def spm_tokenizer(src, template, **over):
    def make(out):
        shutil.copy(os.path.join(ROOT, src, "tokenizer.json"), out)
        cfg = json.load(open(os.path.join(ROOT, src, "tokenizer_config.json")))
        cfg.update(over)
        cfg["chat_template"] = open(os.path.join(TPL, template)).read()
        return cfg
    return make


MADE = {
    "llama3": llama3_tokenizer,
    "gemma": spm_tokenizer("tests/tok/spm/gemma", "gemma2.jinja"),
    "phi3": spm_tokenizer("tests/tok/spm/llama2", "phi3.jinja", eos_token="<|endoftext|>"),
    "mistral": spm_tokenizer("tests/tok/spm/llama-first", "mistral.jinja"),
}


def prepare_all(tok, records):
    """TRL's own preparation (SFTTrainer._prepare_dataset) of a list of records."""
    ds = datasets.Dataset.from_list(records)
    args = types.SimpleNamespace(dataset_num_proc=None, dataset_text_field="text", assistant_only_loss=False,
                                 max_length=None, packing_strategy="bfd", shuffle_dataset=False, seed=0,
                                 use_liger_kernel=False)
    owner = types.SimpleNamespace(_is_vlm=False)
    return SFTTrainer._prepare_dataset(owner, ds, tok, args, False, None, "train")


def prepare(tok, record):
    """TRL's own preparation of one record, then its collator's labels."""
    out = prepare_all(tok, [record])
    ex = {k: v for k, v in out[0].items() if k in ("input_ids", "completion_mask")}
    coll = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0)
    batch = coll([ex])
    ids = batch["input_ids"][0].tolist()
    assert ids == ex["input_ids"]
    return ids, batch["labels"][0].tolist()


def main():
    datasets.disable_progress_bars()
    vocabs = [("qwen2", "assets/qwen2-tokenizer")]
    for name, make in MADE.items():
        rel = f"tests/data/trl/tok/{name}"
        out = os.path.join(ROOT, rel)
        os.makedirs(out, exist_ok=True)
        cfg = make(out)
        json.dump(cfg, open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8"), indent=1,
                  ensure_ascii=False)
        vocabs.append((name, rel))
    refs = {"versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                         "tokenizers": tokenizers.__version__, "datasets": datasets.__version__},
            "script": "tests/data/trl/make_refs.py", "template": TEMPLATE, "vocabs": []}
    for name, rel in vocabs:
        tok = AutoTokenizer.from_pretrained(os.path.join(ROOT, rel))
        v = {"name": name, "dir": rel, "bos": tok.bos_token, "eos": tok.eos_token, "cases": []}

        def add(kind, record, lt_record, note=None):
            ids, labels = prepare(tok, record)
            c = {"kind": kind, "record": lt_record, "ids": ids, "labels": labels}
            if note:
                c["note"] = note
            v["cases"].append(c)

        for t in TEXTS + [tok.eos_token.join(["ends with EOS", ""]), (tok.bos_token or "") + "begins with BOS"]:
            add("text", {"text": t}, {"text": t})
        for ins, inp, outp in ALPACA + ALPACA_MERGE:
            rec = {"instruction": ins, "input": inp, "output": outp}
            add("alpaca", {"text": TEMPLATE.format(ins, inp, outp)}, rec)
            prompt = TEMPLATE.format(ins, inp, "")
            full = TEMPLATE.format(ins, inp, outp)
            p_ids = tok(text=prompt)["input_ids"]
            pc_ids = tok(text=full + tok.eos_token)["input_ids"]
            merged = pc_ids[:len(p_ids)] != p_ids  # TRL's own check (it warns when it fails)
            if (ins, inp, outp) in ALPACA:
                assert not merged, (name, ins)
            elif name == "qwen2":
                assert merged, (name, ins)  # the case this record is here for
            add("alpaca_resp", {"prompt": prompt, "completion": full[len(prompt):]}, rec,
                f"a token merges across the boundary: the prompt's {len(p_ids)} tokens do not begin the record's"
                if merged else None)
        for m in CHATS:
            add("chat", {"messages": m}, {"messages": m})
        n_bos = sum(c["ids"][:1] == [tok.bos_token_id] for c in v["cases"]) if tok.bos_token_id is not None else 0
        print(f"{name}: {len(v['cases'])} cases, {n_bos} begin with BOS")
        refs["vocabs"].append(v)
    with open(os.path.join(HERE, "refs.json"), "w", encoding="utf-8") as f:
        json.dump(refs, f, ensure_ascii=False, indent=0)
        f.write("\n")
    ruozhiba_counts(refs["versions"])


def ruozhiba_counts(versions):
    """Qwen2's prompt token counts of every ruozhiba record as TRL's prompt-completion record
    (the notebook's template: prompt up to the output, completion = output + the template's
    tail, EOS appended by TRL): n_prompt[i] = the tokens that carry no loss (TRL's completion
    mask), n_tokens[i] = all of them. Two compact lists, one line each."""
    tok = AutoTokenizer.from_pretrained(os.path.join(ROOT, "assets/qwen2-tokenizer"))
    records = json.load(open(os.path.join(ROOT, RUOZHIBA), encoding="utf-8"))
    head, tail = NOTEBOOK_TEMPLATE.rsplit("{}", 1)  # the template goes on after {output}
    pcs = []
    for r in records:
        prompt = head.format(r["instruction"], r["input"])
        pcs.append({"prompt": prompt, "completion": r["output"] + tail})
        assert prompt + pcs[-1]["completion"] == NOTEBOOK_TEMPLATE.format(r["instruction"], r["input"], r["output"])
    out = prepare_all(tok, pcs)
    n_prompt, n_tokens, merged = [], [], []
    for i, ex in enumerate(out):
        mask = ex["completion_mask"]
        k = mask.index(1)
        assert mask == [0] * k + [1] * (len(mask) - k)
        n_prompt.append(k)
        n_tokens.append(len(ex["input_ids"]))
        p_ids = tok(text=pcs[i]["prompt"])["input_ids"]
        assert len(p_ids) == k
        if ex["input_ids"][:k] != p_ids:
            merged.append(i)
    ref = {"versions": versions, "script": "tests/data/trl/make_refs.py", "tokenizer": "assets/qwen2-tokenizer",
           "data": RUOZHIBA, "template": NOTEBOOK_TEMPLATE, "n_records": len(records),
           "merged": merged, "n_prompt": n_prompt, "n_tokens": n_tokens}
    with open(os.path.join(HERE, "ruozhiba_counts.json"), "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False, separators=(',', ':'))}"
                                   for k, v in ref.items()) + "\n}\n")
    print(f"ruozhiba: {len(records)} records, {len(merged)} with a token across the prompt/completion boundary "
          f"(records {merged})")


if __name__ == "__main__":
    main()
