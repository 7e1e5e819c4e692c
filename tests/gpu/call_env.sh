# call_env.sh - sourced by the one-call GPU scripts (s9_call.sh, s10_call.sh) on the device, from the
# repository root: unpacks the staged bundle in $N (default build-s9; bash tests/gpu/s8_call1.sh
# stage makes it), sets the library path, prints the card and the build, and defines
#   OUT (logs; $OUT/f made), S (summary lines), el (seconds since the start), left (seconds of
#   LIMIT, default 300, still left), LT (the CLI), TKDIR / TK (the bundled tokenizer as a folder /
#   as a flag), D (the bundled ruozhiba data)
OUT=${OUT:-/tmp/out}; mkdir -p $OUT/f
N=${N:-build-s9}
[ -f $N/bundle.tar.xz ] && { xz -dc $N/bundle.tar.xz | tar -C $N -xf - && rm -f $N/bundle.tar.xz; }
chmod +x $N/* 2>/dev/null
export LD_LIBRARY_PATH=$PWD/$N:$PWD/$N/libs:${LD_LIBRARY_PATH:-} LT_REPO_ROOT=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "build: $(cat $N/COMMIT)"
S=(); T0=$(date +%s); el() { echo $(( $(date +%s) - T0 ))s; }; left() { echo $(( ${LIMIT:-300} - $(date +%s) + T0 )); }
LT=$N/loratune; TKDIR=assets/qwen2-tokenizer; TK="--tokenizer $TKDIR"; D=assets/ruozhiba/ruozhiba_qa.json
