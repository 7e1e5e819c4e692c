#!/bin/bash
# verify_families.sh - issue 18's GPU checks of the model families. Stage here from a CUDA build
# (S=build-gpu-src, with the targets loratune loratune_cli test_cuda_ops test_cuda_graph
# test_generate_cuda test_cuda_families test_families):  bash tests/gpu/verify_families.sh stage
# then run there with carry ["build-gpu"]:  bash tests/gpu/verify_families.sh [SECTION ...]
# Sections (default: all):
#   fixtures  the CUDA family ops against the CPU and every family fixture (tests/fixtures/families)
#             trained one bf16 pass against transformers + PEFT (loss and each LoRA gradient
#             <= 2e-2; test_cuda_families), the CPU fixture test again, the Qwen2 CUDA tests
#   parity    step-0 loss and global LoRA grad norm vs transformers + PEFT on loratune's
#             dequantized NF4 weights (tests/interop/step0_peft_1p5b.py) on random Llama-3.2-1B,
#             Qwen3-1.7B and Gemma-2-2B shapes (tests/gpu/families_models.py)
#   bench     `loratune bench` on each of them, and the transformers + PEFT bf16 peer in the same call
#   qwen2     the Qwen2 figures of earlier work: verify_1p5b.sh parity, and decode tokens/s
#             (tests/infer/run_gpu_infer.sh bench, when $B holds tests/infer/bench_generate)
# Logs go to $OUT; a summary table is printed at the end.
set -u
B=${B:-build-gpu}
if [ "${1:-}" = stage ]; then
  # verify_all.sh's staging, plus this script's test binaries (from a CUDA build S, default build-gpu-src)
  S=${S:-build-gpu-src} bash tests/gpu/verify_all.sh stage || exit 1
  cp ${S:-build-gpu-src}/tests/cuda/test_cuda_families ${S:-build-gpu-src}/tests/model_io/test_families $B/ || exit 1
  strip $B/test_cuda_families $B/test_families; du -sh $B; exit 0
fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/$B:$PWD/$B/libs:${LD_LIBRARY_PATH:-} LT_REPO_ROOT=$PWD PYTHONUNBUFFERED=1
export LORATUNE_LIBRARY=$PWD/$B/libloratune.so LORATUNE_CLI=$PWD/$B/loratune PYTHONPATH=$PWD/bindings/python
SECTIONS=${*:-fixtures parity bench qwen2}
has() { case " $SECTIONS " in *" $1 "*) return 0;; esac; return 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
M=/tmp/fam; mkdir -p $M
MODELS=${MODELS:-llama32_1b qwen3_1p7b gemma2_2b}
sum=()
t() { date +%s; }
if has fixtures; then
  s=$(t); rc=0
  for x in test_cuda_families test_families test_cuda_ops test_cuda_graph test_generate_cuda; do
    [ -x $B/$x ] || { echo "$x: not staged" >> $OUT/fixtures.log; rc=1; continue; }
    args=()
    if [ $x = test_generate_cuda ]; then  # its model: a tiny random Qwen2 made here, with the bundled tokenizer
      $B/loratune init-random --config assets/tiny-qwen2/config.json --output $M/tq --seed 11 --overwrite > /dev/null 2>&1
      args=($M/tq assets/qwen2-tokenizer)
    fi
    timeout 300 $B/$x "${args[@]}" >> $OUT/fixtures.log 2>&1; r=$?; [ $r = 0 ] || rc=$r
    echo "Test $x rc=$r" >> $OUT/fixtures.log
  done
  sum+=("fixtures rc=$rc $(($(t)-s))s")
  while read -r l; do sum+=("    $l"); done < <(grep -E "CUDA bf16 loss|not on CUDA|families ran|attention_opt|^Test " $OUT/fixtures.log)
fi
if has parity || has bench; then
  timeout 600 python3 tests/gpu/families_models.py $M $MODELS > $OUT/models.log 2>&1 || { echo "model creation failed"; tail -5 $OUT/models.log; }
fi
if has parity; then
  for m in $MODELS; do
    s=$(t); timeout 300 python3 tests/interop/step0_peft_1p5b.py $M/$m $M/w_$m --tokenizer $M/$m > $OUT/step0_$m.log 2>&1; rc=$?
    sum+=("step-0 vs PEFT $m rc=$rc $(($(t)-s))s: $(tail -1 $OUT/step0_$m.log)")
  done
fi
if has bench; then
  for m in $MODELS; do
    s=$(t); timeout 400 $B/loratune bench --model $M/$m --tokenizer $M/$m --json $OUT/bench_$m.json > $OUT/bench_$m.log 2>&1; rc=$?
    timeout 600 python3 tests/gpu/families_models.py --peer $OUT/peer_$m.json $M/$m > $OUT/peer_$m.log 2>&1
    sum+=("bench $m rc=$rc $(($(t)-s))s")
    if [ -f $OUT/bench_$m.json ] && [ -f $OUT/peer_$m.json ]; then
      while read -r l; do sum+=("    $l"); done < <(python3 - "$OUT/bench_$m.json" "$OUT/peer_$m.json" <<'PY'
import json, sys
b = {r["shape"]: r for r in json.load(open(sys.argv[1]))}
p = {"%dx%d" % (r["bs"], r["seq"]): r for r in json.load(open(sys.argv[2]))}
for k, r in b.items():
    q = p.get(k)
    print("%-8s loratune %8.0f tok/s  peft %8s  %s  peak %.2f GiB" % (k, r["tok_per_s"], "%.0f" % q["tok_per_s"] if q else "-",
          "%.2fx" % (r["tok_per_s"] / q["tok_per_s"]) if q else "-", r["peak_gib"]))
PY
)
    else
      sum+=("    $(tail -2 $OUT/bench_$m.log | tr '\n' ' ')")
    fi
  done
fi
if has qwen2; then
  s=$(t); bash tests/gpu/verify_1p5b.sh parity > $OUT/qwen2_parity.log 2>&1; rc=$?
  sum+=("qwen2 1.5B parity (verify_1p5b.sh parity) rc=$rc $(($(t)-s))s: $(grep -E 'step-0' $OUT/qwen2_parity.log | tail -1)")
  if [ -x $B/tests/infer/bench_generate ]; then
    # decode tokens/s of the Qwen2-1.5B shape (compare with docs/STATUS.md's figure, within 3%)
    B=$B OUT=$OUT/decode bash tests/infer/run_gpu_infer.sh bench > $OUT/decode.log 2>&1
    sum+=("qwen2 decode: $(grep -iE 'tokens/s|tok/s' $OUT/decode.log | tail -2 | tr '\n' ' ')")
  fi
fi
echo
for s in "${sum[@]}"; do echo "$s"; done
