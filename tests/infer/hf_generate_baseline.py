"""transformers + PEFT generation speed, the peer of tests/infer/bench_generate.c: the same model
folder loaded in bf16 on the GPU, a LoRA adapter (r 16, alpha 32, all seven targets, unmerged,
eval mode), batch 1, greedy, a 32-token prompt and 128 new tokens; and the time to first token
of a 512-token prompt (median of 5). Prints one JSON object.

usage: python3 tests/infer/hf_generate_baseline.py MODEL_DIR [PROMPT_LEN NEW TTFT_LEN]
"""
import json, statistics, sys, time
import torch, transformers, peft
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model

mdir = sys.argv[1]
plen, nnew, tlen = (int(x) for x in (sys.argv[2:5] if len(sys.argv) >= 5 else (32, 128, 512)))
model = AutoModelForCausalLM.from_pretrained(mdir, torch_dtype=torch.bfloat16).cuda().eval()
cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1, bias="none", task_type="CAUSAL_LM",
                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
model = get_peft_model(model, cfg).eval()
V = model.config.vocab_size
g = torch.Generator().manual_seed(0)
ids = torch.randint(0, V - 1000, (1, max(plen, tlen)), generator=g).cuda()


def gen(n_prompt, n_new):
    torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids[:, :n_prompt], attention_mask=torch.ones_like(ids[:, :n_prompt]),
                             max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
    torch.cuda.synchronize()
    assert out.shape[1] == n_prompt + n_new
    return time.perf_counter() - t


gen(plen, 8)  # warm-up
t1 = statistics.median(gen(plen, 1) for _ in range(3))
tn = gen(plen, nnew)
ttft = statistics.median(gen(tlen, 1) for _ in range(5))
print(json.dumps(dict(prompt_len=plen, new_tokens=nnew, prefill_ms=1e3 * t1, decode_tok_s=(nnew - 1) / (tn - t1),
                      ttft_prompt_len=tlen, ttft_ms=1e3 * ttft, transformers=transformers.__version__,
                      peft=peft.__version__, torch=torch.__version__, gpu=torch.cuda.get_device_name())))
