#!/usr/bin/env python3
"""notebook_original.py - the original Unsloth Colab notebook's code (Qwen2-1.5B-Instruct, LoRA,
ruozhiba, SFTTrainer, GGUF for Ollama), run against loratune on the CPU with the tiny model.

Between the two "---- the notebook" markers the code is the notebook's, verbatim, except:
  - the install cell (`!pip install unsloth ...`) is gone and the imports name loratune in place
    of unsloth / trl / transformers (`from unsloth import FastLanguageModel` -> `from loratune
    import FastLanguageModel`, and so on), and datasets' load_dataset comes from loratune.datasets
    (the real `datasets` when it is installed); `import torch` is dropped: the code never uses it;
  - model_name points at the tiny random model instead of "Qwen/Qwen2-1.5B-Instruct";
  - the dataset comes from the bundled copy of the same data (CI has no network) instead of
    the Hub id;
  - max_steps reads $LORATUNE_MAX_STEPS (2 here) instead of 100: the CPU reference backend is
    slow, and each step is 2 x 8 records.
Everything else (the prompt, the formatting function, every hyper-parameter, both generations
with TextStreamer, the saving calls) runs as written. One cell is added after the notebook's, as a
user would write it with the same imports: 2% of the records held out with train_test_split as
eval_dataset, an evaluation every step, and trainer_stats and trainer.evaluate() printed.
Afterwards the harness checks what the notebook produced. Exit 77 when the tiny model cannot be
made.
"""
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("LT_REPO_ROOT") or os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
sys.path.insert(0, HERE)
import tiny_model  # noqa: E402

try:
    TINY = os.environ.get("LT_TINY_MODEL") or tiny_model.make(
        os.path.join(os.environ.get("LT_BUILD_DIR") or tempfile.gettempdir(), "tiny-qwen2"))
except RuntimeError as e:
    print("skipped: %s" % e)
    sys.exit(77)
DATA = os.path.join(ROOT, "assets", "ruozhiba", "ruozhiba_qa.json")
os.environ.setdefault("LORATUNE_MAX_STEPS", "2")
os.environ.setdefault("LORATUNE_DEVICE", "cpu")
WORK = tempfile.mkdtemp(prefix="loratune-notebook-")
os.chdir(WORK)  # the notebook writes outputs/, lora_model/ and model/ where it runs

# ---- the notebook ------------------------------------------------------------------------------
from loratune import FastLanguageModel  # was: from unsloth import FastLanguageModel
max_seq_length = 2048 # Choose any! We auto support RoPE Scaling internally!
dtype = None # None for auto detection. Float16 for Tesla T4, V100, Bfloat16 for Ampere+
load_in_4bit = True # Use 4bit quantization to reduce memory usage. Can be False.

model, tokenizer = FastLanguageModel.from_pretrained(
    model_name = TINY, # was: "Qwen/Qwen2-1.5B-Instruct"
    max_seq_length = max_seq_length,
    dtype = dtype,
    load_in_4bit = load_in_4bit,
)

alpaca_prompt = """
下面是描述一个任务，以一个输入然后提供一个回复
### Instruction:
{}
### Input:
{}
### Response:
{}
"""

FastLanguageModel.for_inference(model) # Enable native 2x faster inference
inputs = tokenizer(
[
    alpaca_prompt.format(
        "海绵宝宝的书法是不是叫做海绵体", # instruction
        "", # input
        "", # output - leave this blank for generation!
    )
], return_tensors = "pt").to("cuda")

from loratune import TextStreamer  # was: from transformers import TextStreamer
text_streamer = TextStreamer(tokenizer)
_ = model.generate(**inputs, streamer = text_streamer, max_new_tokens = 128)

model = FastLanguageModel.get_peft_model(
    model,
    r = 16, # Choose any number > 0 ! Suggested 8, 16, 32, 64, 128
    target_modules = ["q_proj", "k_proj", "v_proj", "o_proj",
                      "gate_proj", "up_proj", "down_proj",],
    lora_alpha = 32,
    lora_dropout = 0.1, # Supports any, but = 0 is optimized
    bias = "none",    # Supports any, but = "none" is optimized
    use_gradient_checkpointing = "unsloth", # True or "unsloth" for very long context
    random_state = 3407,
    use_rslora = False,  # We support rank stabilized LoRA
    loftq_config = None, # And LoftQ
)

EOS_TOKEN = tokenizer.eos_token # Must add EOS_TOKEN
def formatting_prompts_func(examples):
    instructions = examples["instruction"]
    inputs       = examples["input"]
    outputs      = examples["output"]
    texts = []
    for instruction, input, output in zip(instructions, inputs, outputs):
        # Must add EOS_TOKEN, otherwise your generation will go on forever!
        text = alpaca_prompt.format(instruction, input, output) + EOS_TOKEN
        texts.append(text)
    return { "text" : texts, }
pass

from loratune.datasets import load_dataset  # was: from datasets import load_dataset
dataset = load_dataset("json", data_files = DATA, split = "train")  # was: load_dataset("<hub id>", split = "train")
dataset = dataset.map(formatting_prompts_func, batched = True,)

from loratune import SFTTrainer  # was: from trl import SFTTrainer
from loratune import TrainingArguments  # was: from transformers import TrainingArguments
from loratune import is_bfloat16_supported  # was: from unsloth import is_bfloat16_supported

