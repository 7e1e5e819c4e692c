#!/bin/bash
# run_gpu_families_decode.sh - one GPU call for the fused decoder of every model family
# (cuda/decode.cu): its tests, the Qwen2-1.5B decode speed against a base build on the same
# machine, and decode tokens/s of the real-shaped Llama-3.2-1B / Qwen3-1.7B / Gemma-2-2B random
# models (fused decoder and backend-ops decode in one bench_generate run).
# Builds (workstation, -DLT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release):
#   G    (default build-h2cu): loratune, test_generate_families_cuda, test_generate_cuda,
#        test_generate_batch_cuda, bench_generate (tests/infer/ under it or beside loratune)
#   BASE (default build-dbase, optional): loratune and bench_generate of the tree before the
#        fused family decoder, for the Qwen2 decode A/B
# Stage on the workstation (a build folder is far over the 64 MiB carry; each static binary is
# ~11 MB xz-compressed, so one call carries the tests, another the benchmarks):
#   S=build-h2cu G=build-gfam tests/infer/run_gpu_families_decode.sh stage tests   (loratune + 3 tests, ~44 MB)
#   S=build-h2cu G=build-gfam tests/infer/run_gpu_families_decode.sh stage bench   (loratune + bench_generate)
#   S=<base build> G=build-dbase tests/infer/run_gpu_families_decode.sh stage base (bench_generate only)
# then on the GPU machine (run tool, carry [G, BASE]; binaries may be xz-compressed):
#   G=build-gfam tests/infer/run_gpu_families_decode.sh [tests] [qwen2ab] [families]
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
G=${G:-build-h2cu}; BASE=${BASE:-build-dbase}
export LT_REPO_ROOT=$PWD
export LD_LIBRARY_PATH=$PWD/$G:$PWD/$G/libs:${LD_LIBRARY_PATH:-}
if [ "${1:-}" = stage ]; then
  S=${S:-build-h2cu}
  case ${2:-} in
    tests) T="test_generate_families_cuda test_generate_cuda test_generate_batch_cuda"; CLI=1 ;;
    bench) T="bench_generate"; CLI=1 ;;
    base) T="bench_generate"; CLI=0 ;;
    *) echo "stage tests|bench|base"; exit 2 ;;
  esac
  rm -rf $G && mkdir -p $G/tests/infer $G/libs || exit 1
  [ $CLI = 1 ] && { cp $S/loratune $G/ || exit 1; }
  for t in $T; do cp $S/tests/infer/$t $G/tests/infer/ || exit 1; done
  cp -L "$(ldconfig -p | awk '/libutf8proc.so.2 /{print $NF; exit}')" $G/libs/
  strip $G/tests/infer/* && xz -T2 -6 $G/tests/infer/*
  [ $CLI = 1 ] && strip $G/loratune && xz -T2 -6 $G/loratune
  du -sh $G; exit 0
fi
for f in $G/*.xz $G/tests/infer/*.xz $BASE/*.xz $BASE/tests/infer/*.xz; do [ -e "$f" ] && xz -d -f "$f"; done
bin() { for p in "$1/tests/infer/$2" "$1/$2"; do [ -x "$p" ] && { echo "$p"; return; }; done; echo "$1/tests/infer/$2"; }
chmod +x $G/loratune $G/tests/infer/* $BASE/loratune $BASE/tests/infer/* 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for what in "$@"; do
  case $what in
    tests)
      timeout 300 $(bin $G test_generate_families_cuda) > $OUT/families_decode.log 2>&1; rc=$?
      grep -E "^\[|FAIL|refused|no fused|fell back" $OUT/families_decode.log | head -80
      tail -1 $OUT/families_decode.log; echo "test_generate_families_cuda rc=$rc"
      $G/loratune init-random --config assets/tiny-qwen2/config.json --output /tmp/tq --seed 11 --dtype f32 \
        --tokenizer assets/qwen2-tokenizer --overwrite > /dev/null 2>&1
      for t in test_generate_cuda test_generate_batch_cuda; do
        timeout 200 $(bin $G $t) /tmp/tq assets/qwen2-tokenizer > $OUT/$t.log 2>&1; rc=$?
        tail -4 $OUT/$t.log; echo "$t rc=$rc"
      done ;;
    qwen2ab)
      # the Qwen2 decode figure before and after, alternating on the same warm machine
      cp assets/qwen2-1.5b/config.json /tmp/q15.json
      $G/loratune init-random --config /tmp/q15.json --output /tmp/q15 --seed 1 --dtype bf16 --overwrite > /dev/null \
        || { echo "init-random failed"; exit 1; }
      for r in 1 2; do
        for b in $BASE $G; do
          [ -x "$(bin $b bench_generate)" ] || { echo "$b: no bench_generate"; continue; }
          $(bin $b bench_generate) /tmp/q15 32 128 512 1 > $OUT/q15_${r}_$(basename $b).json 2>/dev/null
          python3 -c "import json,sys; a=json.load(open(sys.argv[1])); print('qwen2-1.5b %s run %s: decode %.1f tok/s (fast_decode %d), no-LoRA %.1f, backend ops %.1f' % (sys.argv[2], sys.argv[3], a['decode_tok_s'], a['fast_decode'], a['no_lora_decode_tok_s'], a['ops_decode_tok_s']))" \
            $OUT/q15_${r}_$(basename $b).json $b $r || echo "$b run $r: bench failed"
        done
      done ;;
    families)
      # real-shaped random models (transformers on the GPU machine), decode at batch 1 and 8
      PYTHONUNBUFFERED=1 timeout 400 python3 tests/gpu/families_models.py /tmp/fam llama32_1b qwen3_1p7b gemma2_2b \
        > $OUT/families_models.log 2>&1 || { echo "families_models.py failed"; tail -5 $OUT/families_models.log; }
      for m in llama32_1b qwen3_1p7b gemma2_2b; do
        [ -d /tmp/fam/$m ] || { echo "$m: not made"; continue; }
        timeout 150 $(bin $G bench_generate) /tmp/fam/$m 32 128 512 1,8 > $OUT/dec_$m.json 2> $OUT/dec_$m.err
        python3 -c "import json,sys; a=json.load(open(sys.argv[1])); print('%s: decode %.1f tok/s (fast_decode %d), backend ops %.1f, batch 8 %.0f tok/s' % (sys.argv[2], a['decode_tok_s'], a['fast_decode'], a['ops_decode_tok_s'], [b['decode_tok_s'] for b in a.get('batches', []) if b['batch'] == 8][0]))" \
          $OUT/dec_$m.json $m || { echo "$m: bench failed"; tail -3 $OUT/dec_$m.err; }
      done ;;
  esac
done
