#!/usr/bin/env python3
"""families_gguf_confident.py - every family's GGUF F16 / Q8_0 / Q4_K_M in llama.cpp gives loratune's
greedy tokens on a confident model, and so does the base F16 GGUF with loratune's GGUF LoRA adapter
(`export --format gguf-lora`, llama.cpp's --lora).

llama.cpp runs in one or both of two ways (each one found is run; LT_LLAMACPP_ENGINES=py or bin
picks one):
  py   llama-cpp-python (`import llama_cpp`): loratune's prompt ids in, the argmax of each step's
       logits out (KV cache), with llama.cpp's top-1 margins;
  bin  llama.cpp's own programs from a build given by LLAMA_BIN_DIR (the folder with, or with bin/
       holding, llama-completion - an older build's llama-cli - and llama-tokenize): llama-tokenize
       must give loratune's prompt ids, then `llama-completion -p PROMPT -n 16 --temp 0 --top-k 1
       [--lora ADAPTER]` must print the text of loratune's 16 greedy ids after the prompt.
Neither (as in CI): skip (77) with the reasons.

The tests/fixtures/families models have random weights: their greedy continuations are not
confident, so a quantized GGUF's greedy differs from the float model's for no fault of the
export. Here loratune itself makes each model confident first: `loratune train` on the CPU (f32,
no 4-bit base, lr 1e-2, 200 steps, a few seconds) fits a LoRA adapter to one short text repeated
(4 records) until the continuation of its first words is memorized (loss ~0.001). An adapter cannot
change the head or the final norm, and the fixtures' logits are too small for any adapter to be
confident (the tied fixtures' embedding std is 0.03: every logit stays within about +-1.5 and the
loss stops near 3.7, ln 256 = 5.5): the model copy's final norm weight is scaled so that the head's
rows times the norm have std HEAD_SCALE (0.3). A final soft-cap c bounds every logit to (-c, c):
there the target is HEAD_SCALE * c / 10 (gemma2's c = 3.0, where real Gemma 2 has 30: its loss
stops near 2.9, the top-1 margins near 1, of a 6 wide range). Then, per family:
  - loratune's greedy 16 tokens after the prompt (the text's first words) with the merged model
    (`loratune export --format merged`) and with the adapter unmerged must be equal;
  - `loratune export --format gguf --quant f16|q8_0|q4_k_m` of model + adapter loads in llama.cpp,
    and its 16 greedy tokens from the same prompt ids (KV cache, argmax of each step's logits) must
    equal loratune's ids; the smallest top-1 margin (top-1 minus top-2 logit) over the 16 steps is
    printed, and the F16 one must be >= MIN_MARGIN 0.5 (the model is confident, so that a
    difference would be the export's and not rounding's; the untrained fixtures and the
    configurations llama.cpp cannot run show margins below 0.1, the trained models 1 to 10);
  - the base model's F16 GGUF (no adapter) with `loratune export --format gguf-lora` of the adapter
    applied by llama.cpp gives the same 16 tokens, and the base alone (the control) must not, else
    the adapter was not exercised.
Vocabularies: the 256-token byte-level test BPE (tests/fixtures/families/tokenizer-bpe256), and for
phi3 the Llama-2 style SentencePiece vocabulary real Phi-3 ships (tests/tok/spm/llama2: <unk> <s>
</s>, byte fallback, <|endoftext|> <|user|> <|assistant|> <|end|>): llama.cpp's vocabulary loader
looks those tokens up for any model whose general.name contains "phi3" / "phi-3"; with them the
GGUF keeps general.name "phi3" (checked), so llama.cpp's Phi-3 rules run (the fixture's embedding
and head get rows for the wider vocabulary, the fixture's own rows kept).
What a GGUF cannot say is reported for the fixture as it is, not failed, and checked on a variant
whose config says it the way real checkpoints do, which must pass:
  mistral  sliding_window 5: llama.cpp's llama architecture has no sliding window
           (variant: sliding_window null, as Mistral-7B-v0.2+ / Mistral-Nemo);
  gemma2   query_pre_attn_scalar 24 != head_dim 16: llama.cpp derives the attention scale from the
           model size (variant: query_pre_attn_scalar = head_dim, as Gemma-2-2B / 9B; and one with
           Gemma 2's soft-caps too, final 30 and attention 50, see MORE_VARIANTS);
  phi3     sliding_window 6: llama.cpp's phi3 runs without its sliding window ("Phi SWA is
           currently disabled") (variant: sliding_window null, as Phi-3.5-mini's 262144 acts).
usage: [LLAMA_BIN_DIR=DIR] families_gguf_confident.py [FAMILY,...] (default all). Exit 0 pass, 1 fail,
77 skip (neither llama-cpp-python nor LLAMA_BIN_DIR, or no numpy / safetensors, as in CI)."""
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
    from safetensors.numpy import load_file, save_file
