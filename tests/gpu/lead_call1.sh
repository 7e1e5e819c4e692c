#!/bin/bash
# lead_call1.sh - first GPU call of session 7: CUDA tests of HEAD (build-gpu), issue 19's one-GPU checks,
# issue 17's pip sdist on the GPU. Carry ["build-gpu", ".whl-pkg"].
set -u
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
B=build-gpu
for f in $B/*.xz; do xz -d -f -T4 $f & done; wait
cp $B/libloratune.so $B/libloratune.so.0; chmod +x $B/*; mkdir -p $B/tests/infer; cp $B/bench_generate $B/tests/infer/
mkdir -p /work && ln -sfn $PWD /work/snap
NCCL_DIR=$(dirname "$(ldconfig -p | awk '/libnccl.so.2 /{print $NF; exit}')" 2>/dev/null)
[ -z "$NCCL_DIR" -o "$NCCL_DIR" = . ] && NCCL_DIR=$(python3 -c "import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], 'lib'))" 2>/dev/null)
export LD_LIBRARY_PATH=$PWD/$B:$PWD/$B/libs:$NCCL_DIR:${LD_LIBRARY_PATH:-} LT_REPO_ROOT=$PWD NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
S=()
for t in test_cuda_ops test_cuda_graph test_cuda_families test_cuda_argmax test_families; do
  s=$(date +%s); timeout 150 $B/$t > $OUT/$t.log 2>&1; rc=$?; S+=("$t rc=$rc $(( $(date +%s)-s ))s: $(tail -1 $OUT/$t.log)")
done
grep -E "FAIL|fail" $OUT/test_cuda_*.log | head -20
$B/loratune init-random --config assets/tiny-qwen2/config.json --output /tmp/tq --seed 11 > /dev/null 2>&1
timeout 120 $B/test_generate_cuda /tmp/tq assets/qwen2-tokenizer > $OUT/gen_cuda.log 2>&1; S+=("test_generate_cuda rc=$? $(tail -1 $OUT/gen_cuda.log)")
s=$(date +%s); B=$B timeout 150 bash tests/dist/run_gpu_dist.sh > $OUT/dist.log 2>&1; S+=("run_gpu_dist rc=$? $(( $(date +%s)-s ))s"); tail -15 $OUT/dist.log
s=$(date +%s); timeout 330 bash tests/packaging/gpu_pip_sdist.sh run > $OUT/pip.log 2>&1; S+=("gpu_pip_sdist rc=$? $(( $(date +%s)-s ))s"); tail -25 $OUT/pip.log
printf '%s\n' "${S[@]}"
