#!/bin/bash
# first_call.sh - the first GPU call of a session, for the CUDA code that has not run on a GPU yet
# (cuda/attn_gemm.cu, the batched decoder, decode changes after 342f2aa), about 4 minutes on an H100.
# Stage here: a CUDA sm_90 build S of HEAD with the targets loratune loratune_cli test_cuda_ops test_cuda_graph
# test_cuda_families test_generate_batch_cuda bench_generate test_offload_cuda, copied into build-next/ (stripped,
# xz -3, libs/libutf8proc.so.2, COMMIT); base build build-gbase (loratune, bench_generate of 6789bfc) optional.
# Run there with carry ["build-next"] (+ "build-gbase"):  bash tests/gpu/first_call.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p $OUT/f
N=build-next
for f in $N/*.xz build-gbase/*.xz; do [ -f $f ] && { xz -d -f -T4 $f & }; done; wait
chmod +x $N/* build-gbase/* 2>/dev/null; [ -f $N/libloratune.so ] && cp $N/libloratune.so $N/libloratune.so.0
export LD_LIBRARY_PATH=$PWD/$N:$PWD/$N/libs:${LD_LIBRARY_PATH:-} LT_REPO_ROOT=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "build: $(cat $N/COMMIT)"
S=(); el() { echo $(( $(date +%s) - T0 ))s; }; T0=$(date +%s)
for t in test_cuda_ops test_cuda_families; do
  timeout 150 $N/$t > $OUT/f/$t.log 2>&1; S+=("$t rc=$? $(el): $(tail -1 $OUT/f/$t.log)")
done
grep -E "attention_opt|worst relative|CHECK failed" $OUT/f/test_cuda_families.log | head -30
$N/loratune init-random --config assets/tiny-qwen2/config.json --output /tmp/tq --seed 11 --overwrite > /dev/null 2>&1
timeout 120 $N/test_generate_batch_cuda /tmp/tq assets/qwen2-tokenizer > $OUT/f/gbc.log 2>&1; S+=("test_generate_batch_cuda rc=$? $(el): $(tail -1 $OUT/f/gbc.log)")
[ -x $N/test_offload_cuda ] && $N/loratune init-random --config tests/offload/config.json --output /tmp/m5 --seed 5 --dtype f32 --overwrite > /dev/null 2>&1
[ -x $N/test_offload_cuda ] && timeout 60 $N/test_offload_cuda /tmp/m5 > $OUT/f/off.log 2>&1; S+=("test_offload_cuda rc=$? $(el): $(tail -1 $OUT/f/off.log)")
$N/loratune init-random --config assets/qwen2-1.5b/config.json --output /tmp/q15 --seed 1 --tokenizer assets/qwen2-tokenizer --overwrite > /dev/null 2>&1
for b in build-gbase $N; do
  [ -x $b/bench_generate ] || continue
  timeout 90 $b/bench_generate /tmp/q15 32 128 512 > $OUT/f/dec_$b.json 2> $OUT/f/dec_$b.err; S+=("decode $b rc=$? $(el): $(head -c 300 $OUT/f/dec_$b.json)")
done
tail -30 $OUT/f/dec_$N.err
timeout 200 python3 tests/gpu/families_models.py /tmp/fam gemma2_2b > $OUT/f/models.log 2>&1 && \
  timeout 120 $N/loratune bench --model /tmp/fam/gemma2_2b --tokenizer /tmp/fam/gemma2_2b --shapes 2x512,2x2048 --steps 4 --warmup 2 > $OUT/f/gemma2.log 2>&1
S+=("gemma2_2b bench rc=$? $(el)"); grep -E "^[0-9]+x[0-9]+" $OUT/f/gemma2.log
# where the notebook recipe's step time goes: a fixed shape of about one optimizer window's tokens, and the
# backend's per-op profile (graphs off while profiling) of the recipe with and without token-budget buckets
TK="--tokenizer assets/qwen2-tokenizer"
timeout 120 $N/loratune bench --model /tmp/q15 --shapes 1x1536,2x768,8x192,16x96 --steps 6 --warmup 2 > $OUT/f/win.log 2>&1
S+=("window shapes rc=$? $(el)"); grep -E "^[0-9]+x[0-9]+" $OUT/f/win.log
for x in "--bucket-passes" ""; do
  rm -rf /tmp/nbp; LT_CUDA_PROFILE=40 timeout 90 $N/loratune train --model /tmp/q15 $TK --data assets/ruozhiba/ruozhiba_qa.json --output /tmp/nbp --device cuda --max-steps 12 --gen-instruction "" --log-every 1 $x > $OUT/f/prof_nb$x.log 2>&1
  S+=("profile notebook $x rc=$? $(el)")
  rm -rf /tmp/nb; timeout 90 $N/loratune train --model /tmp/q15 $TK --data assets/ruozhiba/ruozhiba_qa.json --output /tmp/nb --device cuda --max-steps 30 --gen-instruction "" --log-every 1 $x > $OUT/f/nb$x.log 2>&1
  S+=("notebook 30 steps $x rc=$? $(el): $(python3 -c "
import json; r=[json.loads(l) for l in open('/tmp/nb/log.jsonl')]; r=[x for x in r if x.get('step',0)>10 and x.get('tokens_per_s')]
print('steps 11-%d: %.0f tok/s, %.0f tok/step' % (r[-1]['step'], sum(x['tokens'] for x in r)/sum(x['tokens']/x['tokens_per_s'] for x in r), sum(x['tokens'] for x in r)/len(r)))" 2>&1 | tail -1)")
done
tar -czf $OUT/first_call.tgz -C $OUT f
printf '%s\n' "${S[@]}"
