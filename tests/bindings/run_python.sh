#!/bin/sh
# run_python.sh - the Python binding's suite (unittest; no pytest needed) against the library
# of this build tree, on the tiny model; same skip rule as run_go.sh.
set -u
root=${LT_REPO_ROOT:?} build=${LT_BUILD_DIR:?}
missing=0
if LT_TINY_MODEL=$(python3 "$root/tests/bindings/tiny_model.py" "$build/tiny-qwen2"); then
  export LT_TINY_MODEL
else
  missing=1; export LT_TINY_MODEL=
fi
export PYTHONPATH="$root/bindings/python${PYTHONPATH:+:$PYTHONPATH}" LT_REPO_ROOT="$root"
python3 -m unittest discover -v -s "$root/bindings/python/tests" || exit 1
[ $missing = 0 ] || { echo "skipped: the whole-job tests need the tiny model (see above)"; exit 77; }