trainer = SFTTrainer(
    model = model,
    tokenizer = tokenizer,
    train_dataset = dataset,
    dataset_text_field = "text",
    max_seq_length = max_seq_length,
    dataset_num_proc = 2,
    packing = False, # Can make training 5x faster for short sequences.
    args = TrainingArguments(
        per_device_train_batch_size = 2,
        gradient_accumulation_steps = 8,
        warmup_steps = 50,
        max_steps = int(os.environ["LORATUNE_MAX_STEPS"]), # was: 100
        learning_rate = 4e-5,
        fp16 = not is_bfloat16_supported(),
        bf16 = is_bfloat16_supported(),
        logging_steps = 1,
        optim = "adamw_8bit",
        weight_decay = 0.01,
        lr_scheduler_type = "cosine",
        seed = 3407,
        output_dir = "outputs",
    ),
)

trainer_stats = trainer.train()

FastLanguageModel.for_inference(model) # Enable native 2x faster inference
inputs = tokenizer(
[
    alpaca_prompt.format(
        "海绵宝宝的书法是不是叫做海绵体", # instruction
        "", # input
        "", # output - leave this blank for generation!
    )
], return_tensors = "pt").to("cuda")

from loratune import TextStreamer  # was: from transformers import TextStreamer
text_streamer = TextStreamer(tokenizer)
_ = model.generate(**inputs, streamer = text_streamer, max_new_tokens = 128)

model.save_pretrained("lora_model") # Local saving
model.save_pretrained_gguf("model", tokenizer, quantization_method = "q4_k_m")
# ---- the notebook (end) ------------------------------------------------------------------------
trainer_stats_first = trainer_stats

# ---- the added cell: an eval split, evaluation every step, trainer_stats printed --------------
split = dataset.train_test_split(test_size = 0.02, seed = 3407)
trainer = SFTTrainer(
    model = model,
    tokenizer = tokenizer,
    train_dataset = split["train"],
    eval_dataset = split["test"],
    dataset_text_field = "text",
    max_seq_length = max_seq_length,
    dataset_num_proc = 2,
    packing = False,
    args = TrainingArguments(
        per_device_train_batch_size = 2,
        gradient_accumulation_steps = 8,
        warmup_steps = 1,
        max_steps = int(os.environ["LORATUNE_MAX_STEPS"]),
        learning_rate = 4e-5,
        fp16 = not is_bfloat16_supported(),
        bf16 = is_bfloat16_supported(),
        logging_steps = 1,
        eval_strategy = "steps",
        eval_steps = 1,
        per_device_eval_batch_size = 8,
        optim = "adamw_8bit",
        weight_decay = 0.01,
        lr_scheduler_type = "cosine",
        seed = 3407,
        output_dir = "outputs_eval",
        report_to = "none",
    ),
)
trainer_stats = trainer.train()
print(trainer_stats)
eval_metrics = trainer.evaluate()
print(eval_metrics)
# ---- the added cell (end) ----------------------------------------------------------------------


def check(cond, what):
    if not cond:
        print("FAILED: %s" % what)
        sys.exit(1)


steps = int(os.environ["LORATUNE_MAX_STEPS"])
first = trainer_stats_first
check(first.global_step == steps, "global_step %d, want %d" % (first.global_step, steps))
check(first.training_loss > 0, "training_loss %r" % first.training_loss)
for key in ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss"):
    check(key in first.metrics, "trainer_stats.metrics has no %s: %r" % (key, first.metrics))
check(abs(first.metrics["train_samples_per_second"] * first.metrics["train_runtime"] - steps * 2 * 8) < 0.05 * steps * 16,
      "train_samples_per_second %r over %r s for %d steps of 2 x 8" % (
          first.metrics["train_samples_per_second"], first.metrics["train_runtime"], steps))
# the added cell: 1475 records split 1445 / 30, an evaluation after every step, the same loss again
# from evaluate() (no training in between), and TrainOutput printed as TRL prints it
check(len(split["test"]) == 30 and len(trainer.train_dataset) == 1445,
      "split %d / %d" % (len(trainer.train_dataset), len(split["test"])))
check(trainer_stats.global_step == steps, "eval run: global_step %d" % trainer_stats.global_step)
evals = [h for h in trainer.state.log_history if "eval_loss" in h and h["step"] > 0]
check([h["step"] for h in evals][:steps] == list(range(1, steps + 1)), "evaluations at steps %r" % [h["step"] for h in evals])
check(abs(eval_metrics["eval_loss"] - evals[steps - 1]["eval_loss"]) < 1e-4,
      "evaluate() %r vs the last step's %r" % (eval_metrics["eval_loss"], evals[steps - 1]["eval_loss"]))
check(0 <= eval_metrics["eval_mean_token_accuracy"] <= 1, "accuracy %r" % eval_metrics)
check(str(trainer_stats).startswith("TrainOutput(global_step=%d, training_loss=" % steps), str(trainer_stats))
cfg = json.load(open(os.path.join(WORK, "lora_model", "adapter_config.json")))
check(cfg.get("r") == 16 and cfg.get("lora_alpha") == 32, "adapter_config %r" % cfg)
check(os.path.getsize(os.path.join(WORK, "lora_model", "adapter_model.safetensors")) > 0, "adapter weights")
ggufs = [f for f in os.listdir(os.path.join(WORK, "model")) if f.endswith(".gguf")]
check(len(ggufs) == 1, "GGUF files %r" % ggufs)
with open(os.path.join(WORK, "model", ggufs[0]), "rb") as f:
    check(f.read(4) == b"GGUF", "GGUF magic")
print("notebook_original: OK (%d steps, loss %.4f, %s; with eval_dataset: eval_loss %.4f)"
      % (steps, first.training_loss, ggufs[0], eval_metrics["eval_loss"]))
