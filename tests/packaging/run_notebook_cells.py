#!/usr/bin/env python3
"""run_notebook_cells.py - runs a notebook's code cells in order in this Python process, without
Jupyter (for machines that lack nbclient/ipykernel, such as the offline GPU machine): one shared
namespace, the current directory as the notebook's, and a cell's last expression printed as
IPython would show it. Stops at the first cell that raises.

Usage: run_notebook_cells.py NOTEBOOK.ipynb [WORK_DIR]
"""
import ast
import json
import os
import sys
import time


def cell_sources(path):
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    for cell in nb["cells"]:
        if cell.get("cell_type") == "code":
            src = cell["source"]
            yield "".join(src) if isinstance(src, list) else src


def run_cell(src, ns, name):
    tree = ast.parse(src, name)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, name, "exec"), ns)
    if last is not None:
        value = eval(compile(last, name, "eval"), ns)
        if value is not None:
            print(repr(value))


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    notebook = os.path.abspath(sys.argv[1])
    if len(sys.argv) == 3:
        os.makedirs(sys.argv[2], exist_ok=True)
        os.chdir(sys.argv[2])
    ns = {"__name__": "__main__"}
    for i, src in enumerate(cell_sources(notebook)):
        print("---- cell %d" % i, flush=True)
        t = time.time()
        try:
            run_cell(src, ns, "<cell %d>" % i)
        except Exception:
            import traceback
            traceback.print_exc()
            print("FAILED: code cell %d raised" % i)
            return 1
        sys.stdout.flush()
        print("---- cell %d: %.1f s" % (i, time.time() - t), flush=True)
    print("notebook: every code cell ran in %s" % os.getcwd())
    return 0


if __name__ == "__main__":
    sys.exit(main())
