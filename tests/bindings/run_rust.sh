#!/bin/sh
# run_rust.sh - the Rust workspace's tests (loratune-sys's header check, loratune's suite)
# against the library of this build tree, offline, on the tiny model. Skips (77) without cargo;
# without the tiny model it runs the tests that need none and then reports a skip.
set -u
[ -x "${HOME:-/root}/.cargo/bin/cargo" ] && PATH="${HOME:-/root}/.cargo/bin:$PATH"
command -v cargo >/dev/null 2>&1 || { echo "skipped: no cargo"; exit 77; }
root=${LT_REPO_ROOT:?} build=${LT_BUILD_DIR:?}
missing=0
if LT_TINY_MODEL=$(python3 "$root/tests/bindings/tiny_model.py" "$build/tiny-qwen2"); then
  export LT_TINY_MODEL
else
  missing=1; unset LT_TINY_MODEL
fi
export LT_REPO_ROOT="$root" LORATUNE_LIB_DIR=$(dirname "${LORATUNE_LIBRARY:?}")
export CARGO_TARGET_DIR="$build/rust-target"
# an ASan/UBSan build (LT_SANITIZE, tests/CMakeLists.txt): the sanitizer runtimes go first into
# each test binary, through cargo's runner (not into cargo, rustc or rustdoc)
if [ -n "${LT_SAN_PRELOAD:-}" ]; then
  host=$(rustc -vV | sed -n 's/^host: //p' | tr 'a-z-' 'A-Z_')
  export "CARGO_TARGET_${host}_RUNNER=env LD_PRELOAD=$LT_SAN_PRELOAD"
fi
cargo test --offline --manifest-path "$root/bindings/rust/Cargo.toml" -- --test-threads=2 || exit 1
[ $missing = 0 ] || { echo "skipped: the whole-job tests need the tiny model (see above)"; exit 77; }
