"""Reference outputs of transformers' logits processors on fixed logits, for tests/infer.

Run where torch + transformers are installed (the GPU machine):
    python3 tests/infer/make_sampling_fixtures.py tests/infer/data/sampling_expected.json
Each case: logits (V=64 or 1000, seeded), history ids, the parameters, and the processed scores
(-inf as null) after RepetitionPenalty -> Temperature -> TopK -> TopP -> MinP, the order in
which GenerationMixin._get_logits_processor applies them.
"""
import json, math, sys
import torch, transformers
from transformers.generation.logits_process import (RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper)

g = torch.Generator().manual_seed(3407)
V = 64
cases = []
configs = [
    dict(do_sample=False, repetition_penalty=1.3),
    dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.1),
    dict(do_sample=True, temperature=1.0, top_k=5),
    dict(do_sample=True, temperature=1.0, top_p=0.5),
    dict(do_sample=True, temperature=1.5, top_p=0.95),
    dict(do_sample=True, temperature=1.0, min_p=0.1),
    dict(do_sample=True, temperature=0.5, top_k=10, min_p=0.05),
    dict(do_sample=True, temperature=1.0, top_p=0.9, min_p=0.2, repetition_penalty=0.8),
]
# a larger vocabulary, where top-p sorts only the tokens that can survive
configs += [dict(do_sample=True, temperature=0.9, top_p=0.9, V=1000),
            dict(do_sample=True, temperature=1.0, top_k=50, top_p=0.7, min_p=0.02, repetition_penalty=1.2, V=1000),
            dict(do_sample=False, repetition_penalty=1.05, V=1000)]
for i, cfg in enumerate(configs):
    V = cfg.pop("V", 64)
    logits = (torch.randn(1, V, generator=g) * 3).float()
    hist = torch.randint(0, V, (1, 12 if V == 64 else 40), generator=g)
    x = logits.clone()
    if cfg.get("repetition_penalty", 1.0) != 1.0:
        x = RepetitionPenaltyLogitsProcessor(cfg["repetition_penalty"])(hist, x)
    if cfg["do_sample"]:
        if cfg.get("temperature", 1.0) != 1.0:
            x = TemperatureLogitsWarper(cfg["temperature"])(hist, x)
        if cfg.get("top_k", 0):
            x = TopKLogitsWarper(cfg["top_k"])(hist, x)
        if cfg.get("top_p", 1.0) < 1.0:
            x = TopPLogitsWarper(cfg["top_p"])(hist, x)
        if cfg.get("min_p", 0.0):
            x = MinPLogitsWarper(cfg["min_p"])(hist, x)
    out = [None if math.isinf(v) else v for v in x[0].tolist()]
    cases.append(dict(params=cfg, logits=logits[0].tolist(), history=hist[0].tolist(), expected=out))
json.dump(dict(transformers=transformers.__version__, torch=torch.__version__, cases=cases),
          open(sys.argv[1], "w"), indent=0)
print("wrote", len(cases), "cases")
