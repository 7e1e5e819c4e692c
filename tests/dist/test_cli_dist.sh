#!/bin/sh
# test_cli_dist.sh - `loratune train --gpus N` on the CPU backend (--device cpu: N rank processes
# over the TCP collective, launched and wired by the launcher as on GPUs):
#   - 2 ranks x grad-accum 2 write the adapter of 1 rank x grad-accum 4 (losses in log.jsonl and
#     adapter weights within 1e-6), and only rank 0 reports;
#   - --gpus 1 (one rank through the rendezvous and the collective) writes the plain run's adapter
#     bit for bit;
#   - the run resumes at 1 rank from a checkpoint the 2 ranks wrote;
#   - a rank process killed mid-run (SIGKILL) makes the other exit non-zero with a message naming
#     it, well within 30 s, and the launcher exits non-zero;
#   - bad --gpus values are usage errors.
set -eu
CLI=${LORATUNE_CLI:?LORATUNE_CLI is not set}
ROOT=${LT_REPO_ROOT:?LT_REPO_ROOT is not set}
MODEL=$ROOT/tests/fixtures/data/tiny-untied
TOK=$ROOT/assets/qwen2-tokenizer
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v python3 >/dev/null || { echo "SKIP: python3 is needed to compare the outputs"; exit 77; }

i=0
while [ $i -lt 24 ]; do
  n=$((5 + i % 9)); ids=""; k=0
  while [ $k -lt $n ]; do ids="$ids${ids:+, }$((3 + (i * 31 + k * 17) % 250))"; k=$((k + 1)); done
  echo "{\"input_ids\": [$ids]}" >> "$T/data.jsonl"
  i=$((i + 1))
done
COMMON="--model $MODEL --tokenizer $TOK --data $T/data.jsonl --device cpu --max-steps 8 --lr 2e-4 --batch-size 2
 --warmup-steps 1 --lora-r 8 --log-every 1 --optim adamw_torch --fuse-micro-batches 0 --gen-instruction ="

# shellcheck disable=SC2086
"$CLI" train $COMMON --grad-accum 4 --output "$T/one" > "$T/one.txt" 2>&1 || { cat "$T/one.txt"; fail "1 rank"; }
# shellcheck disable=SC2086
"$CLI" train $COMMON --grad-accum 2 --save-every 4 --gpus 2 --output "$T/two" > "$T/two.txt" 2>&1 \
  || { cat "$T/two.txt"; fail "2 ranks"; }
cat "$T/two.txt"
grep -q "2 ranks on devices 0,1" "$T/two.txt" || fail "the launcher did not say what it started"
grep -q "data parallel: 2 ranks" "$T/two.txt" || fail "rank 0 did not report the run"
[ "$(grep -c '^step 8/8' "$T/two.txt")" -eq 1 ] || fail "step lines should come from rank 0 only"
for f in adapter_model.safetensors log.jsonl loss.svg checkpoint-4/trainer_state.json; do
  [ -e "$T/two/$f" ] || fail "missing $f"
done
# --gpus 1: one rank through the rendezvous and the collective, the plain run's bits
# shellcheck disable=SC2086
"$CLI" train $COMMON --grad-accum 4 --gpus 1 --output "$T/g1" > "$T/g1.txt" 2>&1 || { cat "$T/g1.txt"; fail "--gpus 1"; }
grep -q "data parallel: 1 ranks" "$T/g1.txt" || fail "--gpus 1 did not train through the collective"
cmp -s "$T/one/adapter_model.safetensors" "$T/g1/adapter_model.safetensors" || fail "--gpus 1 differs from the plain run"
echo "--gpus 1: the plain run's adapter, bit for bit"
cp -r "$T/two" "$T/two-ranks"
# shellcheck disable=SC2086
"$CLI" train $COMMON --grad-accum 4 --output "$T/two" --resume "$T/two/checkpoint-4" --overwrite > "$T/res.txt" 2>&1 \
  || { cat "$T/res.txt"; fail "resume at 1 rank"; }

python3 - "$T" <<'PY' || fail "outputs differ"
import json, struct, sys
t = sys.argv[1]
def losses(d):
    return {r["step"]: r["loss"] for r in map(json.loads, open(f"{t}/{d}/log.jsonl")) if "loss" in r}
def tensors(d):
    b = open(f"{t}/{d}/adapter_model.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]
        raw = b[8 + n + s:8 + n + e]
        out[k] = struct.unpack(f"<{len(raw)//4}f", raw)
    return out
def compare(d, what):
    a, b = losses("one"), losses(d)
    assert sorted(a) == list(range(1, 9)) and sorted(b) == list(range(1, 9)), (what, sorted(a), sorted(b))
    dl = max(abs(a[s] - b[s]) for s in a)
    wa, wb = tensors("one"), tensors(d)
    assert wa.keys() == wb.keys()
    dw = max(abs(x - y) for k in wa for x, y in zip(wa[k], wb[k]))
    moved = max(abs(x) for k in wa if "lora_B" in k for x in wa[k])
    print(f"{what} vs 1 rank: max |loss diff| {dl:.3g}, max |adapter diff| {dw:.3g} (lora_B moved to {moved:.3g})")
    assert dl <= 1e-6 and dw <= 1e-6 and moved > 1e-5, what
compare("two-ranks", "2 ranks")
compare("two", "2 ranks to step 4, then 1 rank from their checkpoint-4")
PY

# a rank killed mid-run: the launcher's rank 1 process is found by its environment
# shellcheck disable=SC2086
LORATUNE_DIST_TIMEOUT=20 "$CLI" train $COMMON --max-steps 100000 --grad-accum 2 --gpus 2 --output "$T/kill" \
  > "$T/kill.txt" 2>&1 &
launcher=$!
victim=""
n=0
while [ -z "$victim" ] && [ $n -lt 300 ]; do
  sleep 0.1
  n=$((n + 1))
  for p in $(pgrep -P "$launcher" 2>/dev/null || true); do
    if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "RANK=1"; then victim=$p; fi
  done
done
[ -n "$victim" ] || { kill "$launcher" 2>/dev/null; fail "rank 1 never started"; }
while ! grep -q "^step 2/" "$T/kill.txt" && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
start=$(date +%s)
kill -9 "$victim"
set +e
wait "$launcher"
rc=$?
set -e
took=$(( $(date +%s) - start ))
cat "$T/kill.txt" | tail -5
[ $rc -ne 0 ] || fail "the launcher exited 0 after a rank was killed"
grep -q "rank 1.*closed its connection" "$T/kill.txt" || fail "rank 0 did not say that rank 1 died"
grep -q "rank 1 (device 1) exited with status 137" "$T/kill.txt" || fail "the launcher did not report rank 1"
[ "$took" -lt 30 ] || fail "the run took $took s to stop after rank 1 died"
echo "killed rank 1: the run stopped within $took s (exit $rc)"

"$CLI" train $COMMON --output "$T/bad" --gpus 0 > /dev/null 2>&1 && fail "--gpus 0 accepted"
"$CLI" train $COMMON --output "$T/bad" --gpus x,y > /dev/null 2>&1 && fail "--gpus x,y accepted"
echo "test_cli_dist: ok"
