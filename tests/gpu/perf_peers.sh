#!/bin/bash
# perf_peers.sh - one GPU call (<= 9 minutes on an H100): loratune, transformers + PEFT and Unsloth
# side by side on the same card, on the random Qwen2-1.5B shape, then the seed notebook's job on
# the bundled ruozhiba data; one table at the end.
#   fixed shapes 2x512, 2x2048, 16x512 (gradient checkpointing, r=16, all seven projections,
#   dropout 0.1): tokens/s and peak GiB of
#     loratune   `loratune bench` (NF4 base; median step after 3 warm-up)
#     PEFT       bench/hf_peft_lora_baseline.py's run() (bf16 base, AdamW; median of 8 after 3)
#     Unsloth    peer_run.sh unsloth_d01 (QLoRA, AdamW8bit, its gradient checkpointing)
#   notebook recipe (batch 2, accumulation 8, max 2048, dropout 0.1, adamw_8bit, lr 4e-5,
#   warm-up 50, cosine: every one a `loratune train` default):
#     loratune   `loratune train` NB_STEPS steps (default 100); tokens/s over steps > NB_WARM
#                (default 10) from log.jsonl (each step's tokens and seconds); once with the
#                token-budget buckets (--bucket-passes) and (PERF_AB=1) once with --no-bucket-passes;
#                peak GiB from `loratune bench --data` (the same recipe, 20 steps)
#     Unsloth    peer_notebook.py (FastLanguageModel + TRL SFTTrainer, the notebook's arguments)
#                for UNS_NB_STEPS steps (default 30; the seed notebook runs 100: fewer to fit
#                the call): its steady seconds per step over steps 21..N; tokens/s = the data's
#                mean tokens per record (loratune's tokenization of the same template and
#                tokenizer) x 16 records per step / that, an estimate: the SFTTrainer's own
#                order of records is not the one loratune draws
#
# Device, from the repository root, with carry [$B, ".peer-kit"]:
#   B=build-perf bash tests/gpu/perf_peers.sh
# $B: a CUDA build (-DLT_CUDA=ON) staged as tests/gpu/compare_builds.sh does: loratune,
# libloratune.so (each may be xz-compressed) and libs/ (libutf8proc.so.2 ...). .peer-kit/ (git-
# ignored): site.tar.xz made with ../shared/bench/peers/peer_build_site.py from the pinned wheels,
# and peers/ (a copy of ../shared/bench/peers: ../shared does not travel to the device).
# Dry run on a machine without a GPU (the CPU build, a tiny random model, 3 notebook steps; the
# GPU parts are reported as skipped):  PERF_DRY=1 B=build-h4 bash tests/gpu/perf_peers.sh
# Writes into OUT (default $OUT of the device call, else /tmp/perf_peers); prints the table last.
set -u
B=${B:?set B to the staged build folder (loratune, libloratune.so, libs/)}
B=$(cd "$B" && pwd) || exit 2
KIT=${KIT:-.peer-kit}
OUT=${OUT:-/tmp/perf_peers}
DRY=${PERF_DRY:-0}
BUDGET=${PERF_BUDGET_S:-535}
NB_STEPS=${NB_STEPS:-100}
NB_WARM=${NB_WARM:-10}
UNS_NB_STEPS=${UNS_NB_STEPS:-30}
AB=${PERF_AB:-1}
PY=${PYTHON:-python3}
DATA=$PWD/assets/ruozhiba/ruozhiba_qa.json
TOKDIR=$PWD/assets/qwen2-tokenizer
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
left() { echo $(( BUDGET - SECONDS )); }
# cap SECONDS: at most the given seconds and what the budget leaves minus a reserve
cap() { local l=$(( $(left) - ${2:-0} )); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }
note() { echo "== [$(( SECONDS ))s] $*"; }
skip() { echo "$1" > "$OUT/$2.skipped"; note "SKIPPED $2: $1"; }

