#!/usr/bin/env python3
"""gguf_compare.py - compares two GGUF files tensor by tensor with the gguf package: same
names, shapes and types, and the fraction of tensors (and of bytes) that are identical.

usage: gguf_compare.py A.gguf B.gguf [--min-identical 1.0]
Exit status 0 when the identical-tensor fraction reaches --min-identical, 1 otherwise,
77 when gguf/numpy are missing.
"""
import argparse
import sys

try:
    import numpy as np
    from gguf import GGUFReader
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)


def tensors(path):
    r = GGUFReader(path)
    return {t.name: t for t in r.tensors}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--min-identical", type=float, default=1.0)
    a = ap.parse_args()
    ta, tb = tensors(a.a), tensors(a.b)
    ok = True
    if set(ta) != set(tb):
        print("tensor names differ:", sorted(set(ta) ^ set(tb)))
        ok = False
    same = total = 0
    same_bytes = total_bytes = 0
    for name in sorted(set(ta) & set(tb)):
        x, y = ta[name], tb[name]
        if x.tensor_type != y.tensor_type or list(x.shape) != list(y.shape):
            print(f"{name}: {x.tensor_type.name}{list(x.shape)} vs {y.tensor_type.name}{list(y.shape)}")
            ok = False
            total += 1
            continue
        bx = np.asarray(x.data).view(np.uint8).ravel()
        by = np.asarray(y.data).view(np.uint8).ravel()
        total += 1
        total_bytes += bx.size
        eq = int((bx == by).sum()) if bx.size == by.size else 0
        same_bytes += eq
        if bx.size == by.size and eq == bx.size:
            same += 1
        else:
            print(f"{name} ({x.tensor_type.name}): {bx.size - eq} of {bx.size} bytes differ")
    frac = same / total if total else 0.0
    print(f"identical tensors: {same}/{total} ({100 * frac:.2f}%), identical bytes: "
          f"{100 * same_bytes / max(total_bytes, 1):.4f}%")
    return 0 if ok and frac >= a.min_identical else 1


if __name__ == "__main__":
    sys.exit(main())
