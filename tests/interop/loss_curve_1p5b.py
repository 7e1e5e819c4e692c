"""Issue 5 (GPU machine): loss curves of the notebook's recipe, loratune against transformers +
PEFT, and loratune's fp16 path against its bf16 path.

Recipe (the notebook's): LoRA r16 alpha32 dropout 0.1 on q,k,v,o,gate,up,down; batch 2 x
accumulation 8; STEPS steps; lr LR, warmup 50, cosine; 8-bit AdamW (bitsandbytes; torch AdamW on
both sides when bitsandbytes is not importable, said in the output); weight decay 0.01; max grad
norm 1.0; seed 3407; max_seq_len 2048; assets/ruozhiba through the alpaca-zh template + EOS.

  loratune:  CUDA, NF4 base, compute bf16 (lt_bf16) or f16 (lt_fp16: forced although bf16 exists),
             starting from the adapter WORK/a0 (written by step0_peft_1p5b.py, or here when missing),
             with dropout 0.1;
  PEFT:      transformers loads WORK/deq (loratune's dequantized NF4 base, bf16), PEFT loads
             WORK/a0 (fp32 LoRA weights), dropout 0.1, and trains on the very micro-batches
             loratune's trainer packs (ids and labels from loratune's dataset, loratune's data
             order via lt_order.py), the same loss (sum of shifted CE / the window's label count).
Dropout masks differ (loratune's Philox vs torch's generator): the curves match in trend, not
bit for bit. Writes OUT/curve_<tag>.json and OUT/loss_curve_1p5b_<tag>.png (+ fp16 figure).

PEFT runs each optimizer step as ONE forward/backward over the window's 16 records (right-padded
rows): the loss is a sum over records divided by the window's label count, so splitting it into
8 micro-batches gives the same gradient and only adds 8x the Python overhead (which made a
100-step run take ~220 s on an H200). Runs already in OUT/curve_<tag>.json are kept (a later call
with --runs peft adds PEFT beside earlier loratune curves); the json is rewritten every 10 PEFT
steps, so a run cut short keeps its first steps. --plot-only redraws from the json.

usage: python3 tests/interop/loss_curve_1p5b.py MODEL_DIR WORK OUT --lr 4e-5 [--steps 100]
           [--runs lt_bf16,lt_fp16,peft] [--save-adapter DIR] [--plot-only]
"""
import argparse, json, math, os, shutil, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lt_order import micro_batches, padded_rows
PLOT_ONLY = "--plot-only" in sys.argv
try:
    import loratune as lt
    if not PLOT_ONLY:
        import torch
        from transformers import Qwen2ForCausalLM, get_cosine_schedule_with_warmup
        from peft import PeftModel
except ImportError as e:
    print("SKIP:", e); sys.exit(77)

ap = argparse.ArgumentParser()
ap.add_argument("model"); ap.add_argument("work"); ap.add_argument("out")
ap.add_argument("--lr", type=float, default=4e-5)
ap.add_argument("--steps", type=int, default=100)
ap.add_argument("--warmup", type=int, default=50)
ap.add_argument("--runs", default="lt_bf16,lt_fp16,peft", help="of lt_bf16, lt_fp16, peft, peft_fp32")
ap.add_argument("--device", default="cuda")
ap.add_argument("--plot-only", action="store_true")
ap.add_argument("--save-adapter", default=None, help="where loratune's bf16 adapter goes after training")
ap.add_argument("--data", default=os.path.join(os.environ.get("LT_REPO_ROOT", "."), "assets/ruozhiba/ruozhiba_qa.json"))
ap.add_argument("--tokenizer", default=os.path.join(os.environ.get("LT_REPO_ROOT", "."), "assets/qwen2-tokenizer"))
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)
runs = a.runs.split(",")
BS, ACC, SEED, WD = 2, 8, 3407, 0.01
t0 = time.time()
tag = "lr%.0e" % a.lr
jpath = os.path.join(a.out, f"curve_{tag}.json")
old = json.load(open(jpath)) if os.path.exists(jpath) else None
try:
    import bitsandbytes as bnb
    have_bnb = a.device == "cuda"
except Exception as e:  # not installed, or no CUDA build of it
    have_bnb = False
    if not PLOT_ONLY:
        print("bitsandbytes not usable (%s): torch AdamW on both sides" % e)
optim_name = "adamw_8bit" if have_bnb else "adamw_torch"
curves = {}
if old and (old["optimizer"] == optim_name or PLOT_ONLY) and old["steps"] == a.steps:
    curves = old["curves"]
    optim_name = old["optimizer"]
    extra = {k: v for k, v in old.items() if k not in ("lr", "steps", "optimizer", "curves")}
else:
    extra = {}