# --- the staged build --------------------------------------------------------------------------
for f in "$B"/*.xz "$B"/libs/*.xz; do [ -f "$f" ] && xz -d -f "$f"; done
chmod +x "$B/loratune" 2>/dev/null
# a CUDA build links libnccl.so.2: the system's (ldconfig) or the pip wheel torch brings
NCCL=$(ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2 /{print $NF; exit}')
if [ -n "$NCCL" ]; then
  NCCL=$(dirname "$NCCL")
else
  NCCL=$("$PY" -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)
fi
export LD_LIBRARY_PATH=$B:$B/libs${NCCL:+:$NCCL}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
LT=$B/loratune
[ -x "$LT" ] || { echo "perf_peers: $LT is missing" >&2; exit 2; }
"$LT" --version > "$OUT/version.txt" 2>&1 || { echo "perf_peers: $LT does not run:" >&2; cat "$OUT/version.txt" >&2; exit 2; }
if [ "$DRY" = 1 ]; then
  GPU="dry run (no GPU): $(uname -m) CPU"
else
  GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)
fi
note "perf_peers on $GPU; build $B; budget ${BUDGET}s"
echo "$GPU" > "$OUT/gpu.txt"

# the data's mean tokens per record (alpaca-zh + EOS, the Qwen2 tokenizer): the Unsloth estimate
"$LT" dataset --data "$DATA" --tokenizer "$TOKDIR" --show 0 > "$OUT/dataset.txt" 2>&1
sed -n 's/.*length .*mean \([0-9.]*\).*/\1/p' "$OUT/dataset.txt" > "$OUT/mean_len.txt"

# --- loratune: fixed shapes + the notebook recipe's peak (bench), then `train` ------------------
MODEL=/tmp/loratune-bench-qwen2-1.5b
if [ "$DRY" = 1 ]; then
  MODEL=/tmp/perf_peers_tiny
  "$LT" init-random --config assets/tiny-qwen2/config.json --output "$MODEL" --seed 11 --tokenizer "$TOKDIR" \
    --overwrite > "$OUT/init.log" 2>&1 || { echo "init-random failed" >&2; cat "$OUT/init.log" >&2; exit 1; }
  NB_STEPS=3 NB_WARM=1
  skip "dry run: loratune bench needs a GPU" lt_bench
else
  note "loratune bench"
  timeout -k 10 "$(cap 200 300)" "$LT" bench --shapes 2x512,2x2048,16x512 --steps 8 --warmup 3 --model "$MODEL" \
    --tokenizer "$TOKDIR" --data "$DATA" --data-steps 20 --json "$OUT/lt_bench.json" > "$OUT/lt_bench.log" 2>&1
  note "loratune bench exit $?"; tail -8 "$OUT/lt_bench.log"
fi
nb_train() {  # name [flags]: loratune train with the notebook's arguments (every one a default)
  local name=$1; shift
  local dev=cuda; [ "$DRY" = 1 ] && dev=cpu
  note "loratune train $name: $NB_STEPS steps $*"
  timeout -k 10 "$(cap 150 200)" "$LT" train --model "$MODEL" --data "$DATA" --output "$OUT/$name" --overwrite \
    --device "$dev" --batch-size 2 --grad-accum 8 --max-seq-len 2048 --lora-dropout 0.1 --optim adamw_8bit \
    --max-steps "$NB_STEPS" --log-every 1 --gen-instruction "" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  note "loratune train $name exit $rc"; tail -3 "$OUT/$name.log"
  [ $rc = 0 ] && cp "$OUT/$name/log.jsonl" "$OUT/$name.jsonl"
}
if [ "$(left)" -gt 250 ]; then nb_train lt_nb --bucket-passes; else skip "budget" lt_nb; fi
if [ "$AB" = 1 ] && [ "$(left)" -gt 250 ]; then nb_train lt_nb_nobucket --no-bucket-passes; fi

# --- transformers + PEFT (bf16 base), the repository's script -----------------------------------
if [ "$DRY" = 1 ]; then
  skip "dry run: the PEFT baseline needs a GPU" peft
elif [ "$(left)" -gt 230 ]; then
  note "transformers + PEFT"
  timeout -k 10 "$(cap 120 200)" "$PY" - "$OUT/peft.json" > "$OUT/peft.log" 2>&1 <<'EOF'
import json, sys
sys.path.insert(0, "bench")
import hf_peft_lora_baseline as h
res = []
for seq, bs in [(512, 2), (2048, 2), (512, 16)]:
    try:
        r = h.run(seq, bs, True)
    except Exception as e:
        r = dict(seq=seq, bs=bs, ckpt=True, error=repr(e)[:300])
    res.append(r)
    print(json.dumps(r), flush=True)
    json.dump(res, open(sys.argv[1], "w"), indent=1)
EOF
  note "PEFT exit $?"; cat "$OUT/peft.log" | tail -4
