#!/usr/bin/env python3
"""notebook_original.py - the original Unsloth Colab notebook's code (Qwen2-1.5B-Instruct, LoRA,
ruozhiba, SFTTrainer, GGUF for Ollama), run against loratune on the CPU with the tiny model.

Between the two "---- the notebook" markers the code is the notebook's, verbatim, except:
  - the install cell (`!pip install unsloth ...`) is gone and the imports name loratune's
    modules (`from unsloth import` -> `from loratune.unsloth import`, and so on; `import torch`
    is dropped: the code never uses it);
  - model_name points at the tiny random model instead of "Qwen/Qwen2-1.5B-Instruct";
  - the dataset comes from the bundled copy of the same data (CI has no network) instead of
    the Hub id;
  - max_steps reads $LORATUNE_MAX_STEPS (2 here) instead of 100: the CPU reference backend is
    slow, and each step is 2 x 8 records.
Everything else (the prompt, the formatting function, every hyper-parameter, both generations
with TextStreamer, the saving calls) runs as written. Afterwards the harness checks what the
notebook produced. Exit 77 when the tiny model cannot be made.
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
from loratune.unsloth import FastLanguageModel  # was: from unsloth import FastLanguageModel
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

from loratune.transformers import TextStreamer  # was: from transformers import TextStreamer
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

from loratune.trl import SFTTrainer  # was: from trl import SFTTrainer
from loratune.transformers import TrainingArguments  # was: from transformers import TrainingArguments
from loratune.unsloth import is_bfloat16_supported  # was: from unsloth import is_bfloat16_supported

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

from loratune.transformers import TextStreamer  # was: from transformers import TextStreamer
text_streamer = TextStreamer(tokenizer)
_ = model.generate(**inputs, streamer = text_streamer, max_new_tokens = 128)

model.save_pretrained("lora_model") # Local saving
model.save_pretrained_gguf("model", tokenizer, quantization_method = "q4_k_m")
# ---- the notebook (end) ------------------------------------------------------------------------


def check(cond, what):
    if not cond:
        print("FAILED: %s" % what)
        sys.exit(1)


steps = int(os.environ["LORATUNE_MAX_STEPS"])
check(trainer_stats.global_step == steps, "global_step %d, want %d" % (trainer_stats.global_step, steps))
check(trainer_stats.training_loss > 0, "training_loss %r" % trainer_stats.training_loss)
check(len(trainer.train_dataset) == 1475, "the dataset has %d records" % len(trainer.train_dataset))
cfg = json.load(open(os.path.join(WORK, "lora_model", "adapter_config.json")))
check(cfg.get("r") == 16 and cfg.get("lora_alpha") == 32, "adapter_config %r" % cfg)
check(os.path.getsize(os.path.join(WORK, "lora_model", "adapter_model.safetensors")) > 0, "adapter weights")
ggufs = [f for f in os.listdir(os.path.join(WORK, "model")) if f.endswith(".gguf")]
check(len(ggufs) == 1, "GGUF files %r" % ggufs)
with open(os.path.join(WORK, "model", ggufs[0]), "rb") as f:
    check(f.read(4) == b"GGUF", "GGUF magic")
print("notebook_original: OK (%d steps, loss %.4f, %s)" % (steps, trainer_stats.training_loss, ggufs[0]))
