#!/bin/bash
# gpu_pip_sdist.sh - the pip package on a GPU (issue 17's GPU line), for the offline GPU machine:
# `pip install` of the sdist builds the CUDA backend for sm_90, then the Colab notebook's own code
# (its smoke mode pointed at a Qwen2-1.5B-shaped random model, the GPU and 10 steps) runs from the
# installed package: LORATUNE_LIBRARY unset, the source tree not on sys.path.
#
#   here (PyPI and apt reachable):     bash tests/packaging/gpu_pip_sdist.sh stage
#   there (device run, carry [".whl-pkg"]):  bash tests/packaging/gpu_pip_sdist.sh run
#
# `stage` fills .whl-pkg/ (listed in .git/info/exclude): the sdist of the committed tree (HEAD,
# through git archive: no uncommitted files), the wheels of scikit-build-core and what it needs
# (pathspec, packaging: pure Python) for pip --no-build-isolation there, and Debian's jansson /
# PCRE2 / utf8proc -dev packages with their libraries and pkgconf, unpacked into .whl-pkg/devroot,
# used only where the GPU machine lacks them (then LD_LIBRARY_PATH names their folder at run time
# too: a machine with the -dev packages installed has the libraries in the loader's paths).
# `run` writes its logs to $OUT (default /tmp/out) and ends with a summary. A dry run of the same
# flow on a machine without a GPU: PY=<venv>/bin/python LT_CUDA=OFF SMOKE_CONFIG=assets/tiny-qwen2/config.json
# SMOKE_DEVICE=cpu SMOKE_STEPS=2 (DEVROOT=1 uses the carried libraries even where the system has them).
set -u
K=.whl-pkg
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
case "${1:-}" in
stage)
  set -e
  rm -rf "$K"; mkdir -p "$K/debs"
  grep -qx "/$K/" .git/info/exclude 2>/dev/null || echo "/$K/" >> .git/info/exclude
  src=$(mktemp -d); trap 'rm -rf "$src"' EXIT
  git archive HEAD | tar -x -C "$src"
  python3 -m build --sdist --outdir "$K" "$src" > "$src.log" 2>&1 || { tail -20 "$src.log"; exit 1; }
  python3 -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 -d "$K" \
    "scikit-build-core>=1.1" "pathspec>=0.12" "packaging>=24"
  (cd "$K/debs" && apt-get download -q libjansson-dev libjansson4 libpcre2-dev libpcre2-8-0 libpcre2-16-0 \
    libpcre2-32-0 libpcre2-posix3 libutf8proc-dev libutf8proc2 pkgconf pkgconf-bin libpkgconf3 >/dev/null)
  for d in "$K"/debs/*.deb; do dpkg -x "$d" "$K/devroot"; done
  rm -rf "$K/debs" "$K/devroot/usr/share/doc" "$K/devroot/usr/share/man"
  find "$K/devroot" -name '*.a' -delete   # the shared libraries are what the build links
  ls -l "$K"; du -sh "$K"
  exit 0;;
run) ;;
*) echo "usage: $0 stage|run"; exit 2;;
esac

OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PY=${PY:-python3}
MA=x86_64-linux-gnu
D="$ROOT/$K/devroot"
unset LORATUNE_LIBRARY PYTHONPATH
export PYTHONUNBUFFERED=1
sum=()
t() { date +%s; }
sdist=$(ls "$K"/loratune-*.tar.gz 2>/dev/null | head -n 1)
[ -n "$sdist" ] || { echo "no sdist in $K: run '$0 stage' on a machine with network first"; exit 1; }
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader
echo "python: $($PY --version 2>&1) at $(command -v $PY)"; cmake --version | head -n 1
cv=$(cmake --version | sed -n 's/^cmake version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
set -- $cv
[ "${1:-0}" -gt 3 ] || { [ "${1:-0}" = 3 ] && [ "${2:-0}" -ge 25 ]; } \
  || { echo "CMake >= 3.25 is needed (pip cannot fetch one offline): carry the cmake wheel in $K"; exit 1; }
command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
nvcc --version | tail -n 2 | head -n 1

# jansson / PCRE2 / utf8proc: the machine's own where pkg-config finds them, else the carried ones
LT_CUDA=${LT_CUDA:-ON} CUDA_ARCH=${CUDA_ARCH:-90} STEPS=${SMOKE_STEPS:-10}
if [ -z "${DEVROOT:-}" ] && command -v pkg-config >/dev/null 2>&1 && pkg-config --exists jansson libpcre2-8 libutf8proc; then
  echo "jansson, PCRE2, utf8proc: the system's"
else
  echo "jansson, PCRE2, utf8proc: $K/devroot (not installed here)"
  export LD_LIBRARY_PATH="$D/usr/lib/$MA${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PKG_CONFIG="$D/usr/bin/pkgconf" PKG_CONFIG_SYSROOT_DIR="$D" \
    PKG_CONFIG_LIBDIR="$D/usr/lib/$MA/pkgconfig:$D/usr/share/pkgconfig" \
    PKG_CONFIG_ALLOW_SYSTEM_LIBS=1 PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1
  "$PKG_CONFIG" --cflags --libs jansson libpcre2-8 libutf8proc || { echo "the carried pkgconf does not work"; exit 1; }
fi

# 1. the build backend, offline, then pip install of the sdist with CUDA sm_90
$PY -m pip install -q --no-index --find-links "$K" "scikit-build-core>=1.1" > "$OUT/skbuild.log" 2>&1 \
  || { cat "$OUT/skbuild.log"; exit 1; }
s=$(t)
$PY -m pip install -v --no-build-isolation --no-index --force-reinstall --no-deps \
  -C cmake.define.LT_CUDA=$LT_CUDA -C cmake.define.CMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH "$sdist" > "$OUT/pip_install.log" 2>&1
rc=$?
sum+=("pip install $(basename "$sdist") (LT_CUDA=$LT_CUDA, sm_$CUDA_ARCH): rc=$rc $(($(t) - s)) s; $(grep -o 'loratune: CUDA.*' "$OUT/pip_install.log" | tr '\n' ' ')")
[ $rc = 0 ] || { tail -60 "$OUT/pip_install.log"; for l in "${sum[@]}"; do echo "$l"; done; exit 1; }
cd /tmp   # not the checkout: nothing of the source tree on sys.path
lib=$($PY -c "import loratune; print(loratune.library_path())") || exit 1
$PY -c "import loratune as lt; print('loratune', lt.__version__, 'from', lt.__file__); print('library', lt.library_path(), '| CUDA devices:', lt.cuda_device_count())"
ldd "$lib" | grep -E "cudart|cublas|nccl|jansson|pcre2|utf8proc"
readelf -d "$lib" | grep -E "RUNPATH|RPATH"
sum+=("installed: $lib; CUDA devices $($PY -c 'import loratune; print(loratune.cuda_device_count())')")

# 2. the loratune command (init-random makes the model), CPU-only, from the same sdist
rm -rf /tmp/lt-sdist /tmp/lt-cli; mkdir -p /tmp/lt-sdist
tar xzf "$ROOT/$sdist" -C /tmp/lt-sdist
(cmake -S /tmp/lt-sdist/loratune-* -B /tmp/lt-cli -DCMAKE_BUILD_TYPE=Release -DLT_CUDA=OFF -DLT_BUILD_TESTS=OFF \
  && cmake --build /tmp/lt-cli -j"$(nproc)" --target loratune_cli) > "$OUT/cli.log" 2>&1 || { tail -30 "$OUT/cli.log"; exit 1; }

# 3. the Colab notebook's code cells, smoke mode on a Qwen2-1.5B-shaped model, GPU, 10 steps
rm -rf /tmp/nb-gpu
s=$(t)
LORATUNE_SMOKE=1 LT_REPO_ROOT="$ROOT" LORATUNE_CLI=/tmp/lt-cli/loratune \
  LORATUNE_SMOKE_CONFIG="${SMOKE_CONFIG:-$ROOT/assets/qwen2-1.5b/config.json}" \
  LORATUNE_SMOKE_DEVICE="${SMOKE_DEVICE:-cuda}" LORATUNE_SMOKE_STEPS="$STEPS" \
  timeout 400 $PY "$ROOT/tests/packaging/run_notebook_cells.py" "$ROOT/examples/colab/loratune_qwen2_alpaca.ipynb" /tmp/nb-gpu \
  > "$OUT/notebook.log" 2>&1
rc=$?
steps=$(grep -c "'loss': " "$OUT/notebook.log")
grep -E "^libloratune|'loss': |train_runtime|FAILED" "$OUT/notebook.log" | head -20
sum+=("notebook ($(basename "$(dirname "${SMOKE_CONFIG:-qwen2-1.5b/x}")"), ${SMOKE_DEVICE:-cuda}, $STEPS steps): rc=$rc $(($(t) - s)) s, $steps steps logged; files: $(cd /tmp/nb-gpu 2>/dev/null && ls lora_model model | tr '\n' ' ')")
ok=1
[ $rc = 0 ] && [ "$steps" = "$STEPS" ] || ok=0
grep -q "^libloratune .* from .*site-packages/loratune/libloratune.so.0" "$OUT/notebook.log" || { ok=0; sum+=("the notebook did not load the installed package's library"); }
echo
for l in "${sum[@]}"; do echo "$l"; done
[ $ok = 1 ] && echo "GPU pip check: OK" || { echo "GPU pip check: FAILED (logs in $OUT)"; exit 1; }
