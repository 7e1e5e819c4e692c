#!/bin/bash
# run_gpu_dist.sh - the one-GPU checks of data-parallel training (issue 19), in one call:
#   1. test_dist_nccl: world size 1 through NCCL (nccl_id, and the id shared over an lt_comm)
#      equals the plain trainer bit for bit (tiny fixture model, deterministic kernels, dropout
#      on, fused and unfused passes);
#   2. `loratune train --gpus 1` (the launcher, a rank process, the TCP rendezvous, NCCL) against
#      plain `loratune train --device cuda`: the same log.jsonl losses and adapter bytes;
#   3. `loratune bench --gpus 1`: tokens/s per GPU and the scaling line.
# Stage on the workstation (stage_gpu_dist.sh makes DIR with loratune, test_dist_nccl and
# libs/libutf8proc.so.2, each xz-compressed to fit the 64 MiB carry), then run there with
# carry ["DIR"]:  B=DIR bash tests/dist/run_gpu_dist.sh   (DIR defaults to build-dpg)
# libnccl.so.2 is taken from the GPU image (ldconfig, else PyTorch's nvidia-nccl wheel).
set -u
B=${B:-build-dpg}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
for f in $B/*.xz $B/libs/*.xz; do [ -f "$f" ] && xz -d -f "$f"; done
chmod +x $B/loratune $B/test_dist_nccl 2>/dev/null
NCCL_DIR=$(dirname "$(ldconfig -p | awk '/libnccl.so.2 /{print $NF; exit}')" 2>/dev/null)
if [ -z "$NCCL_DIR" ] || [ "$NCCL_DIR" = . ]; then
  NCCL_DIR=$(python3 -c "import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], 'lib'))" 2>/dev/null)
fi
echo "libnccl.so.2 from: ${NCCL_DIR:-not found}"
export LD_LIBRARY_PATH=$PWD/$B/libs:${NCCL_DIR:-}:${LD_LIBRARY_PATH:-}
export LT_REPO_ROOT=$PWD NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

echo "== 1. test_dist_nccl"
$B/test_dist_nccl 2>&1 | tee "$OUT/nccl.log"; echo "test_dist_nccl rc=${PIPESTATUS[0]}"

echo "== 2. loratune train --gpus 1 vs plain"
T=/tmp/dpg; rm -rf $T; mkdir -p $T
i=0
while [ $i -lt 24 ]; do
  n=$((5 + i % 9)); ids=""; k=0
  while [ $k -lt $n ]; do ids="$ids${ids:+, }$((3 + (i * 31 + k * 17) % 250))"; k=$((k + 1)); done
  echo "{\"input_ids\": [$ids]}" >> $T/data.jsonl
  i=$((i + 1))
done
ARGS="--model tests/fixtures/data/tiny-untied --tokenizer assets/qwen2-tokenizer --data $T/data.jsonl --device cuda
 --max-steps 8 --lr 2e-4 --batch-size 2 --grad-accum 4 --warmup-steps 1 --lora-r 8 --log-every 1 --deterministic
 --gen-instruction ="
# shellcheck disable=SC2086
$B/loratune train $ARGS --output $T/plain > $T/plain.txt 2>&1; echo "plain rc=$?"
# shellcheck disable=SC2086
$B/loratune train $ARGS --output $T/gpus1 --gpus 1 > $T/gpus1.txt 2>&1; echo "--gpus 1 rc=$?"
tail -4 $T/gpus1.txt
cp $T/*.txt "$OUT"/
if cmp -s $T/plain/adapter_model.safetensors $T/gpus1/adapter_model.safetensors; then
  echo "adapter: bit for bit"
else
  echo "adapter: DIFFERENT"
fi
python3 - $T <<'PY'
import json, sys
t = sys.argv[1]
l = lambda d: [r["loss"] for r in map(json.loads, open(f"{t}/{d}/log.jsonl")) if "loss" in r]
a, b = l("plain"), l("gpus1")
print("losses plain:   ", " ".join(f"{x:.6f}" for x in a))
print("losses --gpus 1:", " ".join(f"{x:.6f}" for x in b), "(equal)" if a == b else "(DIFFERENT)")
PY

echo "== 3. loratune bench --gpus 1"
$B/loratune bench --gpus 1 --shapes 2x512 --steps 4 --warmup 2 2>&1 | tail -6
