#!/bin/bash
# lead_call3.sh - HEAD-ish CUDA check (build-off: f77cdcb) vs the base build (build-gbase: 6789bfc): CUDA graph + offload
# tests, 5 notebook steps both builds (no buckets), bench fixed shapes both builds, notebook recipe 40 steps with/without
# buckets, 2x2048 with offload. Carry ["build-off", "build-gbase"].
set -u
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
N=build-off; O=build-gbase
for f in $N/*.xz $O/*.xz; do xz -d -f -T4 $f & done; wait; chmod +x $N/* $O/*
mkdir -p /work && ln -sfn $PWD /work/snap
export LD_LIBRARY_PATH=$PWD/$N/libs:${LD_LIBRARY_PATH:-} LT_REPO_ROOT=$PWD
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 ))s; }
nvidia-smi --query-gpu=name --format=csv,noheader
$N/loratune init-random --config assets/tiny-qwen2/config.json --output /tmp/tq --seed 11 > /dev/null 2>&1
timeout 60 $N/test_cuda_graph > $OUT/graph.log 2>&1; echo "test_cuda_graph rc=$? $(tail -1 $OUT/graph.log) $(el)"
timeout 60 $N/test_offload_cuda > $OUT/off.log 2>&1; echo "test_offload_cuda rc=$? $(tail -1 $OUT/off.log) $(el)"
$N/loratune init-random --config assets/qwen2-1.5b/config.json --output /tmp/q15 --seed 1 --tokenizer assets/qwen2-tokenizer > /dev/null 2>&1 || echo init failed
for b in $O $N; do
  x=""; [ $b = $N ] && x="--no-bucket-passes"
  l=$(timeout 60 $b/loratune train --model /tmp/q15 --data assets/ruozhiba/ruozhiba_qa.json --output /tmp/o_$b --device cuda --optim adamw_torch --lr 4e-5 --max-steps 5 --gen-instruction "" --log-every 1 $x 2>&1 | grep -E "^step" | awk '{printf "%s ", $4}')
  echo "5 steps $b: $l $(el)"
done
for b in $O $N; do
  timeout 75 $b/loratune bench --model /tmp/q15 --shapes 2x512,2x2048,16x512 --steps 5 --warmup 2 > $OUT/bench_$b.log 2>&1; echo "bench $b rc=$? $(el)"; grep -E "^[0-9]+x[0-9]+" $OUT/bench_$b.log
done
timeout 40 $N/loratune bench --model /tmp/q15 --shapes 2x2048 --steps 5 --warmup 2 --offload-checkpoints > $OUT/bench_off.log 2>&1; echo "bench offload rc=$? $(el)"; grep -E "shape|^[0-9]+x[0-9]+" $OUT/bench_off.log
for x in "" "--no-bucket-passes"; do
  rm -rf /tmp/nb; s=$(date +%s)
  timeout 60 $N/loratune train --model /tmp/q15 --data assets/ruozhiba/ruozhiba_qa.json --output /tmp/nb --device cuda --max-steps 40 --gen-instruction "" --log-every 1 $x > $OUT/nb.log 2>&1
  echo "notebook 40 steps $x rc=$? $(( $(date +%s)-s ))s: $(python3 -c "
import json; r=[json.loads(l) for l in open('/tmp/nb/log.jsonl')]; r=[x for x in r if x.get('step',0)>10 and x.get('tokens_per_s')]
print('steps 11-%d: %.0f tok/s' % (r[-1]['step'], sum(x['tokens'] for x in r)/sum(x['tokens']/x['tokens_per_s'] for x in r)))" 2>&1 | tail -1) | $(tail -2 $OUT/nb.log | tr '\n' ' ' | cut -c1-300)"
done
