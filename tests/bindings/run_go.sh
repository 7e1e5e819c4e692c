#!/bin/sh
# run_go.sh - the Go binding's suite (go test) against the library of this build tree, on the
# tiny model. Skips (77) without a Go toolchain; without the tiny model it runs the tests that
# need none and then reports a skip.
set -u
command -v go >/dev/null 2>&1 || { echo "skipped: no Go toolchain (apt-get install golang-go)"; exit 77; }
root=${LT_REPO_ROOT:?} build=${LT_BUILD_DIR:?}
missing=0
if LT_TINY_MODEL=$(python3 "$root/tests/bindings/tiny_model.py" "$build/tiny-qwen2"); then
  export LT_TINY_MODEL
else
  missing=1; unset LT_TINY_MODEL
fi
libdir=$(dirname "${LORATUNE_LIBRARY:?}")
export LT_REPO_ROOT="$root" CGO_ENABLED=1 CGO_LDFLAGS="-L$libdir -Wl,-rpath,$libdir"
# `#cgo pkg-config: loratune` finds this build tree through its loratune-uninstalled.pc
export PKG_CONFIG_PATH="$build/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# go's build cache does not see headers outside the package: key it on loratune.h's content, so a
# grown struct rebuilds the binding instead of failing the version check with a stale one
export CGO_CFLAGS="-g -O2 -DLT_HEADER_SHA=$(sha1sum "$root/include/loratune.h" | cut -c1-16)"
export GOCACHE="$build/go-cache" GOPATH="$build/go-path" GOFLAGS=-mod=mod GOTOOLCHAIN=local
cd "$root/bindings/go" && go test -count=1 -v ./... || exit 1
[ $missing = 0 ] || { echo "skipped: the whole-job tests need the tiny model (see above)"; exit 77; }
