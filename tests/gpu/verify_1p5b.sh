#!/bin/bash
# verify_1p5b.sh - closing checks on a Qwen2-1.5B-shaped random model on a GPU machine (issues 5
# and 7). Stage as verify_all.sh does (S=build-gpu-src bash tests/gpu/verify_all.sh stage), then
# run there with carry ["build-gpu"]:  bash tests/gpu/verify_1p5b.sh [SECTION ...]
# Sections (default: parity curves merged):
#   parity    step-0 loss and LoRA grad norm vs transformers + PEFT on loratune's dequantized
#             NF4 weights (tests/interop/step0_peft_1p5b.py; writes /tmp/p15/{a0,deq})
#   curves    100 notebook steps on ruozhiba: loratune bf16 vs PEFT, loratune fp16 vs bf16, at
#             lr 4e-5 (the notebook's) and 2e-4 (tests/interop/loss_curve_1p5b.py; png in $OUT)
#   merged    merged bf16 export in transformers vs loratune's unmerged logits, with the adapter
#             trained by `curves` (tests/interop/merged_bf16_1p5b.py)
#   notebook  the original notebook's code through the Python binding (CUDA, 10 steps)
# Logs and figures go to $OUT; a table of the results is printed at the end. EXTRA="--device cpu"
# CURVE_EXTRA="--steps 2 --warmup 1" make a quick smoke run of the flow on a CPU with a tiny /tmp/q15;
# CURVE_RUNS (default lt_bf16,lt_fp16,peft) picks the loss-curve runs.
set -u
B=build-gpu
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/$B:$PWD/$B/libs:${LD_LIBRARY_PATH:-} LT_REPO_ROOT=$PWD PYTHONUNBUFFERED=1
export LORATUNE_LIBRARY=$PWD/$B/libloratune.so LORATUNE_CLI=$PWD/$B/loratune PYTHONPATH=$PWD/bindings/python
SECTIONS=${*:-parity curves merged}
has() { case " $SECTIONS " in *" $1 "*) return 0;; esac; return 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
python3 -c "import bitsandbytes as b; print('bitsandbytes', b.__version__)" 2>&1 | tail -1
python3 -c "import matplotlib; print('matplotlib', matplotlib.__version__)" 2>&1 | tail -1
cp assets/qwen2-1.5b/config.json /tmp/q15.json
[ -f /tmp/q15/model.safetensors ] || \
  $B/loratune init-random --config /tmp/q15.json --output /tmp/q15 --seed 1 --tokenizer assets/qwen2-tokenizer > /dev/null 2>&1
W=/tmp/p15; mkdir -p $W
sum=()
t() { date +%s; }
if has parity; then
  s=$(t); timeout 120 python3 tests/interop/step0_peft_1p5b.py /tmp/q15 $W ${EXTRA:-} > $OUT/step0.log 2>&1; rc=$?
  sum+=("(a) step-0 vs PEFT rc=$rc $(($(t)-s))s: $(tail -1 $OUT/step0.log)")
fi
curves() { # lr timeout
  local s=$(t); timeout $2 python3 tests/interop/loss_curve_1p5b.py /tmp/q15 $W $OUT --lr $1 --runs ${CURVE_RUNS:-lt_bf16,lt_fp16,peft} ${EXTRA:-} ${CURVE_EXTRA:-} --save-adapter $W/trained_$1 \
    > $OUT/curve_$1.log 2>&1; local rc=$?
  sum+=("(b,c) curves lr $1 rc=$rc $(($(t)-s))s")
  while read -r l; do sum+=("    $l"); done < <(grep " vs " $OUT/curve_$1.log)
}
# the notebook's lr first; the merged check uses its trained adapter; lr 2e-4 (curves that move) last
has curves && curves 4e-5 ${CURVE_TIMEOUT:-190}
if has merged; then
  s=$(t); timeout 110 python3 tests/interop/merged_bf16_1p5b.py $LORATUNE_CLI /tmp/q15 /tmp/m15 $W/trained_4e-5 \
    > $OUT/merged.log 2>&1; rc=$?
  sum+=("(d) merged bf16 rc=$rc $(($(t)-s))s: $(grep 'rel' $OUT/merged.log | tail -1)")
fi
has curves && [ -z "${CURVE_NOTEBOOK_LR_ONLY:-}" ] && curves 2e-4 ${CURVE2_TIMEOUT:-150}
if has notebook; then
  mkdir -p /tmp/nb && cd /tmp/nb
  LT_TINY_MODEL=/tmp/q15 LORATUNE_DEVICE=cuda LORATUNE_MAX_STEPS=10 timeout 250 python3 $LT_REPO_ROOT/tests/bindings/notebook_original.py \
    > $OUT/notebook.log 2>&1; rc=$?
  sum+=("notebook_original on 1.5B (cuda, 10 steps) rc=$rc; files: $(ls lora_model model 2>/dev/null | tr '\n' ' ')")
  cd $LT_REPO_ROOT
fi
echo
for f in step0 merged; do [ -f $OUT/$f.log ] && { grep -E "^\||^\[|window|adapter|sequences" $OUT/$f.log; echo; }; done
for lr in 4e-5 2e-4; do [ -f $OUT/curve_$lr.log ] && grep -E "^\[|bitsandbytes" $OUT/curve_$lr.log; done
echo
for s in "${sum[@]}"; do echo "$s"; done
