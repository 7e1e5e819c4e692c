#!/usr/bin/env python3
"""installed_smoke.py - run with the Python of a virtual environment into which the loratune
wheel (or `pip install .`) was installed: checks that `import loratune` takes the package and the
library from that environment (no LORATUNE_LIBRARY, no source tree on sys.path), that its version
is the CMake project version, then trains 2 steps on the tiny model and saves the adapter.

Usage: installed_smoke.py VERSION TINY_MODEL_DIR DATA.json OUT_DIR
"""
import math
import os
import sys


def main():
    if len(sys.argv) != 5:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    want_version, model_dir, data, out = sys.argv[1:]
    if os.environ.get("LORATUNE_LIBRARY"):
        print("FAILED: LORATUNE_LIBRARY is set (%s); this checks the installed package alone"
              % os.environ["LORATUNE_LIBRARY"])
        return 1
    import loratune as lt
    pkg = os.path.dirname(os.path.abspath(lt.__file__))
    lib = os.path.abspath(lt.library_path())
    print("loratune %s from %s" % (lt.__version__, pkg))
    print("libloratune %s from %s" % (lt.version(), lib))
    problems = []
    if not pkg.startswith(os.path.abspath(sys.prefix) + os.sep):
        problems.append("the package %s is not inside this environment (%s)" % (pkg, sys.prefix))
    if os.path.dirname(lib) != pkg:
        problems.append("the library %s is not the one inside the package (%s)" % (lib, pkg))
    if lt.__version__ != want_version or lt.version() != want_version:
        problems.append("version %s (package) / %s (library), expected %s (CMakeLists.txt)"
                        % (lt.__version__, lt.version(), want_version))
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        return 1

    tok = lt.Tokenizer(model_dir)
    model = lt.Model(model_dir, device="cpu", max_seq_len=128)
    model.add_lora(r=8, alpha=16, dropout=0.1, targets="all", seed=3407)
    ds = lt.Dataset(tok, path=data, max_seq_len=64)
    losses = [m.loss for m in lt.Trainer(model, ds, batch_size=2, grad_accum=1, max_steps=2,
                                         warmup_steps=1, lr=1e-3)]
    print("trained %d steps, loss %s" % (len(losses), " ".join("%.4f" % x for x in losses)))
    if len(losses) != 2 or not all(math.isfinite(x) and x > 0 for x in losses):
        print("FAILED: expected 2 steps with finite positive losses")
        return 1
    model.save_adapter(os.path.join(out, "lora_model"), overwrite=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not os.path.exists(os.path.join(out, "lora_model", name)):
            print("FAILED: no %s written" % name)
            return 1
    print("installed package: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