def save_json():
    json.dump(dict(lr=a.lr, steps=a.steps, optimizer=optim_name, curves=curves, **extra), open(jpath, "w"), indent=1)


a0 = os.path.join(a.work, "a0")
if not PLOT_ONLY:
    tok = lt.Tokenizer(a.tokenizer)
    ds = lt.Dataset(tok, a.data, max_seq_len=2048, seed=SEED)
if not PLOT_ONLY and not (os.path.isdir(a0) and os.path.isdir(os.path.join(a.work, "deq"))):
    # what step0_peft_1p5b.py writes: loratune's fresh adapter and its dequantized NF4 base
    m = lt.Model(a.model, device=a.device, quant="nf4", dtype="bf16" if a.device == "cuda" else "auto")
    m.add_lora(r=16, alpha=32, dropout=0.0, targets="all", seed=SEED)
    m.save_adapter(a0, overwrite=True)
    lt.export(m, os.path.join(a.work, "deq"), format="merged", quant="bf16", merge_base="dequantized",
              tokenizer_dir=a.tokenizer, overwrite=True)
    m.close()
    print(f"[{time.time() - t0:.0f}s] adapter and dequantized base written", flush=True)
# the initial adapter with the notebook's dropout, for PEFT (loratune reads the same file)
a0d = os.path.join(a.work, "a0_dropout")
if not PLOT_ONLY:
    os.makedirs(a0d, exist_ok=True)
    shutil.copy(os.path.join(a0, "adapter_model.safetensors"), a0d)
    cfg = json.load(open(os.path.join(a0, "adapter_config.json")))
    cfg["lora_dropout"] = 0.1
    json.dump(cfg, open(os.path.join(a0d, "adapter_config.json"), "w"), indent=2)


def run_loratune(dtype):
    model = lt.Model(a.model, device=a.device, quant="nf4", dtype=dtype if a.device == "cuda" else "auto")
    model.load_adapter(a0d)
    info = model.info()
    losses, norms = [], []
    t = time.time()
    with lt.Trainer(model, ds, batch_size=BS, grad_accum=ACC, max_steps=a.steps, lr=a.lr, warmup_steps=a.warmup,
                    scheduler="cosine", optimizer=optim_name, weight_decay=WD, max_grad_norm=1.0, seed=SEED,
                    log_every=0) as tr:
        for m in tr:
            losses.append(m.loss); norms.append(m.grad_norm)
    dt = time.time() - t
    if dtype == "bf16" and a.save_adapter:
        model.save_adapter(a.save_adapter, overwrite=True)
    model.close()
    print(f"[{time.time() - t0:.0f}s] loratune {dtype} (compute_dtype {info.compute_dtype}): {len(losses)} steps in "
          f"{dt:.1f}s, loss {losses[0]:.4f} -> {losses[-1]:.4f}", flush=True)
    return {"loss": losses, "grad_norm": norms, "seconds": dt}


def run_peft(fp32=False):
    """PEFT on the dequantized weights in bf16 (as the notebook runs it), or with fp32=True in
    fp32 on the GPU too (no TF32): the reference without 16-bit rounding, to tell precision
    effects from errors"""
    tdev = "cuda" if a.device == "cuda" else "cpu"
    name = "peft_fp32" if fp32 else "peft"
    torch.manual_seed(SEED)
    if fp32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    base = Qwen2ForCausalLM.from_pretrained(os.path.join(a.work, "deq"),
                                            dtype=torch.bfloat16 if tdev == "cuda" and not fp32 else torch.float32,
                                            attn_implementation="sdpa").to(tdev)
    pm = PeftModel.from_pretrained(base, a0d, is_trainable=True)
    pm.train()
    params = [p for n, p in pm.named_parameters() if p.requires_grad]
    if have_bnb:
        opt = bnb.optim.AdamW8bit(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=WD)
    else:
        opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=WD)
    sched = get_cosine_schedule_with_warmup(opt, a.warmup, a.steps)
    mbs = micro_batches(len(ds), BS, ACC * a.steps, SEED)
    losses, norms = [], []
    curves[name] = {"loss": losses, "grad_norm": norms, "seconds": None}
    t = time.time()
    for s in range(a.steps):
        window = [[ds[i] for i in mb] for mb in mbs[s * ACC:(s + 1) * ACC]]
        n_items = sum(sum(1 for x in lab[1:] if x != -100) for mb in window for _, lab in mb)
        loss_sum = 0.0
        for mb in [sum(window, [])]:  # the whole window at once (see the top of the file)
            ids, att, lab = padded_rows(mb, tdev)
            logits = pm(input_ids=ids, attention_mask=att).logits.float()
            ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                   lab[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
            (ce / n_items).backward()
            loss_sum += float(ce.detach())
            del logits, ce
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, 1.0)))
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        losses.append(loss_sum / n_items)
        if (s + 1) % 10 == 0:
            save_json()
        if (s + 1) % 25 == 0:
            print(f"  PEFT step {s + 1}: loss {losses[-1]:.4f} ({time.time() - t:.1f}s)", flush=True)
    dt = time.time() - t
    print(f"[{time.time() - t0:.0f}s] PEFT {'fp32' if fp32 else 'bf16'} ({optim_name}): {len(losses)} steps in {dt:.1f}s, "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f}", flush=True)
    return {"loss": losses, "grad_norm": norms, "seconds": dt}


