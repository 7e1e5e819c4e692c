#!/usr/bin/env python3
"""tiny_model.py - makes the small random Qwen2 model the binding tests and the notebook's smoke
mode train: `loratune init-random --config assets/tiny-qwen2/config.json --tokenizer assets/qwen2-tokenizer`. Usage: tiny_model.py OUT_DIR (prints OUT_DIR); exits 77 when
the command or the config is missing. Reuses OUT_DIR when it already holds a model.
"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("LT_REPO_ROOT") or os.path.dirname(os.path.dirname(HERE))


def cli_path():
    cli = os.environ.get("LORATUNE_CLI")
    if cli and os.path.exists(cli):
        return cli
    build = os.environ.get("LT_BUILD_DIR") or os.path.join(ROOT, "build")
    cand = os.path.join(build, "loratune")
    return cand if os.path.exists(cand) else shutil.which("loratune")


def make(out_dir):
    """The tiny model in out_dir (made once). Raises RuntimeError saying what is missing."""
    if os.path.exists(os.path.join(out_dir, "model.safetensors")) and os.path.exists(
            os.path.join(out_dir, "tokenizer.json")):
        return out_dir
    config = os.path.join(ROOT, "assets", "tiny-qwen2", "config.json")
    cli = cli_path()
    if not os.path.exists(config):
        raise RuntimeError("missing %s (the tiny model's config)" % config)
    if not cli:
        raise RuntimeError("the loratune command was not found (set LORATUNE_CLI)")
    # Made in a fresh folder and renamed into place: tests running at once may all ask for it.
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".tiny-", dir=parent)
    try:
        made = os.path.join(work, "model")
        r = subprocess.run([cli, "init-random", "--config", config, "--output", made, "--seed", "3407",
                            "--tokenizer", os.path.join(ROOT, "assets", "qwen2-tokenizer")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise RuntimeError("loratune init-random failed (%d): %s" % (r.returncode, r.stdout.strip()))
        try:
            os.rename(made, out_dir)
        except OSError:
            if not os.path.exists(os.path.join(out_dir, "model.safetensors")):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: tiny_model.py OUT_DIR", file=sys.stderr)
        sys.exit(2)
    try:
        print(make(sys.argv[1]))
    except RuntimeError as e:
        print("tiny_model.py: %s" % e, file=sys.stderr)
        sys.exit(77)
