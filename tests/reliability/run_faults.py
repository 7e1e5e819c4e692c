#!/usr/bin/env python3
"""run_faults.py SHIM - the fault-injection suite of `loratune train` and `loratune export` (CPU).

Every case runs the real command on a tiny random Qwen2 model (tests/export/make_tiny_model.py)
and interrupts or fails it at one point: SIGINT / SIGTERM / SIGKILL at a step or inside a save
(the LD_PRELOAD shim SHIM pauses the process at the Nth write/rename of a file and the driver
sends the signal there), ENOSPC / EIO from write, fsync or rename (the shim again), a NaN weight
in the base model, a huge learning rate. For every case it checks:
  exit     the exit status (130 SIGINT, 143 SIGTERM, -9 killed, 1 with a message on failure)
  previous the adapter (or GGUF) that was there before is byte-identical and still loads and
           generates the same greedy ids (its argmax logits)
  finite   no file under its final name holds a NaN or Inf (safetensors, GGUF, log.jsonl)
  whole    no file under its final name is half-written (every safetensors / JSON / JSONL / GGUF
           parses completely); temporaries exist only after a SIGKILL and the next start removes them
  resume   --resume from the newest checkpoint continues to the same losses as the uninterrupted
           run (every logged step within 1e-6) and the same final adapter (within 1e-6)
and prints a table: case, exit code, checks passed. Exit 0 when every check passes, 77 (skip)
without numpy / safetensors.
"""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
    from safetensors.numpy import load_file, save_file
except ImportError as e:  # CI installs them (scripts/install-deps.sh)
    print("skip: numpy / safetensors not importable (%s)" % e)
    sys.exit(77)

SHIM = os.path.abspath(sys.argv[1])
CLI = os.environ["LORATUNE_CLI"]
ROOT = os.environ["LT_REPO_ROOT"]
TEMP_RE = re.compile(r"\.(tmp|old)-\d+-\d+|\.tmp\.\d+$|^\.adapter-pending")
STEPS = 8

results = []  # (case, exit, passed, total, notes)


def sh(args, env=None, check=False, timeout=120):
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    sanitizer_check(args, p.stderr)
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s\n%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
    return p


def base_env():
    env = dict(os.environ)
    # an ASan build of the command accepts a preloaded library that is not its runtime
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").lstrip(":")
    return env


