#!/bin/bash
# s8_call1.sh - one GPU call (<= ~9 minutes on an H100/H200) for everything CUDA that changed after
# the last GPU run: the ops/graph/offload/family tests, the fused decoder on every family, the
# Qwen2 decode speed against the base build, the memory-saving mode's peaks against the estimate,
# the notebook recipe with and without token-budget buckets (and a per-op profile), and a Gemma-2
# bench (cuBLAS attention). Binaries come as one bundle (tar.xz: the static test binaries share
# most of their bytes, so one archive is ~1/8 of compressing each):
#   stage (workstation): bash tests/gpu/s8_call1.sh stage SRC_BUILD_DIR build-s8
#   run (device, carry ["build-s8", "build-gbase"]): bash tests/gpu/s8_call1.sh
set -u
BINS="loratune tests/cuda/test_cuda_ops tests/cuda/test_cuda_families tests/cuda/test_cuda_graph
      tests/offload/test_offload_cuda tests/infer/test_generate_cuda tests/infer/test_generate_batch_cuda
      tests/infer/test_generate_families_cuda tests/infer/bench_generate"
if [ "${1:-}" = stage ]; then
  S=$2 D=$3; rm -rf $D /tmp/s8stage && mkdir -p $D /tmp/s8stage/libs || exit 1
  for b in $BINS; do p=$(find $S -path "*$b" -type f -perm -u+x | head -1); [ -n "$p" ] || { echo "missing $b"; exit 1; }
    cp $p /tmp/s8stage/ && strip /tmp/s8stage/$(basename $b); done
  cp -L "$(ldconfig -p | awk '/libutf8proc.so.2 /{print $NF; exit}')" /tmp/s8stage/libs/
  git -C $S log --oneline -1 > /tmp/s8stage/COMMIT
  tar -C /tmp/s8stage -cf - . | xz -9e -T2 > $D/bundle.tar.xz && du -sh $D; exit 0
