#!/bin/sh
# run_deb.sh - the Debian packages for C users: configures a build of the library alone for /usr
# with Debian's hardening flags (its own folder, <build>/deb), `cpack -G DEB` makes libloratune0
# and libloratune-dev; checks their control fields and contents (dpkg-deb --info/--contents);
# unpacks both into a root of its own (<build>/deb/root; dpkg -x: nothing is installed on this
# machine); builds
# examples/c against that root with pkg-config (shared, and static with libloratune.a) and with
# find_package(loratune), runs them, and the whole job for one step on the tiny model; builds the
# Go binding through `#cgo pkg-config: loratune` where Go is found, and loratune-sys (Rust) through
# its build.rs's pkg-config probe where cargo is found; runs lintian where installed
# (fails on its errors, prints its warnings). Skips (77) without dpkg-deb / dpkg-shlibdeps.
set -u
root=${LT_REPO_ROOT:?} build=${LT_BUILD_DIR:?}
for t in dpkg-deb dpkg-shlibdeps dpkg-architecture pkg-config; do
  command -v $t >/dev/null 2>&1 || skip_tool=$t
done
[ -z "${skip_tool:-}" ] || { echo "skipped: no $skip_tool (apt-get install dpkg-dev pkg-config)"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/loratune-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAILED: $*"; [ -f "$tmp/log" ] && tail -40 "$tmp/log"; exit 1; }
step() { echo; echo "== $*"; }
version=$(sed -n 's/^project(loratune VERSION \([0-9][0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
major=${version%%.*}
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb="$build/deb"

step "configure + build (CMAKE_INSTALL_PREFIX=/usr, LT_CUDA=OFF, dpkg-buildflags hardening=+all), cpack -G DEB"
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
s=$(date +%s)
CFLAGS="$(dpkg-buildflags --get CPPFLAGS) $(dpkg-buildflags --get CFLAGS)" LDFLAGS="$(dpkg-buildflags --get LDFLAGS)" \
  cmake -S "$root" -B "$deb" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr -DLT_CUDA=OFF \
  -DLT_BUILD_TESTS=OFF -DLT_BUILD_CLI=OFF >"$tmp/log" 2>&1 || fail "configuring $deb"
cmake --build "$deb" -j"${JOBS:-2}" >"$tmp/log" 2>&1 || fail "building $deb"
rm -rf "$deb/packages"
(cd "$deb" && cpack -G DEB) >"$tmp/log" 2>&1 || fail "cpack -G DEB"
echo "built and packaged in $(($(date +%s) - s)) s"
rt="$deb/packages/libloratune${major}_${version}-1_${arch}.deb"
dv="$deb/packages/libloratune-dev_${version}-1_${arch}.deb"
[ -f "$rt" ] && [ -f "$dv" ] || fail "expected $(basename "$rt") and $(basename "$dv"), got: $(ls "$deb/packages")"

step "dpkg-deb --info"
for p in "$rt" "$dv"; do echo "$(basename "$p"):"; dpkg-deb --info "$p" | sed -n '/^ [A-Z][A-Za-z-]*:/,$p'; echo; done
field() { dpkg-deb -f "$1" "$2"; }
[ "$(field "$rt" Package)" = "libloratune$major" ] || fail "runtime package name"
[ "$(field "$dv" Package)" = "libloratune-dev" ] || fail "dev package name"
[ "$(field "$rt" Section)" = libs ] && [ "$(field "$dv" Section)" = libdevel ] || fail "sections"
for d in libc6 libjansson4 libpcre2-8-0 libutf8proc; do
  field "$rt" Depends | grep -q "$d" || fail "libloratune$major does not depend on $d: $(field "$rt" Depends)"
done
for d in "libloratune$major (= ${version}-1)" libjansson-dev libpcre2-dev libutf8proc-dev; do
  field "$dv" Depends | grep -qF "$d" || fail "libloratune-dev does not depend on $d: $(field "$dv" Depends)"
done
dpkg-deb -I "$rt" shlibs | grep -qx "libloratune $major libloratune$major (>= ${version}-1)" || fail "shlibs: $(dpkg-deb -I "$rt" shlibs)"
dpkg-deb -I "$rt" triggers | grep -qx "activate-noawait ldconfig" || fail "no ldconfig trigger"
L="./usr/lib/$multiarch"
contents() { dpkg-deb -c "$1" | awk '{$1 = $2 = $3 = $4 = $5 = ""; sub(/^ +/, ""); print}'; }
contents "$rt" > "$tmp/rt.list"
contents "$dv" > "$tmp/dv.list"
for f in "$L/libloratune.so.$version" "$L/libloratune.so.$major -> libloratune.so.$version" \
         "./usr/share/doc/libloratune$major/copyright"; do
  grep -qxF "$f" "$tmp/rt.list" || fail "libloratune$major lacks $f"
done
for f in ./usr/include/loratune.h "$L/libloratune.so -> libloratune.so.$major" "$L/libloratune.a" \
         "$L/pkgconfig/loratune.pc" "$L/cmake/loratune/loratuneConfig.cmake" "./usr/share/doc/libloratune-dev/copyright"; do
  grep -qxF "$f" "$tmp/dv.list" || fail "libloratune-dev lacks $f"
done
grep -v " -> " "$tmp/dv.list" | grep -q "\.so" && fail "libloratune-dev carries a real shared library"

step "dpkg -x both into a temporary root; examples/c against it"
r="$deb/root"  # a fixed path: go's build cache keeps the -L that pkg-config gave
rm -rf "$r"
dpkg -x "$rt" "$r" && dpkg -x "$dv" "$r" || fail "dpkg -x"
libdir="$r/usr/lib/$multiarch"
readelf -d "$libdir/libloratune.so.$version" | grep -q "Library soname: \[libloratune.so.$major\]" || fail "SONAME"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
echo "pkg-config --modversion loratune: $(pkg-config --modversion loratune)"
[ "$(pkg-config --modversion loratune)" = "$version" ] || fail "pkg-config version"
echo "pkg-config --cflags --libs loratune: $(pkg-config --cflags --libs loratune)"
make -C "$root/examples/c" OUT="$tmp/example" >"$tmp/log" 2>&1 || fail "examples/c with pkg-config"
out=$(LD_LIBRARY_PATH="$libdir" "$tmp/example" --version) || fail "the pkg-config build does not run"
echo "pkg-config build: $out"
[ "$out" = "libloratune $version" ] || fail "unexpected --version output"
LD_LIBRARY_PATH="$libdir" ldd "$tmp/example" | grep -q "$libdir/libloratune.so.$major" || fail "not linked to the unpacked library"
# static: libloratune.a and its dependencies from `pkg-config --static`
cc -O2 -o "$tmp/example_static" "$root/examples/c/loratune_example.c" $(pkg-config --cflags loratune) \
  "$libdir/libloratune.a" $(pkg-config --static --libs loratune | sed 's/-lloratune//') >"$tmp/log" 2>&1 \
  || fail "examples/c against libloratune.a"
ldd "$tmp/example_static" | grep -q libloratune && fail "the static build still needs libloratune.so"
echo "static build: $("$tmp/example_static" --version)"
cmake -S "$root/examples/c" -B "$tmp/b" -DCMAKE_PREFIX_PATH="$r/usr" >"$tmp/log" 2>&1 || fail "find_package(loratune)"
cmake --build "$tmp/b" >"$tmp/log" 2>&1 || fail "building examples/c with find_package(loratune)"
echo "find_package build: $(LD_LIBRARY_PATH="$libdir" "$tmp/b/loratune_example" --version)"
if model=$(python3 "$root/tests/bindings/tiny_model.py" "$build/tiny-qwen2" 2>/dev/null); then
  LORATUNE_DEVICE=cpu LD_LIBRARY_PATH="$libdir" "$tmp/example" "$model" "$root/assets/ruozhiba/ruozhiba_qa.json" \
    "$tmp/job" 1 >"$tmp/log" 2>&1 || fail "the whole job"
  grep "^step   1/1" "$tmp/log" || fail "no training step logged"
  head -c 4 "$tmp/job/model-Q4_K_M.gguf" | grep -q GGUF || fail "no GGUF written"
else
  echo "whole job: skipped (no tiny model)"
fi

if command -v go >/dev/null 2>&1; then
  step "Go binding through #cgo pkg-config: loratune (the unpacked -dev package)"
  export GOCACHE="$deb/go-cache" GOPATH="$build/go-path" GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=1
  (cd "$root/bindings/go" && go vet . && go test -count=1 -c -o "$tmp/go.test" .) >"$tmp/log" 2>&1 || fail "go build against the package"
  LD_LIBRARY_PATH="$libdir" ldd "$tmp/go.test" | grep -q "$libdir/libloratune.so.$major" || fail "the Go test binary is not linked to the package's library"
  LD_LIBRARY_PATH="$libdir" "$tmp/go.test" -test.run 'TestLibraryMatches' -test.v >"$tmp/log" 2>&1 || fail "go test -run TestLibraryMatches"
  grep -E "^(ok|PASS|--- )" "$tmp/log" | head -5
fi

[ -x "${HOME:-/root}/.cargo/bin/cargo" ] && PATH="${HOME:-/root}/.cargo/bin:$PATH"
if command -v cargo >/dev/null 2>&1; then
  step "Rust: loratune-sys's build.rs through pkg-config (no LORATUNE_LIB_DIR), its header test"
  (unset LORATUNE_LIB_DIR; CARGO_TARGET_DIR="$deb/rust-target" LT_REPO_ROOT="$root" \
    cargo test --offline --manifest-path "$root/bindings/rust/Cargo.toml" -p loratune-sys) >"$tmp/log" 2>&1 \
    || fail "cargo test -p loratune-sys against the package"
  grep -E "^test result" "$tmp/log" | head -2
  bin=$(ls -t "$deb"/rust-target/debug/deps/header-* | grep -v '\.d$' | head -n 1)
  ldd "$bin" | grep "libloratune.so.$major" | grep -qF "$r/usr/lib/" \
    || fail "the Rust test binary is not linked to the package's library: $(ldd "$bin" | grep loratune)"
fi

step "lintian"
if command -v lintian >/dev/null 2>&1; then
  lintian --tag-display-limit 0 -I "$rt" "$dv" >"$tmp/lintian" 2>&1
  grep -v "running with root privileges" "$tmp/lintian"
  grep -q "^E: " "$tmp/lintian" && fail "lintian reports errors"
  [ -s "$tmp/lintian" ] || echo "(no tags)"
else
  echo "lintian: not installed (apt-get install lintian), not run"
fi
echo
echo "deb packaging: OK"