for r in ([] if PLOT_ONLY else runs):  # the json after each run: a timeout keeps the earlier ones
    curves[r] = (run_loratune("bf16") if r == "lt_bf16" else run_loratune("f16") if r == "lt_fp16" else
                 run_peft(fp32=True) if r == "peft_fp32" else run_peft())
    save_json()


summary = []
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
    print("matplotlib is not importable: no figures")
# "peft_logged": {step: loss} PEFT losses read from a log where the run itself was cut short
logged = {int(k): v for k, v in extra.get("peft_logged", {}).items()}
pairs = [("lt_bf16", "peft", "loratune (CUDA, NF4, bf16)", "transformers + PEFT (bf16, dequantized NF4)",
          f"loss_curve_1p5b_{tag}.png"),
         ("lt_fp16", "lt_bf16", "loratune fp16 (forced)", "loratune bf16", f"fp16_vs_bf16_1p5b_{tag}.png"),
         ("lt_bf16", "peft_fp32", "loratune (CUDA, NF4, bf16)", "transformers + PEFT in fp32 (dequantized NF4)",
          f"loss_curve_1p5b_vs_fp32_{tag}.png"),
         ("peft", "peft_fp32", "transformers + PEFT bf16", "transformers + PEFT in fp32 (dequantized NF4)",
          f"peft_bf16_vs_fp32_{tag}.png")]
for x, y, lx, ly, png in pairs:
    if x not in curves or (y not in curves and not (y == "peft" and logged)):
        continue
    cx = curves[x]["loss"]
    cy = curves[y]["loss"] if y in curves else []
    pts = sorted((k, v) for k, v in logged.items() if k <= len(cx)) if y == "peft" and not cy else []
    at = list(range(1, min(len(cx), len(cy)) + 1)) if cy else [k for k, _ in pts]  # compared steps (1-based)
    ys = cy if cy else [None] * (at[-1] if at else 0)
    for k, v in pts:
        ys[k - 1] = v
    diffs = [cx[k - 1] - ys[k - 1] for k in at]
    d = max(abs(v) for v in diffs)
    summary.append(f"{x} vs {y} ({tag}, {optim_name}): max |loss diff| over {len(at)} "
                   f"{'steps' if cy else 'logged steps ' + str(at)} {d:.4g}; step {at[0]}: {cx[at[0] - 1]:.4f}/"
                   f"{ys[at[0] - 1]:.4f}, step {at[-1]}: {cx[at[-1] - 1]:.4f}/{ys[at[-1] - 1]:.4f}")
    if plt is None:
        continue
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    if cy:
        ax.plot(range(1, len(cy) + 1), cy, label=ly + ("" if len(cy) == len(cx) else f" (first {len(cy)} steps)"),
                lw=2.2, color="tab:orange")
        bx.plot(at, diffs, color="tab:red", lw=1)
    else:
        ax.plot([k for k, _ in pts], [v for _, v in pts], "o", ms=8, color="tab:orange",
                label=ly + ": losses logged at steps " + ", ".join(str(k) for k, _ in pts) + " (run cut short)")
        bx.plot(at, diffs, "o", color="tab:red")
    ax.plot(range(1, len(cx) + 1), cx, label=lx, lw=1.2, color="tab:blue")
    ax.set_ylabel("training loss (per optimizer step)")
    ax.set_title(f"Qwen2-1.5B-shaped random model, ruozhiba (alpaca-zh + EOS), LoRA r16/a32 dropout 0.1 all 7 "
                 f"projections\nbatch 2 x accum 8, lr {a.lr:g} cosine, warmup {a.warmup}, {optim_name}, wd 0.01, "
                 f"seed 3407", fontsize=9)
    ax.legend(fontsize=8); ax.grid(alpha=.3)
    bx.axhline(0, color="k", lw=.5)
    bx.set_ylabel(f"{x} - {y}", fontsize=8); bx.set_xlabel("optimizer step"); bx.grid(alpha=.3)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, png), dpi=110)
    plt.close(fig)
for s in summary:
    print(s)
