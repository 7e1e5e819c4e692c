#!/bin/bash
set -u
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
N=build-off; O=build-gbase
for f in $N/*.xz $O/*.xz; do [ -f $f ] && xz -d -f -T4 $f & done; wait; chmod +x $N/* $O/*
mkdir -p /work && ln -sfn $PWD /work/snap
export LD_LIBRARY_PATH=$PWD/$N/libs:${LD_LIBRARY_PATH:-} LT_REPO_ROOT=$PWD
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 ))s; }
TK="--tokenizer assets/qwen2-tokenizer"
$N/loratune init-random --config tests/offload/config.json --output /tmp/m5 --seed 5 --dtype f32 --overwrite > /dev/null 2>&1
timeout 60 $N/test_offload_cuda /tmp/m5 > $OUT/off.log 2>&1; echo "test_offload_cuda rc=$? $(tail -1 $OUT/off.log) $(el)"; grep -E "replays" $OUT/off.log | head -3
for b in $O $N; do
  x=""; [ $b = $N ] && x="--no-bucket-passes"
  l=$(timeout 60 $b/loratune train --model /tmp/q15 $TK --data assets/ruozhiba/ruozhiba_qa.json --output /tmp/o_$b --device cuda --optim adamw_torch --lr 4e-5 --max-steps 5 --gen-instruction "" --log-every 1 $x 2>&1 | grep -E "^step" | awk '{printf "%s ", $4}')
  echo "5 steps $b: $l $(el)"
done
for x in "" "--no-bucket-passes"; do
  rm -rf /tmp/nb; s=$(date +%s)
  timeout 70 $N/loratune train --model /tmp/q15 $TK --data assets/ruozhiba/ruozhiba_qa.json --output /tmp/nb --device cuda --max-steps 40 --gen-instruction "" --log-every 1 $x > $OUT/nb.log 2>&1
  echo "notebook 40 steps $x rc=$? $(( $(date +%s)-s ))s: $(python3 -c "
import json; r=[json.loads(l) for l in open('/tmp/nb/log.jsonl')]; r=[x for x in r if x.get('step',0)>10 and x.get('tokens_per_s')]
print('steps 11-%d: %.0f tok/s, final loss %s' % (r[-1]['step'], sum(x['tokens'] for x in r)/sum(x['tokens']/x['tokens_per_s'] for x in r), r[-1]['loss']))" 2>&1 | tail -1)"
done