fi
OUT=${OUT:-/tmp/out}; mkdir -p $OUT/f
N=build-s8
[ -f $N/bundle.tar.xz ] && { xz -dc $N/bundle.tar.xz | tar -C $N -xf - && rm -f $N/bundle.tar.xz; }
for f in build-gbase/*.xz; do [ -f $f ] && xz -d -f $f; done
chmod +x $N/* build-gbase/* 2>/dev/null
export LD_LIBRARY_PATH=$PWD/$N:$PWD/$N/libs:${LD_LIBRARY_PATH:-} LT_REPO_ROOT=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "build: $(cat $N/COMMIT)"
S=(); T0=$(date +%s); el() { echo $(( $(date +%s) - T0 ))s; }; left() { echo $(( ${LIMIT:-540} - $(date +%s) + T0 )); }
LT=$N/loratune; TK="--tokenizer assets/qwen2-tokenizer"; D=assets/ruozhiba/ruozhiba_qa.json
# 1. tests
$LT init-random --config tests/offload/config.json --output /tmp/m5 --seed 5 --dtype f32 --overwrite > /dev/null 2>&1
$LT init-random --config assets/tiny-qwen2/config.json --output /tmp/tq --seed 11 --dtype f32 $TK --overwrite > /dev/null 2>&1
for t in test_cuda_ops test_cuda_families test_cuda_graph "test_offload_cuda /tmp/m5" "test_generate_cuda /tmp/tq assets/qwen2-tokenizer" \
         "test_generate_batch_cuda /tmp/tq assets/qwen2-tokenizer" test_generate_families_cuda; do
  n=${t%% *}; timeout 200 $N/$t > $OUT/f/$n.log 2>&1; S+=("$n rc=$? $(el): $(tail -1 $OUT/f/$n.log | cut -c1-200)")
done
grep -E "worst relative|attention" $OUT/f/test_cuda_families.log | head -12
grep -E "^\[" $OUT/f/test_generate_families_cuda.log | head -60
grep -E "FAIL|CHECK failed" $OUT/f/*.log | head -20
# 2. decode, 1.5B shape, base vs new
$LT init-random --config assets/qwen2-1.5b/config.json --output /tmp/q15 --seed 1 $TK --overwrite > /dev/null 2>&1
for r in 1; do for b in build-gbase $N; do
  timeout 90 $b/bench_generate /tmp/q15 32 128 512 > $OUT/f/dec_${b}_$r.json 2> $OUT/f/dec_${b}_$r.err
  S+=("decode $b run $r rc=$? $(el): $(head -c 260 $OUT/f/dec_${b}_$r.json)")
done; done
tail -25 $OUT/f/dec_${N}_1.err
# 3. memory: the offload mode's peaks vs the estimate; 2x2048 without offload
timeout 150 $LT bench --model /tmp/q15 $TK --shapes 2x512,2x2048,16x512 --offload-checkpoints --steps 4 --warmup 2 > $OUT/f/off.log 2>&1
S+=("bench offload rc=$? $(el)"); grep -E "^ *[0-9]+x[0-9]+" $OUT/f/off.log
timeout 100 $LT bench --model /tmp/q15 $TK --shapes 2x2048,1x1536,4x384 --steps 4 --warmup 2 > $OUT/f/dev.log 2>&1
S+=("bench device rc=$? $(el)"); grep -E "^ *[0-9]+x[0-9]+" $OUT/f/dev.log
[ $(left) -gt 300 ] && { timeout 120 $LT bench --model /tmp/q15 $TK --shapes 1x32768 --offload-checkpoints --steps 2 --warmup 1 > $OUT/f/long.log 2>&1
  S+=("bench 1x32768 offload rc=$? $(el)"); grep -E "^ *[0-9]+x[0-9]+" $OUT/f/long.log; }
# 4. the notebook recipe: tokens/s with and without buckets, then a per-op profile
nb() { rm -rf /tmp/nb; timeout $1 $LT train --model /tmp/q15 $TK --data $D --output /tmp/nb --device cuda --max-steps $2 \
  --gen-instruction "" --log-every 1 $3 > $OUT/f/nb$3.log 2>&1; echo "rc=$? $(python3 -c "
import json; r=[json.loads(l) for l in open('/tmp/nb/log.jsonl')]; r=[x for x in r if x.get('step',0)>10 and x.get('tokens_per_s')]
print('steps 11-%d: %.0f tok/s, %.0f tok/step' % (r[-1]['step'], sum(x['tokens'] for x in r)/sum(x['tokens']/x['tokens_per_s'] for x in r), sum(x['tokens'] for x in r)/len(r)))" 2>&1 | tail -1)"; }
for x in --no-bucket-passes --bucket-passes; do [ $(left) -gt 60 ] && S+=("notebook 30 steps $x $(nb 60 30 $x) $(el)"); done
[ $(left) -gt 60 ] && { timeout 60 $LT bench --model /tmp/q15 $TK --shapes 1x1536 --steps 3 --warmup 2 --data $D --data-steps 8 \
  --profile > $OUT/f/prof_nb.log 2>&1; S+=("profile notebook (bench --data --profile) rc=$? $(el)"); }
# 5. Gemma-2-2B shape: cuBLAS attention (soft-capping) training speed, fused decode
if [ $(left) -gt 120 ]; then
  timeout $(( $(left) - 60 )) python3 tests/gpu/families_models.py /tmp/fam gemma2_2b > $OUT/f/models.log 2>&1 && \
  timeout 60 $LT bench --model /tmp/fam/gemma2_2b --tokenizer /tmp/fam/gemma2_2b --shapes 2x512,2x2048 --steps 3 --warmup 1 > $OUT/f/gemma2.log 2>&1
  S+=("gemma2_2b bench rc=$? $(el)"); grep -E "^ *[0-9]+x[0-9]+" $OUT/f/gemma2.log
  [ $(left) -gt 30 ] && timeout 40 $N/bench_generate /tmp/fam/gemma2_2b 32 128 512 > $OUT/f/dec_gemma2.json 2>/dev/null && S+=("gemma2 decode $(head -c 200 $OUT/f/dec_gemma2.json)")
fi
tar -czf $OUT/s8_call1.tgz -C $OUT f && rm -rf $OUT/f
printf '%s\n' "${S[@]}"