except Exception as e:  # noqa: BLE001
    print(f"SKIP: safetensors / numpy not importable ({e})")
    sys.exit(77)
try:
    from llama_cpp import Llama
except Exception as e:  # noqa: BLE001
    Llama, LLAMA_PY_WHY = None, str(e)
try:
    from gguf import GGUFReader
except Exception:  # noqa: BLE001
    GGUFReader = None

ROOT = os.environ.get("LT_REPO_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CLI = os.environ.get("LORATUNE_CLI") or os.path.join(os.environ.get("LT_BUILD_DIR", "build"), "loratune")
FIX = os.path.join(ROOT, "tests", "fixtures", "families")
BPE = os.path.join(FIX, "tokenizer-bpe256")
SPM = os.path.join(ROOT, "tests", "tok", "spm", "llama2")
FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"]
QUANTS = ["f16", "q8_0", "q4_k_m"]
N_NEW = 16
MIN_MARGIN = 0.5
HEAD_SCALE = float(os.environ.get("LT_HEAD_SCALE", "0.3"))
# the text memorized and the prompt: its words up to PROMPT_WORDS (cut before a space, so that the
# prompt's ids are the text's first ids with either vocabulary)
TEXT = "Quick zebras jump; five boxing wizards vex sly dogs near 0123456789 and then rest."
PROMPT_WORDS = 3
# fixture configs a GGUF cannot say: (why, the config change of the variant that must pass)
NOT_EXPRESSIBLE = {
    "mistral": ("sliding window 5: llama.cpp's llama architecture has none", {"sliding_window": None}),
    "gemma2": ("query_pre_attn_scalar 24 != head_dim: llama.cpp derives the scale from the model size",
               {"query_pre_attn_scalar": "head_dim"}),
    "phi3": ("sliding window 6: llama.cpp's phi3 runs without it", {"sliding_window": None}),
}
# more variants that must pass: gemma2 with Gemma 2's own soft-caps (final 30, attention 50), where
# a model can be confident in probability too (the fixture's final cap 3.0 holds every logit within
# +-3: the best top-1 probability of 256 tokens is then about e^3 / (e^3 + 255))
MORE_VARIANTS = {
    "gemma2": [("gemma2-caps30", {"query_pre_attn_scalar": "head_dim", "final_logit_softcapping": 30.0,
                                  "attn_logit_softcapping": 50.0})],
}
TRAIN = ["--device", "cpu", "--quant", "none", "--dtype", "f32", "--lr", "1e-2", "--warmup-steps", "10",
         "--scheduler", "cosine", "--max-steps", "200", "--batch-size", "1", "--grad-accum", "1", "--lora-r", "16",
         "--lora-alpha", "32", "--lora-dropout", "0", "--weight-decay", "0", "--optim", "adamw_torch",
         "--max-grad-norm", "1", "--gen-instruction", "", "--log-every", "50", "--seed", "1", "--format", "text"]


def cli(*args, what):
    r = subprocess.run([CLI, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r.stdout


def make_model(fam, change, tok, out):
    """The fixture model folder, with `change` applied to config.json, the final norm's weight
    scaled so that the head's logits can reach a confident size (HEAD_SCALE), and, for a vocabulary
    wider than the fixture's, rows appended to the embedding and head (seeded, the fixture's rows
    kept). Returns the final norm's scale."""
    src = os.path.join(FIX, fam)
    os.makedirs(out)
    cfg = json.load(open(os.path.join(src, "config.json")))
    for k, v in change.items():
        cfg[k] = cfg[v] if isinstance(v, str) else v
    ts = load_file(os.path.join(src, "model.safetensors"))
    head = ts.get("lm_head.weight", ts["model.embed_tokens.weight"])
    # Gemma stores its norm weights as w with 1 + w applied
    one = 1.0 if cfg["model_type"].startswith("gemma") else 0.0
    norm = ts["model.norm.weight"]
    # a final soft-cap c bounds the logits to (-c, c): the head stays within its near-linear range
    target = HEAD_SCALE * min(1.0, (cfg.get("final_logit_softcapping") or 10.0) / 10.0)
    scale = target / (float(head.std()) * float(np.abs(norm + one).mean()))
    ts["model.norm.weight"] = ((norm + one) * scale - one).astype(norm.dtype)
    tj = json.load(open(os.path.join(tok, "tokenizer.json"), encoding="utf-8"))
    n_ids = 1 + max(list(tj["model"]["vocab"].values()) + [a["id"] for a in tj["added_tokens"]])
    if n_ids > cfg["vocab_size"]:
        old, new = cfg["vocab_size"], (n_ids + 63) // 64 * 64
        cfg["vocab_size"] = new
        rng = np.random.default_rng(0)
        for k, v in ts.items():
            if v.ndim == 2 and v.shape[0] == old and ("embed_tokens" in k or "lm_head" in k):
                extra = rng.standard_normal((new - old, v.shape[1])) * float(v.std())
                ts[k] = np.concatenate([v, extra.astype(v.dtype)])
    save_file(ts, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
    shutil.copy(os.path.join(src, "generation_config.json"), out)
    return scale


def tokenize(tok, text):
    """The ids of `text` with the tokenizer's special tokens (--add-special: the BOS of phi3's
    SentencePiece vocabulary), as `loratune generate --prompt` encodes a prompt and as training
    records are encoded (TRL's tokenizer(text))."""
    r = subprocess.run([CLI, "tokenize", "--tokenizer", tok, "--add-special"], input=text, capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise RuntimeError(f"loratune tokenize failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return [int(t) for t in r.stdout.split()]


def lt_greedy(model, tok, prompt, adapter=None):
    """loratune's greedy N_NEW ids after the prompt."""
    args = ["generate", "--model", model, "--tokenizer", tok, "--prompt", prompt, "--template", "none", "--greedy",
            "--max-new-tokens", str(N_NEW), "--device", "cpu", "--quant", "none", "--ids"]
    if adapter:
        args += ["--adapter", adapter]
    return [int(t) for t in json.loads(cli(*args, what="loratune generate"))]


def continuation_text(tok, prompt_ids, new_ids):
    """The text new_ids add after the prompt, as llama.cpp prints it (token pieces in context):
    loratune's decode of prompt + new minus its decode of the prompt. (Not decode(new) alone: a
    SentencePiece decoder strips the first token's leading space.)"""
    def dec(ids):
        r = subprocess.run([CLI, "tokenize", "--tokenizer", tok, "--decode"], input=" ".join(map(str, ids)),
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"loratune tokenize --decode failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
        return r.stdout
    head, full = dec(prompt_ids), dec(list(prompt_ids) + list(new_ids))
    if not full.startswith(head):
        raise RuntimeError(f"the decoded prompt {head!r} does not begin the decoded prompt + continuation {full!r}")
    return full[len(head):]


def gguf_name(path):
    """general.name of a GGUF (None without the key or without the gguf package)."""
    if GGUFReader is None:
        return None
    f = GGUFReader(path).fields.get("general.name")
    return bytes(f.parts[f.data[0]]).decode() if f is not None else None


class PyEngine:
    """llama.cpp through llama-cpp-python: the prompt's ids in, N_NEW argmax ids out (KV cache, one
    token per step), with llama.cpp's own top-1 margins."""
    label = "llama-cpp-python"

    def check_prompt(self, path, prompt, ids):
        return None  # ids go in as they are

    def greedy(self, path, prompt, ids, lora=None):
        llm = Llama(model_path=path, n_ctx=128, n_batch=128, logits_all=True, n_threads=2, lora_path=lora,
                    verbose=os.environ.get("LT_VERBOSE") == "1")
        llm.eval(list(ids))
        out, margin = [], float("inf")
        for _ in range(N_NEW):
            s = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            if not np.isfinite(s).all():
                raise RuntimeError(f"{path}: non-finite logits in llama.cpp")
            top2 = np.partition(s, -2)[-2:]
            margin = min(margin, float(top2[1] - top2[0]))
            t = int(np.argmax(s))
            out.append(t)
            llm.eval([t])
        name = llm.metadata.get("general.name")
        del llm
        return out, margin, name

    def want(self, ref_ids, ref_text):
        return ref_ids


class BinEngine:
    """llama.cpp's own programs, as a user runs them: llama-completion (or an older build's llama-cli)
    -p PROMPT -n N_NEW with greedy sampling (--temp 0 --top-k 1), --lora for an adapter, the text it
    prints compared with the text of loratune's greedy ids after the prompt (continuation_text);
    llama-tokenize checks first that llama.cpp's prompt ids are loratune's (else the texts would
    differ for the tokenizer's sake). No margins."""
    label = "llama.cpp bin"
    MARK = "[[lt-end-of-output]]"

    def __init__(self, completion, tokenizer):
        self.completion, self.tokenizer = completion, tokenizer

    @staticmethod
    def find():
        d = os.environ.get("LLAMA_BIN_DIR")
        if not d:
            return None, "LLAMA_BIN_DIR is not set"
        for cand in (os.path.join(d, "bin"), d):
            tk = os.path.join(cand, "llama-tokenize")
            for prog in ("llama-completion", "llama-cli"):
                c = os.path.join(cand, prog)
                if os.access(c, os.X_OK) and os.access(tk, os.X_OK):
                    return BinEngine(c, tk), None
        return None, f"LLAMA_BIN_DIR {d} has no llama-completion (or llama-cli) and llama-tokenize"

    def run(self, args, what):
        r = subprocess.run(args, capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"{what} failed ({r.returncode}): {r.stderr.decode(errors='replace').strip()[-1500:]}")
        return r.stdout.decode(errors="replace")

    def check_prompt(self, path, prompt, ids):
        """None when llama.cpp's prompt ids (llama-tokenize with the GGUF's own add_bos_token, as
        llama-completion encodes -p) are loratune's (`loratune generate --prompt`: the tokenizer's
        special tokens, BOS for phi3's SentencePiece vocabulary, none for the byte-level BPE)."""
        out = self.run([self.tokenizer, "-m", path, "-p", prompt, "--ids", "--log-disable"], "llama-tokenize")
        got = json.loads(out.strip().splitlines()[-1])
        if got != list(ids):
            return f"llama.cpp's prompt ids {got} != loratune's {list(ids)}"
        return None

    def greedy(self, path, prompt, ids, lora=None):
        args = [self.completion, "-m", path, "-p", prompt, "-n", str(N_NEW), "--temp", "0", "--top-k", "1", "-no-cnv",
                "--no-display-prompt", "-t", "2", "-c", "128", "-s", "1", "--no-warmup"]
        if lora:
            args += ["--lora", lora]
        # llama.cpp's logger prints from a thread of its own and is not flushed at exit (common/log.cpp
        # leaks it on purpose): a tiny model's run often ends (status 0) before its text was printed
        # (here 1 run in 4 lost its tail, under load nearly all). So it runs interactive (-i): after the
        # N_NEW tokens it prints --in-prefix MARK and waits for input; MARK read means the text before
        # it is whole, then stdin closes (EOF: it exits).
        args += ["-i", "--in-prefix", self.MARK, "--simple-io"]
        what = f"{os.path.basename(self.completion)} on {os.path.basename(path)}"
        with tempfile.TemporaryFile() as err:
            p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
            buf, deadline, mark = b"", time.time() + 300, self.MARK.encode()
            while mark not in buf and time.time() < deadline:
                r, _, _ = select.select([p.stdout], [], [], 1.0)
                if r:
                    chunk = os.read(p.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    buf += chunk
            p.stdin.close()
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()
            err.seek(0)
            tail = err.read().decode(errors="replace").strip()[-1500:]
        if mark not in buf:
            raise RuntimeError(f"{what}: no end mark in its output (status {p.returncode}): {buf!r}\n{tail}")
        # a byte-level token may print part of a UTF-8 sequence: U+FFFD, as loratune prints it
        out = buf[:buf.index(mark)].decode(errors="replace")
        return out, None, gguf_name(path)

    def want(self, ref_ids, ref_text):
        return ref_text


def check_case(tmp, fam, label, change, must_pass, engines):
    """Returns the number of failures of one model (the fixture as it is or a variant)."""
    tok = SPM if fam == "phi3" else BPE
    # the model folder's name is what the GGUF's general.name says (llama.cpp keys phi3 rules on it)
    model = os.path.join(tmp, label)
    scale = make_model(fam, change, tok, model)
    data = os.path.join(tmp, label + ".jsonl")
    with open(data, "w") as f:
        for _ in range(4):
            f.write(json.dumps({"text": TEXT}) + "\n")
    run = os.path.join(tmp, label + "-run")
    t0 = time.time()
    cli("train", "--model", model, "--tokenizer", tok, "--data", data, "--output", run, *TRAIN,
        what=f"{label}: loratune train")
    t_train = time.time() - t0
    loss = json.loads(open(os.path.join(run, "log.jsonl")).read().splitlines()[-1]).get("loss")
    prompt = " ".join(TEXT.split(" ")[:PROMPT_WORDS])
    ids, full = tokenize(tok, prompt), tokenize(tok, TEXT)
    if full[:len(ids)] != ids:
        raise RuntimeError(f"{label}: the prompt's ids {ids} are not the text's first ids {full[:len(ids)]}")
    merged = os.path.join(tmp, label + "-merged")
    cli("export", "--model", model, "--adapter", run, "--tokenizer", tok, "--format", "merged", "--output", merged,
        "--device", "cpu", what=f"{label}: merged export")
    ref = lt_greedy(merged, tok, prompt)
    ref_adapter = lt_greedy(model, tok, prompt, adapter=run)
    ref_text = continuation_text(tok, ids, ref) if any(isinstance(e, BinEngine) for e in engines) else None
    want = full[len(ids):len(ids) + N_NEW]
    bad = 0
    tag = "" if must_pass else " (reported, not failed: " + NOT_EXPRESSIBLE[fam][0] + ")"
    print(f"{label}: final norm x{scale:.2f}, trained in {t_train:.1f} s to loss {loss:.3f}; prompt {len(ids)} ids; "
          f"loratune greedy {N_NEW}: merged {'==' if ref == ref_adapter else '!='} adapter unmerged, "
          f"{'==' if ref == want else '!='} the memorized text" + (f": {ref_text!r}" if ref_text is not None else ""))
    # the merged model is the adapter's, and the training worked (a precondition of the GGUF checks)
    if len(ref) != N_NEW or ref != ref_adapter or (must_pass and ref != want):
        print(f"  FAIL {label}: loratune merged {ref}\n  adapter unmerged {ref_adapter}\n  memorized text {want}")
        bad += 1

    def verdict(eng, what, got, margin, name, need_margin):
        same = got == eng.want(ref, ref_text)
        ok = same and (not need_margin or margin is None or margin >= MIN_MARGIN)
        if fam == "phi3" and name is not None and name != label:  # llama.cpp's Phi-3 rules (keyed on the name) ran
            print(f"  FAIL {label}: general.name {name!r}, want {label!r}")
            ok = False
        mtxt = f", min top-1 margin {margin:.2f}" if margin is not None else ""
        print(f"{label}: {eng.label} {what}: greedy {N_NEW} {'equal' if same else 'differ'}{mtxt} "
              f"{('ok' if ok else 'FAIL') if must_pass else ('equal' if same else 'differs')}{tag}")
        if not same:
            print(f"  llama.cpp {got!r}\n  loratune  {eng.want(ref, ref_text)!r}")
        return 0 if ok or not must_pass else 1

    prompt_ok = {}
    for q in QUANTS:
        out = os.path.join(tmp, f"{label}-{q}.gguf")
        cli("export", "--model", model, "--adapter", run, "--tokenizer", tok, "--format", "gguf", "--quant", q,
            "--output", out, "--device", "cpu", "--no-modelfile", what=f"{label}: GGUF {q} export")
        for eng in engines:
            if eng.label not in prompt_ok:
                why = eng.check_prompt(out, prompt, ids)
                prompt_ok[eng.label] = why is None
                if why:
                    print(f"  FAIL {label}: {eng.label}: {why}")
                    bad += 1
            got, margin, name = eng.greedy(out, prompt, ids)
            bad += verdict(eng, q, got, margin, name, q == "f16")
        os.remove(out)
    # the unmerged base F16 GGUF with loratune's GGUF LoRA adapter (llama.cpp applies A and B at run
    # time), and the base alone as the control: it must differ, else the adapter was not exercised
    base = os.path.join(tmp, f"{label}-base-f16.gguf")
    lora = os.path.join(tmp, f"{label}-lora.gguf")
    cli("export", "--model", model, "--tokenizer", tok, "--format", "gguf", "--quant", "f16", "--output", base,
        "--device", "cpu", "--no-modelfile", what=f"{label}: base GGUF f16 export")
    cli("export", "--model", model, "--adapter", run, "--tokenizer", tok, "--format", "gguf-lora", "--output", lora,
        "--device", "cpu", what=f"{label}: gguf-lora export")
    for eng in engines:
        got, margin, name = eng.greedy(base, prompt, ids, lora=lora)
        bad += verdict(eng, "f16 + gguf-lora", got, margin, name, True)
        ctl, _, _ = eng.greedy(base, prompt, ids)
        differs = ctl != eng.want(ref, ref_text)
        print(f"{label}: {eng.label} control, base f16 without the adapter: greedy {N_NEW} "
              f"{'differs (ok)' if differs else 'EQUAL: the adapter was not exercised'}")
        if not differs and must_pass:
            bad += 1
    os.remove(base)
    os.remove(lora)
    return bad


def main():
    if not os.path.exists(CLI) and not shutil.which(CLI):
        print(f"SKIP: no loratune command at {CLI}")
        return 77
    engines, why = [], []
    want = os.environ.get("LT_LLAMACPP_ENGINES", "py,bin").split(",")
    if Llama is not None and "py" in want:
        engines.append(PyEngine())
    elif Llama is None:
        why.append(f"llama_cpp (llama-cpp-python) not importable ({LLAMA_PY_WHY})")
    be, bwhy = BinEngine.find()
    if be and "bin" in want:
        engines.append(be)
    elif bwhy:
        why.append(bwhy)
    if not engines:
        print("SKIP: no llama.cpp to run: " + "; ".join(why))
        return 77
    print("llama.cpp through: " + ", ".join(e.label + (f" ({e.completion})" if isinstance(e, BinEngine) else "")
                                             for e in engines))
    fams = sys.argv[1].split(",") if len(sys.argv) > 1 else FAMILIES
    bad = 0
    with tempfile.TemporaryDirectory(prefix="lt_gguf_conf_") as tmp:
        for fam in fams:
            try:
                if fam in NOT_EXPRESSIBLE:
                    check_case(tmp, fam, fam, {}, must_pass=False, engines=engines)
                    bad += check_case(tmp, fam, fam + "-variant", NOT_EXPRESSIBLE[fam][1], must_pass=True, engines=engines)
                else:
                    bad += check_case(tmp, fam, fam, {}, must_pass=True, engines=engines)
                for label, change in MORE_VARIANTS.get(fam, []):
                    bad += check_case(tmp, fam, label, change, must_pass=True, engines=engines)
            except Exception as e:  # noqa: BLE001
                print(f"FAIL {fam}: {e}")
                bad += 1
    print("families_gguf_confident:", "FAIL" if bad else "ok", f"({bad} failure{'s' if bad != 1 else ''})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
