#!/usr/bin/env python3
"""run_notebook.py - executes examples/colab/loratune_qwen2_alpaca.ipynb cell by cell with
nbclient in its smoke mode (LORATUNE_SMOKE=1: the tiny random model, the bundled tokenizer and
data, 2 steps on the CPU), then checks what it wrote. Skips (77) when nbclient / nbformat /
ipykernel are not installed (pip install nbclient nbformat ipykernel).
"""
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("LT_REPO_ROOT") or os.path.dirname(os.path.dirname(HERE))
NOTEBOOK = os.path.join(ROOT, "examples", "colab", "loratune_qwen2_alpaca.ipynb")

try:
    import ipykernel  # noqa: F401
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
except ImportError as e:
    print("skipped: %s (pip install nbclient nbformat ipykernel)" % e)
    sys.exit(77)

# LT_NOTEBOOK_INSTALLED=1 (tests/packaging/run_pip.sh): the pip-installed package, found by
# the kernel's python alone: no LORATUNE_LIBRARY, no bindings/python on PYTHONPATH.
INSTALLED = os.environ.get("LT_NOTEBOOK_INSTALLED") == "1"
for var in ("LORATUNE_CLI",) if INSTALLED else ("LORATUNE_LIBRARY", "LORATUNE_CLI"):
    if not os.environ.get(var):
        print("skipped: %s is not set (run through ctest)" % var)
        sys.exit(77)
config = os.path.join(ROOT, "assets", "tiny-qwen2", "config.json")
if not os.path.exists(config):
    print("skipped: %s is missing" % config)
    sys.exit(77)

os.environ["LORATUNE_SMOKE"] = "1"
os.environ["LT_REPO_ROOT"] = ROOT
if not INSTALLED:
    pp = os.path.join(ROOT, "bindings", "python")
    os.environ["PYTHONPATH"] = pp + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
work = tempfile.mkdtemp(prefix="loratune-colab-")
nb = nbformat.read(NOTEBOOK, as_version=4)
client = NotebookClient(nb, timeout=400, kernel_name="python3", resources={"metadata": {"path": work}})
try:
    client.execute()
except CellExecutionError as e:
    print("FAILED: a cell raised:\n%s" % e)
    sys.exit(1)
finally:
    nbformat.write(nb, os.path.join(work, "executed.ipynb"))  # for a look at the outputs


def text_of(cell):
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o.get("text", ""))
        elif "data" in o:
            out.append(o["data"].get("text/plain", ""))
    return "".join(out)


code = [c for c in nb.cells if c.cell_type == "code"]
errors = [c for c in code if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
failures = []
if errors:
    failures.append("%d cells ended in an error" % len(errors))
if any(c.get("execution_count") is None for c in code):
    failures.append("some cells did not run")
train = [c for c in code if "trainer.train()" in c.source]
if not train or text_of(train[0]).count("'loss': ") != 2:
    failures.append("the training cell did not log 2 steps: %r" % (text_of(train[0])[-500:] if train else None))
for path in ("lora_model/adapter_config.json", "lora_model/adapter_model.safetensors", "lora_model/tokenizer.json",
             "model/Modelfile", "outputs"):
    if not os.path.exists(os.path.join(work, path)):
        failures.append("missing %s" % path)
ggufs = [f for f in os.listdir(os.path.join(work, "model"))] if os.path.isdir(os.path.join(work, "model")) else []
if not any(f.endswith(".gguf") for f in ggufs):
    failures.append("no GGUF in model/: %r" % ggufs)
if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("notebook: %d code cells ran top to bottom in %s" % (len(code), work))
