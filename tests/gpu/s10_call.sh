#!/bin/bash
# s10_call.sh - a short GPU call (~5 minutes) after s9_call.sh's: the fixed test_generate_batch_cuda,
# the Llama-3.1-8B shape's bench (2x2048, without and with offload), the notebook recipe for 100
# steps with token-budget buckets on/off and the weight cache resident or not (4 runs), and the
# Gemma-2-2B / Llama-3.2-1B benches beside the PEFT bf16 peer if time is left.
#   stage (workstation): bash tests/gpu/s8_call1.sh stage SRC_BUILD_DIR build-s9
#   run (device, carry ["build-s9", "build-dbase"]): LIMIT=330 bash tests/gpu/s10_call.sh
#   (build-dbase: bench_generate of 342f2aa, staged by hand: see the decode A/B below)
set -u
N=build-s9; . tests/gpu/call_env.sh
$LT init-random --config assets/tiny-qwen2/config.json --output /tmp/tq --seed 11 --dtype f32 $TK --overwrite > /dev/null 2>&1
timeout 120 $N/test_generate_batch_cuda /tmp/tq $TKDIR > $OUT/f/tgb.log 2>&1
S+=("test_generate_batch_cuda rc=$? $(el): $(tail -1 $OUT/f/tgb.log | cut -c1-150)"); grep -E "CHECK failed" $OUT/f/tgb.log | head -5
[ -d /tmp/q15 ] || $LT init-random --config assets/qwen2-1.5b/config.json --output /tmp/q15 --seed 1 $TK --overwrite > /dev/null 2>&1
# peak memory with Unsloth's optimizer (AdamW8bit, as the notebook): without and with offload
for o in "" "--offload-checkpoints"; do
  timeout 60 $LT bench --model /tmp/q15 $TK --shapes 2x512,2x2048,16x512 --steps 3 --warmup 2 --optim adamw_8bit $o \
    > $OUT/f/mem8$o.log 2>&1; S+=("bench adamw_8bit $o rc=$? $(el)"); grep -E "^ *[0-9]+x[0-9]+ " $OUT/f/mem8$o.log
done
# the notebook recipe, 100 steps: buckets x weight cache
nb() { rm -rf /tmp/nb; timeout 60 $LT train --model /tmp/q15 $TK --data $D --output /tmp/nb --device cuda --max-steps 100 \
  --gen-instruction "" --log-every 1 "$@" > $OUT/f/nb.log 2>&1; echo "rc=$? $(python3 -c "
import json; r=[json.loads(l) for l in open('/tmp/nb/log.jsonl')]; r=[x for x in r if x.get('tokens_per_s')]
a=r[10:]; b=r
f=lambda q: sum(x['tokens'] for x in q)/sum(x['tokens']/x['tokens_per_s'] for x in q)
print('steps 11-100: %.0f tok/s; all 100: %.0f tok/s; %.0f tok/step' % (f(a), f(b), sum(x['tokens'] for x in r)/len(r)))" 2>&1 | tail -1)"; }
S+=("notebook 100, buckets $(nb --bucket-passes) $(el)")
S+=("notebook 100, no buckets $(nb --no-bucket-passes) $(el)")
S+=("notebook 100, buckets, LT_CUDA_WCACHE=2 $(LT_CUDA_WCACHE=2 nb --bucket-passes) $(el)")
S+=("notebook 100, no buckets, LT_CUDA_WCACHE=2 $(LT_CUDA_WCACHE=2 nb --no-bucket-passes) $(el)")
# Llama-3.1-8B shape
if [ $(left) -gt 120 ]; then
  timeout 100 $LT init-random --config assets/llama-3.1-8b/config.json --output /tmp/l8 --seed 1 $TK --overwrite > /dev/null 2>&1
  for o in "" "--offload-checkpoints"; do
    timeout 60 $LT bench --model /tmp/l8 $TK --shapes 2x2048 --steps 4 --warmup 2 $o > $OUT/f/l8$o.log 2>&1
    S+=("bench l8 $o rc=$? $(el): $(grep -E '^ *2x2048' $OUT/f/l8$o.log | head -1)")
  done
fi
# decode with the adapter unmerged: this build vs 342f2aa's (build-dbase: its bench_generate, the
# last build measured at ~401 tok/s on an H100), same model, same card, alternating twice
if [ -f build-dbase/bundle.tar.xz ] || [ -x build-dbase/bench_generate ]; then
  [ -f build-dbase/bundle.tar.xz ] && { xz -dc build-dbase/bundle.tar.xz | tar -C build-dbase -xf - && rm -f build-dbase/bundle.tar.xz; }
  chmod +x build-dbase/* 2>/dev/null
  for r in 1 2; do for b in $N build-dbase; do
    timeout 40 env LD_LIBRARY_PATH=$PWD/$b:$PWD/$b/libs:$PWD/$N/libs $b/bench_generate /tmp/q15 32 128 512 1 > $OUT/f/dec_$r$(basename $b).json 2>/dev/null
    S+=("decode $(basename $b) run $r rc=$?: $(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['decode_tok_s'], 'tok/s unmerged,', d.get('no_lora_decode_tok_s'), 'without the adapter')" $OUT/f/dec_$r$(basename $b).json 2>&1 | tail -1)")
  done; done
fi
# the families' benches beside PEFT (Gemma-2-2B first: its attention is new since the last figure)
if [ $(left) -gt 100 ]; then
  MODELS="gemma2_2b llama32_1b" B=$N OUT=$OUT/fam timeout $(( $(left) - 10 )) bash tests/gpu/verify_families.sh bench > $OUT/f/fam.log 2>&1
  S+=("families bench rc=$? $(el)"); tail -12 $OUT/f/fam.log
fi
printf '%s\n' "${S[@]}"
