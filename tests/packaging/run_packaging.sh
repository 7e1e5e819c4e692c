#!/bin/sh
# run_packaging.sh - installs this build with `cmake --install` into a temporary prefix, then
# builds examples/c against the installed library twice: with pkg-config (examples/c/Makefile)
# and with find_package(loratune) -> loratune::loratune (examples/c/CMakeLists.txt), and runs
# both. With the tiny model at hand, the pkg-config build also runs the whole job for one step.
set -u
root=${LT_REPO_ROOT:?} build=${LT_BUILD_DIR:?}
command -v pkg-config >/dev/null 2>&1 || { echo "skipped: no pkg-config"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAILED: $*"; [ -f "$tmp/log" ] && tail -40 "$tmp/log"; exit 1; }

cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/log" 2>&1 || fail "cmake --install"
prefix="$tmp/prefix"
[ -f "$prefix/include/loratune.h" ] || fail "no include/loratune.h installed"
pc=$(find "$prefix" -name loratune.pc | head -n 1)
[ -n "$pc" ] || fail "no loratune.pc installed"
libdir=$(dirname "$(dirname "$pc")")
[ -e "$libdir/libloratune.so.0" ] || fail "no libloratune.so.0 in $libdir (SONAME follows the major version)"
find "$prefix" -name loratuneConfig.cmake | grep -q . || fail "no loratuneConfig.cmake installed"

# 1. pkg-config. loratune.pc names the prefix configured at build time; --define-prefix makes
# pkg-config derive it from where the file now lies (the temporary prefix).
export PKG_CONFIG_PATH="$(dirname "$pc")"
pkg-config --exists loratune || fail "pkg-config does not know loratune"
case "$(pkg-config --define-prefix --cflags loratune)" in
  *"-I$prefix/include"*) ;;
  *) fail "pkg-config --cflags loratune does not point into $prefix: $(pkg-config --define-prefix --cflags loratune)" ;;
esac
make -C "$root/examples/c" OUT="$tmp/example_pc" PKG_CONFIG="pkg-config --define-prefix" >"$tmp/log" 2>&1 \
  || fail "building examples/c with pkg-config"
out=$(LD_LIBRARY_PATH="$libdir" "$tmp/example_pc" --version) || fail "the pkg-config build does not run"
echo "pkg-config build: $out"

# 2. find_package(loratune)
cmake -S "$root/examples/c" -B "$tmp/b" -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/log" 2>&1 \
  || fail "configuring examples/c with find_package(loratune)"
cmake --build "$tmp/b" >"$tmp/log" 2>&1 || fail "building examples/c with find_package(loratune)"
out=$(LD_LIBRARY_PATH="$libdir" "$tmp/b/loratune_example" --version) || fail "the find_package build does not run"
echo "find_package build: $out"
ldd "$tmp/b/loratune_example" | grep -q "$libdir/libloratune.so.0" || fail "not linked to the installed library"

# 3. the whole job through the installed library, one step, on the tiny model
if model=$(python3 "$root/tests/bindings/tiny_model.py" "$build/tiny-qwen2"); then
  LORATUNE_DEVICE=cpu LD_LIBRARY_PATH="$libdir" "$tmp/example_pc" "$model" "$root/assets/ruozhiba/ruozhiba_qa.json" \
    "$tmp/job" 1 >"$tmp/log" 2>&1 || fail "the whole job"
  grep -q "^step   1/1" "$tmp/log" || fail "no training step logged"
  head -c 4 "$tmp/job/model-Q4_K_M.gguf" | grep -q GGUF || fail "no GGUF written"
  [ -f "$tmp/job/lora_model/adapter_model.safetensors" ] || fail "no adapter written"
  echo "whole job: OK"
else
  echo "whole job: skipped (no tiny model)"
fi
echo "packaging: OK"
