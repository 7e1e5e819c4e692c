#!/bin/bash
# make_peer_kit.sh - the git-ignored .peer-kit/ folder that tests/gpu/perf_peers.sh carries to the
# (offline) GPU machine: site.tar.xz, the site-packages of the Unsloth / bitsandbytes QLoRA peers
# built by the shared peer_build_site.py from its pinned wheels, and peers/, a copy of the shared
# peer scripts (../shared does not travel to the device). Run on a machine that reaches PyPI,
# from the repository root:
#   bash bench/make_peer_kit.sh [SHARED_PEERS_DIR]     (default ../shared/bench/peers)
# The pins are read from peer_build_site.py's WANT table, so they follow that script.
set -eu
PEERS=${1:-../shared/bench/peers}
KIT=.peer-kit
PY=${PYTHON:-python3}
[ -f "$PEERS/peer_build_site.py" ] || { echo "make_peer_kit: no peer_build_site.py in $PEERS" >&2; exit 2; }
[ -d .git ] || { echo "make_peer_kit: run from the repository root" >&2; exit 2; }
grep -qx '/.peer-kit/' .git/info/exclude 2>/dev/null || echo '/.peer-kit/' >> .git/info/exclude
WHEELS=$(mktemp -d /tmp/peer-wheels.XXXXXX)
trap 'rm -rf "$WHEELS"' EXIT
# "dist==version" for every entry of WANT (the wheels for CPython 3.12 on x86-64 Linux)
PINS=$("$PY" - "$PEERS/peer_build_site.py" <<'EOF'
import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
for node in tree.body:
    if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "WANT" for t in node.targets):
        print(" ".join(f"{k}=={v}" for k, v in ast.literal_eval(node.value).items()))
EOF
)
[ -n "$PINS" ] || { echo "make_peer_kit: no WANT table in $PEERS/peer_build_site.py" >&2; exit 2; }
echo "make_peer_kit: $PINS"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$WHEELS" $PINS
mkdir -p "$KIT/peers"
"$PY" "$PEERS/peer_build_site.py" "$WHEELS" "$KIT/site.tar.xz.tmp"
mv "$KIT/site.tar.xz.tmp" "$KIT/site.tar.xz"
cp "$PEERS"/*.py "$PEERS"/*.sh "$KIT/peers/"
chmod u+w "$KIT"/peers/*
echo "make_peer_kit: $(du -sh "$KIT" | cut -f1) in $KIT (site.tar.xz $(du -h "$KIT/site.tar.xz" | cut -f1)); carry \".peer-kit\""