def run_faulty(args, fault="", signals=(), timeout=120):
    """Runs the CLI under the shim; signals: [(n_marks, signal)]: send `signal` once the shim has
    paused `n_marks` times. Returns (returncode, stdout, stderr)."""
    env = base_env()
    mark = tempfile.mktemp(prefix="lt_mark_")
    if fault:
        env["LD_PRELOAD"] = SHIM
        env["LT_FAULT"] = fault
        env["LT_FAULT_MARK"] = mark
    p = subprocess.Popen([CLI] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    pending = list(signals)
    t0 = time.time()
    while pending and p.poll() is None and time.time() - t0 < timeout:
        n = 0
        if os.path.exists(mark):
            with open(mark) as f:
                n = sum(1 for _ in f)
        if n >= pending[0][0]:
            time.sleep(0.05)
            p.send_signal(pending.pop(0)[1])
        else:
            time.sleep(0.01)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        err += "\n(timed out)"
    if os.path.exists(mark):
        os.unlink(mark)
    sanitizer_check(args, err)
    return p.returncode, out, err


SANITIZER_RE = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:")
sanitizer_reports = []


def sanitizer_check(args, err):
    """A sanitizer report in any run (an ASan/UBSan build) fails the suite, whatever the exit code."""
    if SANITIZER_RE.search(err or ""):
        sanitizer_reports.append("%s:\n%s" % (" ".join(args[:3]), err[-2000:]))


# ---- checks of files ----

def gguf_ok(path):
    """A GGUF parses to its end (header, KV, tensor infos, every tensor's bytes present) and its F32
    and F16 tensors are finite."""
    try:
        from gguf import GGUFReader
    except ImportError:
        GGUFReader = None
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"GGUF":
        return False, "bad magic"
    if GGUFReader is None:
        return True, ""
    try:
        r = GGUFReader(path)
        for t in r.tensors:
            if t.tensor_type.name in ("F32", "F16"):
                a = np.asarray(t.data, dtype=np.float32)
                if not np.all(np.isfinite(a)):
                    return False, "tensor %s is not finite" % t.name
    except Exception as e:  # truncated or malformed
        return False, "unreadable: %s" % e
    return True, ""


def scan(root, allow_temps=False):
    """(problems, temporaries): files under final names that do not parse or hold non-finite values."""
    problems, temps = [], []
    for dirpath, dirnames, files in os.walk(root):
        for name in dirnames + files:
            if TEMP_RE.search(name):
                temps.append(os.path.relpath(os.path.join(dirpath, name), root))
        if any(TEMP_RE.search(part) for part in os.path.relpath(dirpath, root).split(os.sep)):
            continue  # inside a temporary folder: not under a final name
        for name in files:
            if TEMP_RE.search(name):
                continue
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            try:
                if name.endswith(".safetensors"):
                    for k, v in load_file(p).items():
                        if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
                            problems.append("%s: %s not finite" % (rel, k))
                elif name.endswith(".json"):
                    json.load(open(p))
                elif name.endswith(".jsonl"):
                    for line in open(p):
                        row = json.loads(line)
                        for k, v in row.items():
                            if v is None or (isinstance(v, float) and not np.isfinite(v)):
                                problems.append("%s: %s is %r" % (rel, k, v))
                elif name.endswith(".gguf"):
                    ok, why = gguf_ok(p)
                    if not ok:
                        problems.append("%s: %s" % (rel, why))
            except Exception as e:
                problems.append("%s: does not parse: %s" % (rel, e))
    if temps and not allow_temps:
        problems.append("temporaries left: %s" % temps)
    return problems, temps


def log_losses(path, rows=None):
    out = {}
    if os.path.exists(path):
        for line in open(path):
            r = json.loads(line)
            out[r["step"]] = r["loss"]
            if rows is not None:
                rows.append(r["step"])
    return out


def adapter_tensors(d):
    return load_file(os.path.join(d, "adapter_model.safetensors"))


def same_bytes(a, b):
    return open(a, "rb").read() == open(b, "rb").read()


# ---- the case runner ----

class Case:
    def __init__(self, name):
        self.name, self.code, self.passed, self.total, self.notes = name, None, 0, 0, []

    def check(self, cond, what):
        self.total += 1
        if cond:
            self.passed += 1
        else:
            self.notes.append(what)
        return cond

    def done(self):
        results.append(self)
        status = "ok" if self.passed == self.total else "FAILED: " + "; ".join(self.notes)
        print("%-34s exit %-5s %d/%d %s" % (self.name, self.code, self.passed, self.total, status), flush=True)


def main():
    work = tempfile.mkdtemp(prefix="lt_faults_")
    try:
        suite(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("| case | exit code | checks passed |")
    print("|---|---|---|")
    for c in results:
        print("| %s | %s | %d/%d |" % (c.name, c.code, c.passed, c.total))
    bad = [c for c in results if c.passed != c.total]
    total = sum(c.total for c in results)
    print("\n%d cases, %d checks, %d failed cases, %d sanitizer reports" % (len(results), total, len(bad),
                                                                        len(sanitizer_reports)))
    for r in sanitizer_reports[:3]:
        print("SANITIZER:", r)
    return 1 if bad or sanitizer_reports else 0


def suite(work):
    model = os.path.join(work, "model")
    sh([sys.executable, os.path.join(ROOT, "tests", "export", "make_tiny_model.py"), model, "--small-vocab", "1000",
        "--hidden", "64", "--inter", "128", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--dtype", "f32"],
       check=True)
    data = os.path.join(work, "data.jsonl")
    with open(data, "w") as f:
        for i in range(24):
            n = 6 + i % 9
            f.write(json.dumps({"input_ids": [3 + (i * 37 + k * 11) % 990 for k in range(n)]}) + "\n")

    def train_args(out, *extra, model_dir=model):
        return ["train", "--model", model_dir, "--data", data, "--output", out, "--max-steps", str(STEPS),
                "--batch-size", "2", "--grad-accum", "2", "--lr", "2e-3", "--warmup-steps", "1", "--lora-r", "4",
                "--lora-dropout", "0.1", "--device", "cpu", "--optim", "adamw_torch", "--gen-instruction", "",
                "--log-every", "1", "--save-every", "2", "--seed", "11"] + list(extra)

    def ids_of(adapter_dir):
        p = sh([CLI, "generate", "--model", model, "--adapter", adapter_dir, "--prompt", "abc", "--ids",
                "--max-new-tokens", "5", "--device", "cpu"], env=base_env())
        return p.stdout.strip() if p.returncode == 0 else "error: " + p.stderr.strip()[-300:]

    # the uninterrupted reference run, and a "previous" adapter that every case starts from
    ref = os.path.join(work, "ref")
    sh([CLI] + train_args(ref), env=base_env(), check=True)
    ref_losses = log_losses(os.path.join(ref, "log.jsonl"))
    assert len(ref_losses) == STEPS, ref_losses
    ref_ad = adapter_tensors(ref)
    ref_ids = ids_of(ref)
    prev = os.path.join(work, "prev")
    sh([CLI] + train_args(prev, "--seed", "5", "--max-steps", "2", "--save-every", "0"), env=base_env(), check=True)
    prev_ids = ids_of(prev)

    def fresh_out(name):
        out = os.path.join(work, "case%02d with space" % len(results), "out")  # a space: quoting is exercised
        os.makedirs(out)
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy(os.path.join(prev, f), out)
        return out

    def check_previous(c, out):
        c.check(same_bytes(os.path.join(out, "adapter_model.safetensors"), os.path.join(prev, "adapter_model.safetensors"))
                and same_bytes(os.path.join(out, "adapter_config.json"), os.path.join(prev, "adapter_config.json")),
                "previous adapter changed")
        c.check(ids_of(out) == prev_ids, "previous adapter does not load / generate as before")

    def check_files(c, out, killed=False):
        problems, temps = scan(out, allow_temps=killed)
        c.check(not problems, "files: %s" % problems[:3])
        return temps

    def checkpoints(out):
        return sorted((int(n.split("-")[1]) for n in os.listdir(out) if re.fullmatch(r"checkpoint-\d+", n)))

    def check_resume(c, out, from_step=None, missing_rows=()):
        cks = checkpoints(out)
        if from_step is not None:
            c.check(from_step in cks, "checkpoint-%d missing (have %s)" % (from_step, cks))
        if not cks:
            c.check(False, "no checkpoint to resume from")
            return
        k = cks[-1] if from_step is None else from_step
        code, so, se = run_faulty(train_args(out, "--resume", os.path.join(out, "checkpoint-%d" % k)))
        if not c.check(code == 0, "resume exit %s: %s" % (code, se.strip()[-300:])):
            return
        c.check(not scan(out)[1], "temporaries left after the resume")
        rows = []
        got = log_losses(os.path.join(out, "log.jsonl"), rows)
        c.check(rows == sorted(set(rows)), "log.jsonl rows repeat or go back after the resume: %s" % rows)
        want_steps = [s for s in ref_losses if s not in missing_rows]
        diff = max([abs(got[s] - ref_losses[s]) for s in want_steps if s in got] or [0])
        c.check(all(s in got for s in want_steps) and diff <= 1e-6 and len(got) == len(want_steps),
                "resumed losses differ: steps %s, max diff %g" % (sorted(got), diff))
        ad = adapter_tensors(out)
        d = max(float(np.max(np.abs(ad[k] - ref_ad[k]))) for k in ref_ad)
        c.check(d <= 1e-6, "resumed final adapter differs by %g" % d)

    def stop_case(name, fault, sig_plan, want_code, ckpt, killed=False, prev_kept=True, resume_from=None,
                  missing_rows=(), expect_text=None):
        c = Case(name)
        out = fresh_out(name)
        code, so, se = run_faulty(train_args(out, "--overwrite"), fault, sig_plan)
        c.code = code
        c.check(code == want_code, "exit %s, want %s: %s" % (code, want_code, (so + se).strip()[-400:]))
        if expect_text:
            c.check(all(t in so + se for t in expect_text), "message lacks %s: %s" % (expect_text, (so + se)[-400:]))
        if ckpt is not None and want_code in (130, 143):
            c.check("--resume" in so and ("checkpoint-%d" % ckpt) in so, "no resume command naming checkpoint-%d" % ckpt)
        if prev_kept:
            check_previous(c, out)
        check_files(c, out, killed)
        check_resume(c, out, resume_from, missing_rows)
        c.done()

    # ---- signals at steps ----
    stop_case("SIGINT at step 3", "write:/log.jsonl$:3:pause", [(1, signal.SIGINT)], 130, 3, resume_from=3)
    stop_case("SIGTERM at step 5", "write:/log.jsonl$:5:pause", [(1, signal.SIGTERM)], 143, 5, resume_from=5)
    stop_case("SIGKILL at step 5", "write:/log.jsonl$:5:pause", [(1, signal.SIGKILL)], -9, None, killed=True,
              resume_from=2)  # an older checkpoint: log.jsonl's rows 3 and 4 are dropped, then logged again
    # ---- signals inside the saves ----
    stop_case("SIGINT in checkpoint save", "write:checkpoint-4.tmp-:1:pause", [(1, signal.SIGINT)], 130, 4,
              resume_from=4)
    stop_case("SIGKILL in checkpoint save", "write:checkpoint-4.tmp-:3:pause", [(1, signal.SIGKILL)], -9, None,
              killed=True, resume_from=2)
    stop_case("SIGKILL at checkpoint swap", "rename:checkpoint-4$:1:pause", [(1, signal.SIGKILL)], -9, None,
              killed=True, resume_from=2)
    stop_case("2nd SIGINT in stop checkpoint", "write:/log.jsonl$:3:pause;write:checkpoint-3.tmp-:2:pause",
              [(1, signal.SIGINT), (2, signal.SIGINT)], 130, None, killed=True, resume_from=2)
    stop_case("SIGKILL in final adapter write", "write:.adapter-pending.tmp-:1:pause", [(1, signal.SIGKILL)], -9,
              None, killed=True, resume_from=8)

    # killed between the two moves of a committed adapter: the loader sees the new adapter whole
    c = Case("SIGKILL between adapter moves")
    out = fresh_out(c.name)
    code, so, se = run_faulty(train_args(out, "--overwrite"), "rename:.adapter-pending/adapter_config.json:1:pause",
                              [(1, signal.SIGKILL)])
    c.code = code
    c.check(code == -9, "exit %s" % code)
    c.check(os.path.isdir(os.path.join(out, ".adapter-pending")), "no pending folder: the kill came elsewhere")
    c.check(ids_of(out) == ref_ids, "the committed adapter does not load as the new one")
    check_files(c, out, killed=True)
    check_resume(c, out, 8)
    c.check(not os.path.exists(os.path.join(out, ".adapter-pending")), "the next save did not finish the moves")
    c.done()

    # ---- failed writes ----
    stop_case("ENOSPC writing log.jsonl", "write:/log.jsonl$:3:fail:ENOSPC", [], 1, 3, resume_from=3, missing_rows=(3,),
              expect_text=["No space left", "checkpoint-3"])
    stop_case("ENOSPC writing a checkpoint", "write:checkpoint-4.tmp-:1:fail:ENOSPC", [], 1, None, resume_from=2,
              expect_text=["No space left", "checkpoint-4"])
    stop_case("EIO on fsync of the adapter", "fsync:.adapter-pending.tmp-:1:fail:EIO", [], 1, None, resume_from=8,
              expect_text=["Input/output error"])
    stop_case("EIO renaming a checkpoint", "rename:checkpoint-4$:1:fail:EIO", [], 1, None, resume_from=2,
              expect_text=["checkpoint-4"])

    # ---- non-finite values ----
    def poisoned_model(name, key, index, value):
        bad_model = os.path.join(work, name)
        shutil.copytree(model, bad_model)
        w = load_file(os.path.join(bad_model, "model.safetensors"))
        w[key] = w[key].copy()
        w[key].reshape(-1)[index] = value
        save_file(w, os.path.join(bad_model, "model.safetensors"), metadata={"format": "pt"})
        return bad_model

    # a NaN/Inf base weight is refused at load, naming the file and the tensor: in a projection
    # that NF4 quantizes (quantization would make it finite without a word) and in a norm (float)
    for case, key, value in (("NaN in an NF4-quantized projection", "model.layers.1.mlp.up_proj.weight", np.nan),
                             ("Inf in a norm weight (float)", "model.layers.0.input_layernorm.weight", np.inf)):
        c = Case(case)
        bad_model = poisoned_model("bad-%d" % len(results), key, 5, value)
        out = fresh_out(c.name)
        code, so, se = run_faulty(train_args(out, "--overwrite", model_dir=bad_model))
        c.code = code
        want = "model.safetensors: tensor '%s' holds 1 non-finite value" % key
        c.check(code == 1 and "LT_ERR_NONFINITE" in se and want in se, "exit %s: %s" % (code, se[-300:]))
        check_previous(c, out)
        check_files(c, out)
        c.done()

    # a finite but huge weight overflows the forward: a non-finite loss at step 1 stops the run
    c = Case("huge weight: non-finite loss")
    bad_model = poisoned_model("huge-model", "model.layers.0.input_layernorm.weight", 5, 1e30)
    out = fresh_out(c.name)
    code, so, se = run_faulty(train_args(out, "--overwrite", model_dir=bad_model))
    c.code = code
    c.check(code == 1 and "LT_ERR_NONFINITE" in se and "step 1" in se, "exit %s: %s" % (code, se[-300:]))
    check_previous(c, out)
    check_files(c, out)
    c.done()

    c = Case("huge learning rate (1e4)")
    out = fresh_out(c.name)
    code, so, se = run_faulty(train_args(out, "--overwrite", "--lr", "1e4", "--max-grad-norm", "0", "--max-steps", "40"))
    c.code = code
    c.check(code == 1 and "LT_ERR_NONFINITE" in se and "last good checkpoint" in se, "exit %s: %s" % (code, se[-300:]))
    m = re.search(r"last good checkpoint: (\S+?checkpoint-\d+)", se)
    c.check(m is None or os.path.isdir(m.group(1)), "the named checkpoint does not exist")
    check_previous(c, out)
    check_files(c, out)
    c.done()

    c = Case("failed resume into a new folder")
    new_out = os.path.join(work, "never", "out")
    code, so, se = run_faulty(train_args(new_out, "--resume", os.path.join(work, "no-such-checkpoint")))
    c.code = code
    c.check(code != 0 and "no-such-checkpoint" in se, "exit %s: %s" % (code, se[-300:]))
    c.check(not os.path.exists(os.path.join(work, "never")), "the folders the failed run created remain")
    c.done()

    c = Case("train into a used folder")
    out = fresh_out(c.name)
    code, so, se = run_faulty(train_args(out))
    c.code = code
    c.check(code == 2 and "--overwrite" in se, "exit %s: %s" % (code, se[-300:]))
    check_previous(c, out)
    c.done()

    # ---- export ----
    def export_args(adapter, out, *extra):
        return ["export", "--model", model, "--adapter", adapter, "--format", "gguf", "--quant", "q8_0",
                "--output", out, "--threads", "1"] + list(extra)

    exp = os.path.join(work, "exp")
    gguf = os.path.join(exp, "model.gguf")
    sh([CLI] + export_args(prev, gguf), env=base_env(), check=True)
    prev_gguf = open(gguf, "rb").read()

    def export_case(name, fault, sig_plan, want_code, killed=False, expect_text=None):
        c = Case(name)
        code, so, se = run_faulty(export_args(ref, gguf, "--overwrite"), fault, sig_plan)
        c.code = code
        c.check(code == want_code, "exit %s, want %s: %s" % (code, want_code, se.strip()[-300:]))
        if expect_text:
            c.check(all(t in se for t in expect_text), "message lacks %s: %s" % (expect_text, se[-300:]))
        c.check(open(gguf, "rb").read() == prev_gguf, "the previous GGUF changed")
        temps = check_files(c, exp, killed)
        if killed:
            code2, so2, se2 = run_faulty(export_args(ref, os.path.join(exp, "model.gguf"), "--overwrite"))
            c.check(code2 == 0 and not scan(exp)[1], "the next export did not clean up: %s %s" % (code2, scan(exp)[1]))
            c.check(gguf_ok(gguf)[0], "re-exported GGUF unreadable")
            with open(gguf, "wb") as f:  # back to the previous one for the next case
                f.write(prev_gguf)
        c.done()

    export_case("export: SIGINT mid-GGUF", "write:model.gguf.tmp-:3:pause", [(1, signal.SIGINT)], 130)
    export_case("export: SIGKILL mid-GGUF", "write:model.gguf.tmp-:3:pause", [(1, signal.SIGKILL)], -9, killed=True)
    export_case("export: ENOSPC in GGUF", "write:model.gguf.tmp-:2:fail:ENOSPC", [], 1, expect_text=["No space left"])
    export_case("export: EIO renaming GGUF", "rename:model.gguf$:1:fail:EIO", [], 1)

    c = Case("export: ENOSPC in merged folder")
    merged = os.path.join(work, "new", "merged")
    code, so, se = run_faulty(["export", "--model", model, "--adapter", ref, "--format", "merged", "--output", merged],
                              "write:model.safetensors.tmp-:2:fail:ENOSPC", [])
    c.code = code
    c.check(code == 1 and "No space left" in se, "exit %s: %s" % (code, se[-300:]))
    c.check(not os.path.exists(os.path.join(work, "new")), "the folders the failed export created remain")
    c.done()

    c = Case("export: NaN adapter refused")
    nan_ad = os.path.join(work, "nan-adapter")
    shutil.copytree(prev, nan_ad)
    t = load_file(os.path.join(nan_ad, "adapter_model.safetensors"))
    k = sorted(t)[0]
    t[k] = t[k].copy()
    t[k].flat[0] = np.inf
    save_file(t, os.path.join(nan_ad, "adapter_model.safetensors"), metadata={"format": "pt"})
    nan_out = os.path.join(work, "nan-export")
    ok_all = True
    for fmt, path in (("gguf", os.path.join(nan_out, "m.gguf")), ("merged", os.path.join(nan_out, "merged")),
                      ("peft", os.path.join(nan_out, "peft")), ("gguf-lora", os.path.join(nan_out, "l.gguf"))):
        code, so, se = run_faulty(["export", "--model", model, "--adapter", nan_ad, "--format", fmt, "--output", path])
        ok_all &= c.check(code == 1 and "LT_ERR_NONFINITE" in se and "lora_A" in se, "%s: exit %s: %s" % (fmt, code, se[-300:]))
        c.code = code
    c.check(not os.path.exists(nan_out), "files written for a NaN adapter: %s" % (os.listdir(nan_out) if os.path.exists(nan_out) else ""))
    c.done()

    c = Case("export: two GGUFs share a folder")
    shared = os.path.join(work, "shared")
    code1 = sh([CLI] + export_args(ref, os.path.join(shared, "a-q8_0.gguf")), env=base_env()).returncode
    p2 = sh([CLI, "export", "--model", model, "--adapter", ref, "--format", "gguf", "--quant", "f16", "--output",
             os.path.join(shared, "a-f16.gguf")], env=base_env())
    c.code = p2.returncode
    c.check(code1 == 0 and p2.returncode == 0, "exports failed: %s" % p2.stderr[-300:])
    mf1 = os.path.join(shared, "Modelfile")
    mf2 = os.path.join(shared, "a-f16.Modelfile")
    c.check(os.path.exists(mf1) and "FROM ./a-q8_0.gguf" in open(mf1).read(), "Modelfile of the first GGUF")
    c.check(os.path.exists(mf2) and "FROM ./a-f16.gguf" in open(mf2).read(), "Modelfile named after the second GGUF")
    c.check("a-f16.Modelfile" in p2.stderr, "the command does not name the Modelfile it wrote")
    c.done()

    init_random_cases(work)


def init_random_cases(work):
    """`loratune init-random` writes its folder whole or not at all: an existing non-empty folder
    only with --overwrite (and then the whole folder is replaced), ENOSPC and SIGKILL leave the
    previous folder as it was or no folder, the next start removes a killed run's temporary."""
    config = os.path.join(ROOT, "assets", "tiny-qwen2", "config.json")

    def init(out, seed, *extra, fault="", signals=()):
        return run_faulty(["init-random", "--config", config, "--output", out, "--seed", str(seed), "--dtype", "f32"]
                          + list(extra), fault, signals)

    def snapshot(d):
        if not os.path.isdir(d):
            return None
        return {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))}

    def temps_beside(d):
        parent = os.path.dirname(d)
        return [n for n in os.listdir(parent) if TEMP_RE.search(n)] if os.path.isdir(parent) else []

    base = os.path.join(work, "init")
    os.makedirs(base)
    prev_dir = os.path.join(base, "model")
    code, so, se = init(prev_dir, 1)
    prev = snapshot(prev_dir)
    assert code == 0 and prev and "model.safetensors" in prev, se

    c = Case("init-random: existing folder")
    code, so, se = init(prev_dir, 2)
    c.code = code
    c.check(code != 0 and "already exists" in se and "--overwrite" in se, "exit %s: %s" % (code, se[-300:]))
    c.check(snapshot(prev_dir) == prev, "the refused run changed the folder")
    empty = os.path.join(base, "empty")
    os.makedirs(empty)
    code, so, se = init(empty, 1)
    c.check(code == 0 and snapshot(empty) == prev, "an empty folder is not filled (exit %s: %s)" % (code, se[-300:]))
    other = os.path.join(base, "other")
    shutil.copytree(prev_dir, other)
    open(os.path.join(other, "stray.txt"), "w").write("x")
    code, so, se = init(other, 2, "--overwrite")
    got = snapshot(other) or {}
    c.check(code == 0 and "stray.txt" not in got and got.get("model.safetensors") not in (None, prev["model.safetensors"]),
            "--overwrite did not replace the whole folder (exit %s: %s)" % (code, se[-300:]))
    c.check(not temps_beside(other), "temporaries remain: %s" % temps_beside(other))
    c.done()

    c = Case("init-random: ENOSPC")
    new = os.path.join(base, "never", "model")
    code, so, se = init(new, 1, fault="write:model.safetensors.tmp-:2:fail:ENOSPC")
    c.code = code
    c.check(code == 1 and "No space left" in se, "exit %s: %s" % (code, se[-300:]))
    c.check(not os.path.exists(os.path.join(base, "never")), "the folders the failed run created remain")
    code, so, se = init(prev_dir, 2, "--overwrite", fault="write:model.safetensors.tmp-:2:fail:ENOSPC")
    c.check(code == 1 and snapshot(prev_dir) == prev, "the previous folder changed (exit %s)" % code)
    c.check(not temps_beside(prev_dir), "temporaries remain: %s" % temps_beside(prev_dir))
    c.done()

    for name, fault in (("init-random: SIGKILL mid-write", "write:model.safetensors.tmp-:3:pause"),
                        ("init-random: SIGKILL at the swap", "rename:/model$:1:pause")):
        c = Case(name)
        code, so, se = init(prev_dir, 2, "--overwrite", fault=fault, signals=[(1, signal.SIGKILL)])
        c.code = code
        c.check(code == -9, "exit %s: %s" % (code, se[-300:]))
        c.check(snapshot(prev_dir) == prev, "the previous folder changed")
        c.check(len(temps_beside(prev_dir)) == 1, "no temporary left by the kill: %s" % os.listdir(base))
        code, so, se = init(os.path.join(base, "model"), 3, "--overwrite")
        c.check(code == 0 and not temps_beside(prev_dir), "the next run did not remove the temporary: %s (%s)"
                % (temps_beside(prev_dir), se[-300:]))
        c.check((snapshot(prev_dir) or {}).get("model.safetensors") not in (None, prev["model.safetensors"]),
                "the next run did not write its folder")
        shutil.rmtree(prev_dir)
        shutil.copytree(os.path.join(base, "empty"), prev_dir)  # the seed-1 folder again
        c.done()


if __name__ == "__main__":
    sys.exit(main())
