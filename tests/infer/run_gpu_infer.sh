#!/bin/bash
# run_gpu_infer.sh - what one call on the GPU machine runs for generation (issue 6): the CUDA
# build carried from the workstation (B, default build-gpu-infer: libloratune.so, loratune,
# tests/infer/*, libs/ with the shared libraries the machine lacks) or built there, the sampling fixture from transformers (copied to $OUT and tests/infer/data/), the C
# generation tests (CPU and CUDA), the Hugging Face interop checks with --cuda, and the decode
# benchmark of a Qwen2-1.5B-shaped random model against transformers + PEFT; then a table.
# Usage (workstation, after building build-infer-cuda with -DLT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90
# and the targets loratune loratune_cli test_sampling test_generate test_generate_cuda test_generate_batch_cuda
# bench_generate):
#   tests/infer/run_gpu_infer.sh stage      # copies the binaries into build-gpu-infer (xz, ~45 MB)
# then on the GPU machine (run tool, carry ["build-gpu-infer"]):
#   tests/infer/run_gpu_infer.sh [fixtures] [tests] [interop] [bench]
# (`build` builds there instead, where the machine has the -dev packages; it lacks jansson's.)
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=${B:-build-gpu-infer}
T=$B/tests/infer
export LT_REPO_ROOT=$PWD
export LD_LIBRARY_PATH=$PWD/$B/libs:${LD_LIBRARY_PATH:-}
if [ "${1:-}" = stage ]; then
  S=${S:-build-infer-cuda}
  rm -rf $B && mkdir -p $B/tests/infer $B/libs && cp -L $S/libloratune.so $B/ && cp $S/loratune $B/ || exit 1
  for t in test_sampling test_generate test_generate_cuda test_generate_batch_cuda bench_generate; do
    cp $S/tests/infer/$t $T/ || exit 1
  done
  cp -L "$(ldconfig -p | awk '/libutf8proc.so.2 /{print $NF; exit}')" $B/libs/
  strip $B/loratune $T/* $B/libloratune.so
  xz -T2 -6 $B/loratune $B/libloratune.so $T/*   # ~19 MB each stripped, ~6.5 MB compressed (carry: 64 MiB)
  du -sh $B; exit 0
fi
for f in $B/*.xz $T/*.xz; do [ -e "$f" ] && xz -d -f "$f"; done
chmod +x $B/loratune $T/* 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for what in "$@"; do
  case $what in
    build)
      cmake -S . -B $B -DLT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release > $OUT/cmake.log 2>&1 \
        || { tail -30 $OUT/cmake.log; exit 1; }
      cmake --build $B -j16 --target loratune loratune_cli test_sampling test_generate test_generate_cuda \
        test_generate_batch_cuda bench_generate \
        > $OUT/build.log 2>&1 || { grep -E "error" $OUT/build.log | head -40; tail -20 $OUT/build.log; exit 1; }
      echo "build ok" ;;
    fixtures)
      python3 tests/infer/make_sampling_fixtures.py $OUT/sampling_expected.json 2>&1 | grep -v Warn | tail -2
      mkdir -p tests/infer/data && cp $OUT/sampling_expected.json tests/infer/data/
      $T/test_sampling 2>&1 | tail -12; echo "test_sampling rc=${PIPESTATUS[0]}" ;;
    tests)
      $B/loratune init-random --config assets/tiny-qwen2/config.json --output $B/infer-tiny-qwen2 --seed 11 \
        --dtype f32 --tokenizer assets/qwen2-tokenizer --overwrite > /dev/null
      $T/test_generate $B/infer-tiny-qwen2 assets/qwen2-tokenizer 2>&1 | tail -8; echo "test_generate rc=${PIPESTATUS[0]}"
      $T/test_generate_cuda $B/infer-tiny-qwen2 assets/qwen2-tokenizer 2>&1 | tail -12
      echo "test_generate_cuda rc=${PIPESTATUS[0]}"
      $T/test_generate_batch_cuda $B/infer-tiny-qwen2 assets/qwen2-tokenizer 2>&1 | tail -12
      echo "test_generate_batch_cuda rc=${PIPESTATUS[0]}" ;;
    interop)
      # the CPU loads with quant NONE so that it can equal fp32 transformers (it honours NF4)
      sed 's/mp.device = device$/mp.device = device; mp.quant = 1/' tests/interop/hf_interop.py > /tmp/hf_interop_q16.py
      PYTHONUNBUFFERED=1 timeout 120 python3 /tmp/hf_interop_q16.py $B/libloratune.so $B/loratune /tmp/interop --cuda \
        > $OUT/interop.log 2>&1; echo "hf_interop rc=$?"; grep -E "^\||passed" $OUT/interop.log | tail -24 ;;
    bench)
      cp assets/qwen2-1.5b/config.json /tmp/q15.json
      $B/loratune init-random --config /tmp/q15.json --output /tmp/q15 --seed 1 --dtype bf16 --overwrite > /dev/null \
        || { echo "init-random failed"; exit 1; }
      $T/bench_generate /tmp/q15 32 128 512 1,8,32 > $OUT/bench.json 2> $OUT/bench.err; echo "bench rc=$?"
      cat $OUT/bench.json; tail -8 $OUT/bench.err
      PYTHONUNBUFFERED=1 timeout 150 python3 tests/infer/hf_generate_baseline.py /tmp/q15 32 128 512 2>$OUT/hf.err \
        | tail -1 > $OUT/hf.json; echo "hf rc=$?"; cat $OUT/hf.json; grep -v Warn $OUT/hf.err | tail -3
      python3 - "$OUT" <<'PY'
import json, sys
o = sys.argv[1]
try:
    a = json.load(open(o + "/bench.json")); b = json.load(open(o + "/hf.json"))
except Exception as e:
    print("no table:", e); sys.exit(0)
print("| metric | loratune | transformers+PEFT | ratio |\n|---|---|---|---|")
print("| decode tok/s (32-token prompt, 128 new) | %.0f | %.1f | %.1fx |" % (a["decode_tok_s"], b["decode_tok_s"], a["decode_tok_s"] / b["decode_tok_s"]))
print("| TTFT ms (512-token prompt) | %.2f | %.2f | %.1fx |" % (a["ttft_ms"], b["ttft_ms"], b["ttft_ms"] / a["ttft_ms"]))
print("| backend-ops decode tok/s | %.0f | | |" % a["ops_decode_tok_s"])
if a.get("pdl_decode_tok_s"):
    print("| decode tok/s with programmatic dependent launch | %.0f | | |" % a["pdl_decode_tok_s"])
for r in a.get("batches", []):
    print("| batch %d decode tok/s (aggregate; end to end %.0f) | %.0f | | |" % (r["batch"], r["e2e_tok_s"], r["decode_tok_s"]))
PY
      ;;
  esac
done