else
  skip "budget" peft
fi

# --- Unsloth: fixed shapes (peer_run.sh unsloth_d01), then the notebook job ---------------------
SITE=/tmp/site
export PEER_TOKENIZER_DIR=$TOKDIR
if [ "$DRY" = 1 ]; then
  [ -f "$KIT/site.tar.xz" ] && [ -f "$KIT/peers/peer_run.sh" ] && bash -n "$KIT/peers/peer_run.sh" &&
    echo "peer kit: $(du -h "$KIT/site.tar.xz" | cut -f1) site.tar.xz, peers/ present" || echo "peer kit: missing or broken in $KIT"
  skip "dry run: Unsloth needs a GPU" unsloth
  skip "dry run: Unsloth needs a GPU" unsloth_nb
elif [ ! -f "$KIT/site.tar.xz" ] || [ ! -f "$KIT/peers/peer_run.sh" ]; then
  skip "no peer kit in $KIT (site.tar.xz, peers/): carry .peer-kit" unsloth
  skip "no peer kit in $KIT" unsloth_nb
else
  if [ "$(left)" -gt 200 ]; then
    note "Unsloth shapes (peer_run.sh unsloth_d01)"
    # leave ~150 s of the budget to the notebook job
    PEER_TAR=$PWD/$KIT/site.tar.xz PEER_SITE=$SITE PEER_BUDGET_S=$(( $(left) - 150 )) PEER_RUN_TIMEOUT=240 \
      timeout -k 10 "$(cap 400 140)" bash "$KIT/peers/peer_run.sh" "$OUT/peer" unsloth_d01 > "$OUT/unsloth.log" 2>&1
    note "Unsloth shapes exit $?"; tail -6 "$OUT/unsloth.log"
  else
    skip "budget" unsloth
  fi
  if [ -d /tmp/peer_qwen2_1p5b_random ] && [ -f "$SITE/.peer_unpacked" ] && [ "$(left)" -gt 60 ]; then
    note "Unsloth notebook job: $UNS_NB_STEPS steps"
    ( cd /tmp && PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
      HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 UNSLOTH_DISABLE_STATISTICS=1 \
      TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled PYTHONUNBUFFERED=1 \
      timeout -k 10 "$(cap 300 8)" "$PY" "$OLDPWD/$KIT/peers/peer_notebook.py" /tmp/peer_qwen2_1p5b_random "$DATA" \
        "$OUT/unsloth_nb.json" "$UNS_NB_STEPS" ) > "$OUT/unsloth_nb.log" 2>&1
    note "Unsloth notebook exit $?"; tail -2 "$OUT/unsloth_nb.log" | cut -c1-400
  else
    skip "no Unsloth model/site, or budget ($(left) s left)" unsloth_nb
  fi
fi

# --- the table ------------------------------------------------------------------------------------
"$PY" - "$OUT" "$NB_WARM" "$UNS_NB_STEPS" <<'EOF'
import glob, json, os, sys
out, warm, uns_steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception:
        return None
def skipped(name):
    p = os.path.join(out, name + ".skipped")
    return open(p).read().strip() if os.path.exists(p) else None
gpu = open(os.path.join(out, "gpu.txt")).read().strip()
shapes = ["2x512", "2x2048", "16x512"]
lt, peft, uns = {}, {}, {}
for r in load("lt_bench.json") or []:
    if r.get("ok"):
        lt[r["shape"]] = (r.get("tok_per_s"), r.get("peak_gib"))
for r in load("peft.json") or []:
    if r.get("tok_per_s"):
        peft["%dx%d" % (r["bs"], r["seq"])] = (r["tok_per_s"], r.get("peak_gib"))
for f in glob.glob(os.path.join(out, "peer", "peer_unsloth_d01*.json")):
    for r in json.load(open(f)):
        if r.get("tok_per_s"):
            uns["%dx%d" % (r["bs"], r["seq"])] = (r["tok_per_s"], r.get("peak_gib"))
def f_tok(v): return "%9.0f" % v[0] if v and v[0] else "%9s" % "-"
def f_gib(v): return "%6.2f" % v[1] if v and v[1] is not None else "%6s" % "-"
def ratio(a, b): return "%6.1fx" % (a[0] / b[0]) if a and b and a[0] and b[0] else "%7s" % "-"

