#!/usr/bin/env python3
"""test_tok_chat.py - lt_tokenizer_apply_chat_template against jinja2 rendering the same template the
way transformers' apply_chat_template does (ImmutableSandboxedEnvironment with trim_blocks,
lstrip_blocks and loopcontrols; its tojson, raise_exception and strftime_now; messages, tools=None,
documents=None, add_generation_prompt and the special-token strings). Templates: the shipped
Qwen2 template, Qwen2.5, Llama-3, Llama-3.1, ChatML, a role-alternation template that raises, a
feature template, and templates in the form of the other families' (Qwen3 with its reasoning split,
Gemma 2 / Gemma 3, Phi-3, Mistral). Skips (77) when jinja2 is not importable."""
import json
import os
import shutil
import sys
import tempfile
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    print("SKIP: the Python package 'jinja2' is not installed")
    sys.exit(77)
from lt_tok_py import Lib, Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("LT_REPO_ROOT", os.path.join(HERE, "..", ".."))
TOKDIR = os.path.join(ROOT, "assets", "qwen2-tokenizer")


class TemplateError(Exception):
    pass


def hf_render(template, messages, add_generation_prompt, special):
    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    t = env.from_string(template)
    return t.render(messages=messages, tools=None, documents=None, add_generation_prompt=add_generation_prompt,
                    **special)


CONVERSATIONS = [
    [{"role": "user", "content": "你好"}],
    [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi there!"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And times 3, explain x?"}],
    [{"role": "user", "content": "Tell me a joke"}, {"role": "assistant", "content": "Why did the chicken…"},
     {"role": "user", "content": "Another"}, {"role": "assistant", "content": "No more jokes 😀"}],
    [{"role": "user", "content": "  leading and trailing spaces \n"},
     {"role": "assistant", "content": "quotes ' \" and {{ braces }} {% tags %} \\n not a newline"},
     {"role": "user", "content": "line1\nline2\r\n\ttabbed 中文 ١٢٣"}],
    [{"role": "user", "content": ""}],
    [{"role": "system", "content": "sys"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
     {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}, {"role": "user", "content": "u3"},
     {"role": "assistant", "content": "a3"}],
    [{"role": "user", "content": "Think first"},
     {"role": "assistant", "content": "<think>\nsome reasoning\n</think>\n\nThe answer."},
     {"role": "user", "content": "<tool_response>42</tool_response>"},
     {"role": "assistant", "content": "<think>more</think>Done."}],
]

lib = Lib()
failures = checks = 0


def check(name, template, tok, special, override):
    global failures, checks
    for ci, conv in enumerate(CONVERSATIONS):
        for gen in (False, True):
            checks += 1
            try:
                want, want_err = hf_render(template, conv, gen, special), None
            except (TemplateError, jinja2.exceptions.UndefinedError) as e:
                want, want_err = None, str(e)
            st, got = tok.apply_chat_template(conv, gen, template if override else None)
            if want_err is not None:
                if st == 0:
                    failures += 1
                    print(f"FAIL {name} conv {ci} gen={gen}: jinja2 raised '{want_err}', loratune rendered {got!r}")
                elif "raise" in want_err or want_err in got or "undefined" in got:
                    pass
                elif want_err not in got:
                    failures += 1
                    print(f"FAIL {name} conv {ci} gen={gen}: error '{got}' does not carry '{want_err}'")
                continue
            if st != 0 or got != want:
                failures += 1
                print(f"FAIL {name} conv {ci} gen={gen}:\n  loratune ({st}) {got!r}\n  jinja2        {want!r}")


qwen = Tokenizer(lib, TOKDIR)
cfg = json.load(open(os.path.join(TOKDIR, "tokenizer_config.json"), encoding="utf-8"))
check("qwen2 (shipped)", cfg["chat_template"], qwen, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, False)
for name in ("qwen2.5", "chatml", "features", "qwen3"):
    with open(os.path.join(HERE, "templates", name + ".jinja"), encoding="utf-8") as f:
        check(name, f.read(), qwen, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, True)
qwen.close()

# Llama-style templates need a bos_token: a folder with the same tokenizer.json and another config
tmp = tempfile.mkdtemp(prefix="lt_chat_")
try:
    shutil.copy(os.path.join(TOKDIR, "tokenizer.json"), os.path.join(tmp, "tokenizer.json"))
    # the families' templates (issue 18) with their own special tokens
    fam_special = {"gemma2": {"bos_token": "<bos>", "eos_token": "<eos>"},
                   "gemma3": {"bos_token": "<bos>", "eos_token": "<eos>"},
                   "phi3": {"bos_token": "<s>", "eos_token": "<|endoftext|>"},
                   "mistral": {"bos_token": "<s>", "eos_token": "</s>"}}
    for name in ("llama3", "llama3.1", "alternate", "gemma2", "gemma3", "phi3", "mistral"):
        with open(os.path.join(HERE, "templates", name + ".jinja"), encoding="utf-8") as f:
            tmpl = f.read()
        special = fam_special.get(name, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
        with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(dict(special, chat_template=tmpl), f)
        tok = Tokenizer(lib, tmp)
        check(name, tmpl, tok, special, False)
        tok.close()
finally:
    shutil.rmtree(tmp)

# outside the subset: LT_ERR_UNSUPPORTED (-4) naming the text
qwen = Tokenizer(lib, TOKDIR)
for bad, needle in [("{% macro m() %}x{% endmacro %}", "macro"), ("{{ messages | wordcount }}", "wordcount"),
                    ("{% for m in messages %}{{ m.role", "unterminated")]:
    checks += 1
    st, msg = qwen.apply_chat_template(CONVERSATIONS[0], False, bad)
    if st == 0 or needle not in msg:
        failures += 1
        print(f"FAIL unsupported template {bad!r}: status {st}, message {msg!r}")
qwen.close()
print(f"{checks - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
