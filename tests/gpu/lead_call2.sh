#!/bin/bash
# lead_call2.sh - second GPU call of session 7: issue 18's GPU lines (verify_families.sh: fixtures, parity, bench, qwen2),
# transformers+PEFT's own bf16 gradient error on the family fixtures (.lead/bf16_ref.py), decode of HEAD vs the base build.
# Carry ["build-gpu", "build-gbase", ".lead"].
set -u
OUT=${OUT:-/tmp/out}; mkdir -p $OUT/v
B=build-gpu
for f in $B/*.xz build-gbase/*.xz; do xz -d -f -T4 $f & done; wait
cp $B/libloratune.so $B/libloratune.so.0 2>/dev/null; chmod +x $B/* build-gbase/*; mkdir -p $B/tests/infer; cp $B/bench_generate $B/tests/infer/ 2>/dev/null
mkdir -p /work && ln -sfn $PWD /work/snap
s=$(date +%s); timeout 120 python3 .lead/bf16_ref.py $PWD cuda > $OUT/v/bf16_ref.log 2>&1; echo "bf16_ref rc=$? $(( $(date +%s)-s ))s"
grep -E "^(llama|mistral|qwen|gemma|phi)" $OUT/v/bf16_ref.log
s=$(date +%s); OUT=$OUT/v timeout 430 bash tests/gpu/verify_families.sh fixtures parity bench qwen2 > $OUT/v/verify.log 2>&1; echo "verify_families rc=$? $(( $(date +%s)-s ))s"
grep -E "worst relative" $OUT/v/fixtures.log
export LD_LIBRARY_PATH=$PWD/$B:$PWD/$B/libs:${LD_LIBRARY_PATH:-}
if [ -d /tmp/q15 ] || build-gpu/loratune init-random --config assets/qwen2-1.5b/config.json --output /tmp/q15 --seed 1 --tokenizer assets/qwen2-tokenizer >/dev/null 2>&1; then
  for b in build-gbase build-gpu; do timeout 40 $b/bench_generate /tmp/q15 32 128 512 > $OUT/v/dec_$b.json 2>$OUT/v/dec_$b.err; echo "decode $b rc=$?: $(head -c 400 $OUT/v/dec_$b.json)"; done
fi
tar -czf $OUT/call2.tgz -C $OUT v
tail -40 $OUT/v/verify.log