def lt_train(name):
    """tokens/s of a loratune train log.jsonl over steps > warm (each step's tokens / its seconds)"""
    try:
        rows = [json.loads(l) for l in open(os.path.join(out, name + ".jsonl")) if l.strip()]
    except Exception:
        return None
    rows = [r for r in rows if "tokens_per_s" in r and r.get("tokens_per_s")]
    steady = [r for r in rows if r["step"] > warm]
    if not steady:
        return None
    tok = sum(r["tokens"] for r in steady)
    sec = sum(r["tokens"] / r["tokens_per_s"] for r in steady)
    all_tok = sum(r["tokens"] for r in rows)
    all_sec = sum(r["tokens"] / r["tokens_per_s"] for r in rows)
    return dict(tok_s=tok / sec, steps=len(rows), steady_steps=len(steady), tok_per_step=tok / len(steady),
                all_tok_s=all_tok / all_sec, last_loss=rows[-1]["loss"])
nb = lt_train("lt_nb")
nb0 = lt_train("lt_nb_nobucket")
nb_peak = next((r.get("peak_gib") for r in load("lt_bench.json") or [] if r.get("ok") and "data" in r.get("shape", "")),
               None)
nb_bench = next((r.get("tok_per_s") for r in load("lt_bench.json") or [] if r.get("ok") and "data" in r.get("shape", "")),
                None)
u = load("unsloth_nb.json")
try:
    mean_len = float(open(os.path.join(out, "mean_len.txt")).read())
except Exception:
    mean_len = None
u_tok = None
if u and u.get("steady_s_per_step") and mean_len:
    u_tok = mean_len * 16 / u["steady_s_per_step"]

print("\n=== loratune vs transformers+PEFT vs Unsloth on %s" % gpu)
print("random Qwen2-1.5B shape, r=16 all seven projections, dropout 0.1, gradient checkpointing; "
      "peak = max allocated GiB")
print("%-8s %9s %9s %9s %7s %7s %6s %6s %6s" % ("shape", "loratune", "PEFT", "Unsloth", "lt/PEFT", "lt/Uns",
                                                  "lt GiB", "PEFT", "Uns"))
for s in shapes:
    a, b, c = lt.get(s), peft.get(s), uns.get(s)
    print("%-8s %s %s %s %s %s %s %s %s" % (s, f_tok(a), f_tok(b), f_tok(c), ratio(a, b), ratio(a, c), f_gib(a),
                                            f_gib(b), f_gib(c)))
print("\nnotebook recipe on assets/ruozhiba (batch 2 x accumulation 8, max 2048, dropout 0.1, adamw_8bit):")
if nb:
    print("  loratune train, buckets:     %9.0f tok/s over steps %d..%d (%.0f tokens/step; all %d steps incl. "
          "warm-up: %.0f tok/s; last loss %.4f)" % (nb["tok_s"], warm + 1, nb["steps"], nb["tok_per_step"], nb["steps"],
                                                    nb["all_tok_s"], nb["last_loss"]))
else:
    print("  loratune train, buckets:     -", skipped("lt_nb") or "(failed: see lt_nb.log)")
if nb0:
    print("  loratune train, no buckets:  %9.0f tok/s over steps %d..%d (all steps: %.0f tok/s)%s" % (
        nb0["tok_s"], warm + 1, nb0["steps"], nb0["all_tok_s"],
        "; buckets gain %.2fx" % (nb["tok_s"] / nb0["tok_s"]) if nb else ""))
if nb_bench:
    print("  loratune bench --data:       %9.0f tok/s (20 steps), peak %s GiB" % (
        nb_bench, "%.2f" % nb_peak if nb_peak is not None else "-"))
if u_tok:
    print("  Unsloth SFTTrainer:          %9.0f tok/s (estimate: %.1f mean tokens/record x 16 / %.3f s per step over "
          "steps 21..%d of %d, not 100), peak %.2f GiB" % (u_tok, mean_len, u["steady_s_per_step"], u["steps"],
                                                         u["steps"], u["peak_gib"]))
    if nb:
        print("  loratune / Unsloth:          %9.1fx" % (nb["tok_s"] / u_tok))
else:
    print("  Unsloth SFTTrainer:          -", skipped("unsloth_nb") or "(failed: see unsloth_nb.log)")
for name in ("lt_bench", "peft", "unsloth"):
    if skipped(name):
        print("  (%s skipped: %s)" % (name, skipped(name)))
EOF
note "perf_peers done in ${SECONDS} s; files in $OUT"
