#!/bin/sh
# check_versions.sh - CMakeLists.txt's project(loratune VERSION x.y.z) is the one place the version
# is written; the copies that cannot read it at build time must agree with it: the header's
# LT_VERSION_* (also checked when CMake configures), the Rust crates and loratune-sys's constants,
# the pure-Python bindings/python/pyproject.toml, and the major version each binding checks at load.
# (The .so, loratune.pc, the CMake package, the Debian packages and the root pyproject.toml take
# it from CMake directly.)
set -u
root=${LT_REPO_ROOT:?}
v=$(sed -n 's/^project(loratune VERSION \([0-9]*\.[0-9]*\.[0-9]*\).*/\1/p' "$root/CMakeLists.txt")
[ -n "$v" ] || { echo "FAILED: no project(loratune VERSION x.y.z) in CMakeLists.txt"; exit 1; }
major=${v%%.*} rest=${v#*.} minor=${rest%%.*} patch=${v##*.}
bad=0
check() {  # what, found, expected
  if [ "$2" = "$3" ]; then echo "ok   $1: $2"; else echo "FAIL $1: $2 (CMakeLists.txt says $3)"; bad=1; fi
}
h="$root/include/loratune.h"
check "loratune.h LT_VERSION_MAJOR.MINOR.PATCH" \
  "$(sed -n 's/^#define LT_VERSION_MAJOR \([0-9]*\).*/\1/p' "$h").$(sed -n 's/^#define LT_VERSION_MINOR \([0-9]*\).*/\1/p' "$h").$(sed -n 's/^#define LT_VERSION_PATCH \([0-9]*\).*/\1/p' "$h")" "$v"
for c in loratune-sys loratune; do
  check "bindings/rust/$c/Cargo.toml" "$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/bindings/rust/$c/Cargo.toml" | head -n 1)" "$v"
done
s="$root/bindings/rust/loratune-sys/src/lib.rs"
check "loratune-sys LT_VERSION_*" \
  "$(sed -n 's/^pub const LT_VERSION_MAJOR: u32 = \([0-9]*\);/\1/p' "$s").$(sed -n 's/^pub const LT_VERSION_MINOR: u32 = \([0-9]*\);/\1/p' "$s").$(sed -n 's/^pub const LT_VERSION_PATCH: u32 = \([0-9]*\);/\1/p' "$s")" "$v"
check "bindings/python/pyproject.toml" "$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/bindings/python/pyproject.toml")" "$v"
check "python BINDING_VERSION_MAJOR" "$(sed -n 's/^BINDING_VERSION_MAJOR = \([0-9]*\).*/\1/p' "$root/bindings/python/loratune/_ffi.py")" "$major"
check "go BindingVersionMajor" "$(sed -n 's/^const BindingVersionMajor = \([0-9]*\).*/\1/p' "$root/bindings/go/loratune.go")" "$major"
grep -q 'regex = .project\\(loratune VERSION' "$root/pyproject.toml" && echo "ok   pyproject.toml reads the version from CMakeLists.txt" \
  || { echo "FAIL pyproject.toml does not read the version from CMakeLists.txt"; bad=1; }
[ $bad = 0 ] || { echo "FAILED: versions disagree (change them together with CMakeLists.txt's project())"; exit 1; }
echo "versions: all $v"
