#!/bin/bash
# compare_builds.sh - one GPU call: the CUDA tests of a new build (G=build-gsnap: loratune, libloratune.so, test_cuda_{ops,graph,families,argmax},
# test_generate_cuda, bench_generate, test_dist_nccl, libs/libutf8proc.so.2; each may be xz-compressed) against a base build
# (BASE=build-gbase: loratune, bench_generate): first 5 notebook steps and decode tokens/s on the 1.5B shape, run_gpu_dist.sh,
# bench. Stage both with -DLT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 builds here (binaries built from a tree at /work/snap:
# the tests find fixtures through that compiled-in path, linked to the copy there). Run with carry [G, BASE].
# lead's mid-session GPU check: new build (build-gsnap, commit in snap) vs the session's base build (build-gbase, 6789bfc)
set -u
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
G=${G:-build-gsnap}; BASE=${BASE:-build-gbase}
for f in $G/*.xz $BASE/*.xz; do xz -d -f $f; done; chmod +x $G/* $BASE/* 2>/dev/null
mkdir -p /work && ln -sfn $PWD /work/snap
NCCL_DIR=$(dirname "$(ldconfig -p | awk '/libnccl.so.2 /{print $NF; exit}')" 2>/dev/null)
[ -z "$NCCL_DIR" -o "$NCCL_DIR" = . ] && NCCL_DIR=$(python3 -c "import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], 'lib'))" 2>/dev/null)
export LD_LIBRARY_PATH=$PWD/$G:$PWD/$G/libs:$NCCL_DIR:${LD_LIBRARY_PATH:-} LT_REPO_ROOT=$PWD NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
S=()
T0=$(date +%s); left() { echo $(( 400 - ($(date +%s) - T0) )); }
for t in test_cuda_ops test_cuda_graph test_cuda_families test_cuda_argmax; do
  s=$(date +%s); timeout 150 $G/$t > $OUT/$t.log 2>&1; rc=$?; S+=("$t rc=$rc $(( $(date +%s)-s ))s: $(tail -1 $OUT/$t.log)")
done
grep -E "CUDA bf16|not on CUDA|lacks|FAIL" $OUT/test_cuda_families.log | head -20
$G/loratune init-random --config assets/tiny-qwen2/config.json --output /tmp/tq --seed 11 > /dev/null 2>&1
timeout 120 $G/test_generate_cuda /tmp/tq assets/qwen2-tokenizer > $OUT/gen_cuda.log 2>&1; S+=("test_generate_cuda rc=$? $(tail -1 $OUT/gen_cuda.log)")
cp assets/qwen2-1.5b/config.json /tmp/q15.json
$G/loratune init-random --config /tmp/q15.json --output /tmp/q15 --seed 1 --tokenizer assets/qwen2-tokenizer > /dev/null 2>&1 || echo "init-random failed"
for b in $BASE $G; do
  l=$($b/loratune train --model /tmp/q15 --data assets/ruozhiba/ruozhiba_qa.json --output /tmp/o_$b --device cuda --optim adamw_torch --lr 4e-5 --max-steps 5 --gen-instruction "" --log-every 1 2>&1 | grep -E "^step" | awk '{printf "%s ", $4}')
  S+=("5 steps $b: $l")
done
[ $(left) -gt 60 ] && B=$G timeout $(left) bash tests/dist/run_gpu_dist.sh > $OUT/dist.log 2>&1; S+=("run_gpu_dist rc=$?"); grep -E "rc=|bit|equal|DIFF|tok/s|effic" $OUT/dist.log | head -20
for b in $BASE $G; do
  [ $(left) -gt 40 ] && timeout 120 $b/bench_generate /tmp/q15 32 128 512 > $OUT/dec_$b.json 2> $OUT/dec_$b.err; S+=("decode $b rc=$?: $(head -c 600 $OUT/dec_$b.json)")
done
for b in $BASE $G; do
  [ $(left) -gt 40 ] && timeout $(left) $b/loratune bench --json $OUT/bench_$b.json --shapes 2x2048,16x512 --steps 5 --warmup 2 --data assets/ruozhiba/ruozhiba_qa.json --data-steps 3 > $OUT/bench_$b.log 2>&1; S+=("bench $b rc=$?")
  grep -E "tok/s|2x512|2x2048|16x512|data" $OUT/bench_$b.log | tail -6
done
printf '%s\n' "${S[@]}"
