#!/bin/bash
# s9_call.sh - one short GPU call (about 5-6 minutes; written when about 8 minutes of device time were
# left, and never run: no machine started in the eighth to tenth sessions) for the CUDA code that no GPU has run yet. The seven CUDA test programs run at the same
# time (correctness only: nothing is timed while they run), then, alone on the card, the timed
# figures in order of what they decide: the memory-saving mode's peaks against the estimate, the
# device mode at 2x2048, batch-1 and batched decode, the notebook recipe (30 steps), 1 x 32k tokens
# with offload, and the Gemma-2-2B shape's bench if time is left.
#   stage (workstation): bash tests/gpu/s8_call1.sh stage SRC_BUILD_DIR build-s9
#   run (device, carry ["build-s9"]): LIMIT=300 bash tests/gpu/s9_call.sh
set -u
N=build-s9; . tests/gpu/call_env.sh
# 1. the test programs, all at once; the 1.5B model is written meanwhile
$LT init-random --config tests/offload/config.json --output /tmp/m5 --seed 5 --dtype f32 --overwrite > /dev/null 2>&1
$LT init-random --config assets/tiny-qwen2/config.json --output /tmp/tq --seed 11 --dtype f32 $TK --overwrite > /dev/null 2>&1
# the fused decoder also on real head dims (64-256), longrope on both sides and LoRA ranks to 128
DS=""; for r in gemma2_hd256:16 gemma3_hd256:64 phi3_hd96_longrope_short:128 phi3_hd96_longrope_long:64 llama_hd128:64 \
                mistral_hd64:32 qwen3_hd128:16; do n=${r%%:*}
  $LT init-random --config tests/infer/decode_shapes/$n.json --output /tmp/ds/$n --seed 3 --dtype f32 --overwrite > /dev/null 2>&1 &&
  DS="$DS /tmp/ds/$r" || S+=("init-random $n FAILED: not in test_generate_families_cuda"); done
TESTS=(test_cuda_ops test_cuda_families test_cuda_graph "test_offload_cuda /tmp/m5" "test_generate_cuda /tmp/tq assets/qwen2-tokenizer"
       "test_generate_batch_cuda /tmp/tq assets/qwen2-tokenizer" "test_generate_families_cuda$DS")
for t in "${TESTS[@]}"; do n=${t%% *}; ( timeout ${TT:-150} $N/$t > $OUT/f/$n.log 2>&1; echo "rc=$?" > $OUT/f/$n.rc ) & done
# the graph test again with every dequantized weight kept for the run (LT_CUDA_WCACHE=2, resident)
( LT_CUDA_WCACHE=2 timeout ${TT:-150} $N/test_cuda_graph > $OUT/f/graph_resident.log 2>&1; echo "rc=$?" > $OUT/f/graph_resident.rc ) &
$LT init-random --config assets/qwen2-1.5b/config.json --output /tmp/q15 --seed 1 $TK --overwrite > /dev/null 2>&1
wait
for t in "${TESTS[@]}" graph_resident; do n=${t%% *}; S+=("$n $(cat $OUT/f/$n.rc): $(tail -1 $OUT/f/$n.log | cut -c1-160)"); done
S+=("tests done $(el)")
grep -hE "FAIL|CHECK failed" $OUT/f/*.log | head -20
# 2. memory: the offload mode's peaks vs the estimate; the device mode at 2x2048
timeout 100 $LT bench --model /tmp/q15 $TK --shapes 2x512,2x2048,16x512 --offload-checkpoints --steps 4 --warmup 2 > $OUT/f/off.log 2>&1
S+=("bench offload rc=$? $(el)"); grep -E "^ *[0-9]+x[0-9]+" $OUT/f/off.log
timeout 60 $LT bench --model /tmp/q15 $TK --shapes 2x512,2x2048 --steps 4 --warmup 2 > $OUT/f/dev.log 2>&1
S+=("bench device rc=$? $(el)"); grep -E "^ *[0-9]+x[0-9]+" $OUT/f/dev.log
# the same with every dequantized weight kept (no dequantization in a pass: the fixed cost's share)
LT_CUDA_WCACHE=2 timeout 60 $LT bench --model /tmp/q15 $TK --shapes 2x512,2x2048 --steps 4 --warmup 2 > $OUT/f/res.log 2>&1
S+=("bench device, LT_CUDA_WCACHE=2 rc=$? $(el)"); grep -E "^ *[0-9]+x[0-9]+" $OUT/f/res.log
# 3. decode: batch 1 (adapter unmerged) and batches of 8 and 32
[ $(left) -gt 60 ] && { timeout 50 $N/bench_generate /tmp/q15 32 128 512 1,8,32 > $OUT/f/dec.json 2> $OUT/f/dec.err
  S+=("decode rc=$? $(el): $(head -c 300 $OUT/f/dec.json)"); }
# 4. the notebook recipe, 30 steps
nb() { rm -rf /tmp/nb; timeout $1 $LT train --model /tmp/q15 $TK --data $D --output /tmp/nb --device cuda --max-steps $2 \
  --gen-instruction "" --log-every 1 > $OUT/f/nb.log 2>&1; echo "rc=$? $(python3 -c "
import json; r=[json.loads(l) for l in open('/tmp/nb/log.jsonl')]; r=[x for x in r if x.get('step',0)>10 and x.get('tokens_per_s')]
print('steps 11-%d: %.0f tok/s, %.0f tok/step' % (r[-1]['step'], sum(x['tokens'] for x in r)/sum(x['tokens']/x['tokens_per_s'] for x in r), sum(x['tokens'] for x in r)/len(r)))" 2>&1 | tail -1)"; }
[ $(left) -gt 50 ] && S+=("notebook 30 steps $(nb 45 30) $(el)")
[ $(left) -gt 150 ] && S+=("notebook 30 steps, LT_CUDA_WCACHE=2 $(LT_CUDA_WCACHE=2 nb 45 30) $(el)")
# 4b. where the fixed cost of a step goes (per-op GPU time at 2x512 and 16x512: a linear fit of
#     the step time over the token count gave ~16 ms a step that does not scale with tokens)
[ $(left) -gt 90 ] && { timeout 40 $LT bench --model /tmp/q15 $TK --shapes 2x512,16x512 --steps 2 --warmup 1 --profile \
  > $OUT/f/prof.log 2>&1; S+=("bench --profile rc=$? $(el)"); }
# 5. long context with offload
[ $(left) -gt 70 ] && { timeout 60 $LT bench --model /tmp/q15 $TK --shapes 1x32768 --offload-checkpoints --steps 2 --warmup 1 > $OUT/f/long.log 2>&1
  S+=("bench 1x32768 offload rc=$? $(el)"); grep -E "^ *[0-9]+x[0-9]+" $OUT/f/long.log; }
# 6. Gemma-2-2B shape (cuBLAS attention with soft-capping)
if [ $(left) -gt 100 ]; then
  timeout $(( $(left) - 50 )) python3 tests/gpu/families_models.py /tmp/fam gemma2_2b > $OUT/f/models.log 2>&1 && \
  timeout 45 $LT bench --model /tmp/fam/gemma2_2b --tokenizer /tmp/fam/gemma2_2b --shapes 2x2048 --steps 3 --warmup 1 > $OUT/f/gemma2.log 2>&1
  S+=("gemma2_2b bench rc=$? $(el)"); grep -E "^ *[0-9]+x[0-9]+" $OUT/f/gemma2.log
fi
printf '%s\n' "${S[@]}"
