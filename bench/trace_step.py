# trace_step.py MODEL B L - where a loratune training step's GPU time goes, without nsys: a few
# steps of the real trainer (batch B x L random tokens, the notebook's LoRA, checkpointing) under
# torch.profiler, whose CUPTI tracing sees every kernel of the process, libloratune's too. Prints
# the GPU busy fraction, the gaps between kernels (by size, the largest with their neighbours) and
# per-kernel totals per step. Needs torch and a CUDA build of libloratune (LORATUNE_LIBRARY).
# Example (GPU machine): LORATUNE_LIBRARY=build-gpu/libloratune.so python3 bench/trace_step.py /tmp/q15 16 512
import sys, os, json, random, collections, time
import torch
from torch.profiler import profile, ProfilerActivity
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bindings", "python"))
import loratune as lt
model_dir, B, L = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = os.environ.get("OUT", "/tmp")
torch.zeros(1, device="cuda")
tok = lt.Tokenizer(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "assets", "qwen2-tokenizer"))
m = lt.Model(model_dir, device="cuda", max_seq_len=L)
m.add_lora()
ds = lt.Dataset(tok, format="tokens", max_seq_len=L, add_eos=False)
rng = random.Random(1)
for _ in range(B * 8):
    ds.add_tokens([rng.randrange(151643) for _ in range(L)])
tr = lt.Trainer(m, ds, batch_size=B, grad_accum=1, max_steps=8, lr=4e-5, warmup_steps=0, optimizer="adamw",
                gradient_checkpointing=True, log_every=1000000)
for _ in range(3): tr.step()
torch.cuda.synchronize()
t0 = time.time()
with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
    for _ in range(2): tr.step()
    torch.cuda.synchronize()
wall = time.time() - t0
tag = "%dx%d" % (B, L)
path = "/tmp/trace_%s.json" % tag
prof.export_chrome_trace(path)
ev = json.load(open(path))["traceEvents"]
k = sorted([e for e in ev if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")], key=lambda e: e["ts"])
busy = sum(e["dur"] for e in k)
span = k[-1]["ts"] + k[-1]["dur"] - k[0]["ts"]
gaps = []
for a, b in zip(k, k[1:]):
    g = b["ts"] - (a["ts"] + a["dur"])
    gaps.append((g, a["name"][:60], b["name"][:60]))
print("%s: wall %.1f ms for 2 steps, GPU span %.1f ms, kernels %d, busy %.1f ms (%.1f%%), gaps %.1f ms" %
      (tag, wall * 1e3, span / 1e3, len(k), busy / 1e3, 100 * busy / span, (span - busy) / 1e3))
hist = collections.Counter()
for g, _, _ in gaps:
    hist["<1us" if g < 1 else "1-2us" if g < 2 else "2-5us" if g < 5 else "5-20us" if g < 20 else "20-100us" if g < 100 else ">100us"] += g
print("gap time by size (ms):", {kk: round(v / 1e3, 2) for kk, v in hist.items()})
cnt = collections.Counter(); cg = collections.Counter()
for g, a, b in gaps:
    if g >= 3: cnt[b] += 1; cg[b] += g
print("gaps >= 3 us, by the kernel after them (count, ms):")
for n, v in cg.most_common(12): print("  %6d %7.2f  %s" % (cnt[n], v / 1e3, n))
big = sorted(gaps, reverse=True)[:10]
print("largest gaps:")
for g, a, b in big: print("  %8.1f us  %s -> %s" % (g, a, b))
tot = collections.Counter(); n = collections.Counter()
for e in k: tot[e["name"][:70]] += e["dur"]; n[e["name"][:70]] += 1
print("kernel totals (ms per step, calls per step):")
for name, v in tot.most_common(45): print("  %7.2f %5d  %s" % (v / 2e3, n[name] // 2, name))
