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
chmod +x $N/* build-gbase/* 2>/dev/null; cp $N/libloratune.so $N/libloratune.so.0
export LD_LIBRARY_PATH=$PWD/$N:$PWD/$N/libs:${LD_LIBRARY_PATH:-} LT_REPO_ROOT=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "build: $(cat $N/COMMIT)"
S=(); el() { echo $(( $(date +%s) - T0 ))s; }; T0=$(date +%s)
for t in test_cuda_ops test_cuda_graph test_cuda_families; do
  timeout 150 $N/$t > $OUT/f/$t.log 2>&1; S+=("$t rc=$? $(el): $(tail -1 $OUT/f/$t.log)")
done
grep -E "attention_opt|worst relative|CHECK failed" $OUT/f/test_cuda_families.log | head -30
$N/loratune init-random --config assets/tiny-qwen2/config.json --output /tmp/tq --seed 11 --overwrite > /dev/null 2>&1
timeout 120 $N/test_generate_batch_cuda /tmp/tq assets/qwen2-tokenizer > $OUT/f/gbc.log 2>&1; S+=("test_generate_batch_cuda rc=$? $(el): $(tail -1 $OUT/f/gbc.log)")
$N/loratune init-random --config tests/offload/config.json --output /tmp/m5 --seed 5 --dtype f32 --overwrite > /dev/null 2>&1
timeout 60 $N/test_offload_cuda /tmp/m5 > $OUT/f/off.log 2>&1; S+=("test_offload_cuda rc=$? $(el): $(tail -1 $OUT/f/off.log)")
$N/loratune init-random --config assets/qwen2-1.5b/config.json --output /tmp/q15 --seed 1 --tokenizer assets/qwen2-tokenizer --overwrite > /dev/null 2>&1
for b in build-gbase $N; do
  [ -x $b/bench_generate ] || continue
  timeout 90 $b/bench_generate /tmp/q15 32 128 512 > $OUT/f/dec_$b.json 2> $OUT/f/dec_$b.err; S+=("decode $b rc=$? $(el): $(head -c 300 $OUT/f/dec_$b.json)")
done
tail -30 $OUT/f/dec_$N.err
timeout 200 python3 tests/gpu/families_models.py /tmp/fam gemma2_2b > $OUT/f/models.log 2>&1 && \
  timeout 120 $N/loratune bench --model /tmp/fam/gemma2_2b --tokenizer /tmp/fam/gemma2_2b --shapes 2x512,2x2048 --steps 4 --warmup 2 > $OUT/f/gemma2.log 2>&1
S+=("gemma2_2b bench rc=$? $(el)"); grep -E "^[0-9]+x[0-9]+" $OUT/f/gemma2.log
tar -czf $OUT/first_call.tgz -C $OUT f
printf '%s\n' "${S[@]}"
