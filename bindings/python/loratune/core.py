"""core.py - the thin Pythonic layer over libloratune's handles: Model, Tokenizer, TokenStream,
Dataset, Trainer, Exporter and the free functions. One class per handle; close() (or `with`,
or garbage collection) frees it. A handle keeps alive what the C API says must outlive it
(a dataset its tokenizer, a trainer its model and dataset) and every callback object it gave
the library; closing a handle first closes the handles that depend on it.
"""
import ctypes
import json
import os
import math
import operator
import queue
import signal
import threading
import weakref

from . import _ffi
from ._ffi import LoratuneError, check, encode_str, init_struct

_L = _ffi.lib()


# ---- small helpers ---------------------------------------------------------------------------
def version():
    """The loaded library's version string, "MAJOR.MINOR.PATCH"."""
    return _L.lt_version().decode()


def version_number():
    return int(_L.lt_version_number())


def cuda_device_count():
    return int(_L.lt_cuda_device_count())


def cuda_device_info(index=0):
    """(name, compute_capability, total_bytes, free_bytes) of CUDA device `index`."""
    name = ctypes.create_string_buffer(256)
    cc = ctypes.c_int32()
    total = ctypes.c_uint64()
    free = ctypes.c_uint64()
    check(_L.lt_cuda_device_info(index, name, 256, ctypes.byref(cc), ctypes.byref(total), ctypes.byref(free)),
          "lt_cuda_device_info")
    return name.value.decode(), cc.value, total.value, free.value


class _CallbackGuard:
    """Runs Python callbacks for C: an exception raised anywhere in one (argument conversion
    included) stops the C call (non-zero return) and is raised again, as it was, once the C call
    is back; ctypes never sees it, so it is never printed and dropped."""

    def __init__(self):
        self.error = None

    def wrap(self, fn):
        """A trampoline for a C callback type: fn(*c_args) -> stop?; 1 when fn raised."""
        def tramp(*args):
            try:
                if self.error is not None:
                    return 1
                return 1 if fn(*args) else 0
            except BaseException as e:  # KeyboardInterrupt too: stop the C loop cleanly
                if self.error is None:
                    self.error = e
                return 1
        return tramp

    def reraise(self):
        """Raises the callback's exception (or one a log callback raised meanwhile)."""
        if self.error is not None:
            e, self.error = self.error, None
            raise e
        _raise_log_error()


def _progress_fn(progress, guard):
    """An lt_progress_fn around a Python callable progress(what, done, total) -> stop?"""
    if progress is None:
        return _ffi.PROGRESS_FN()
    return _ffi.PROGRESS_FN(guard.wrap(lambda what, done, total, ud: progress(
        (what or b"").decode("utf-8", "replace"), int(done), int(total))))


_log_keep = None
_log_error = [None]  # an exception the log callback raised, not yet raised to the caller
_log_lock = threading.Lock()


def _raise_log_error():
    with _log_lock:
        e, _log_error[0] = _log_error[0], None
    if e is not None:
        raise e


def set_log_callback(fn, max_level=_ffi.LT_LOG_INFO):
    """Routes the library's log lines to fn(level, message); None silences it. The callable
    stays alive until the next call."""
    global _log_keep
    if fn is None:
        _log_keep = None
        _L.lt_set_log_callback(_ffi.LOG_FN(), 0, None)
        return

    def tramp(level, msg, ud):
        # The library goes on after a log line whatever happens here: an exception is kept and
        # raised by the next binding call that returns (a trainer step, a load, an export).
        try:
            fn(int(level), (msg or b"").decode("utf-8", "replace"))
        except BaseException as e:
            with _log_lock:
                if _log_error[0] is None:
                    _log_error[0] = e

    _log_keep = _ffi.LOG_FN(tramp)
    _L.lt_set_log_callback(_log_keep, int(max_level), None)


_INT_RANGES = {ctypes.c_int32: (-2 ** 31, 2 ** 31 - 1), ctypes.c_uint32: (0, 2 ** 32 - 1),
               ctypes.c_int64: (-2 ** 63, 2 ** 63 - 1), ctypes.c_uint64: (0, 2 ** 64 - 1)}


def _bad(what, name, message):
    e = _ffi.InvalidArgumentError(_ffi.LT_ERR_INVALID_ARGUMENT, "%s=%s" % (name, message), what)
    e.param = name
    return e


def _set_fields(p, what, **values):
    """p.<field> = value for each value that is not None, refusing what the field cannot hold:
    ctypes would silently wrap 99999999999 into a 32-bit field, or turn a string into a crash.
    Ranges and finiteness are the library's to check (one set of rules for every front end);
    here only what would not reach it intact."""
    types = dict(p._fields_)
    for name, value in values.items():
        if value is None:
            continue
        ctype = types[name]
        if ctype in _INT_RANGES:
            if isinstance(value, float):
                if not math.isfinite(value) or value != int(value):
                    raise _bad(what, name, "%r: expected an integer" % value)
                value = int(value)
            else:
                try:
                    value = operator.index(value)  # int, bool, numpy integers
                except TypeError:
                    raise _bad(what, name, "%r: expected an integer, not %s" % (value, type(value).__name__))
            lo, hi = _INT_RANGES[ctype]
            if not lo <= value <= hi:
                bits = ctypes.sizeof(ctype) * 8
                raise _bad(what, name, "%d is out of range: it must fit a%s %d-bit integer (%d to %d)"
                           % (value, "n unsigned" if lo == 0 else "", bits, lo, hi))
        elif ctype in (ctypes.c_double, ctypes.c_float):
            if isinstance(value, (str, bytes)):
                raise _bad(what, name, "%r: expected a number, not a string" % (value,))
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise _bad(what, name, "%r: expected a number" % (value,))
        setattr(p, name, value)


def _alias(value, old_value, name, old_name):
    """One value from a keyword and its older spelling (both given is an error)."""
    if old_value is None:
        return value
    if value is not None:
        raise _bad(name, old_name, "%r and %s=%r both given: %s is the older name of %s"
                   % (old_value, name, value, old_name, name))
    return old_value


def _enum(value, table, what):
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    key = str(value).lower().replace("torch.", "")
    if key not in table:
        raise LoratuneError(_ffi.LT_ERR_INVALID_ARGUMENT, "unknown %s %r (expected one of %s)"
                            % (what, value, ", ".join(sorted(table))), what)
    return table[key]


_DEVICES = {"auto": _ffi.LT_DEVICE_AUTO, "cpu": _ffi.LT_DEVICE_CPU, "cuda": _ffi.LT_DEVICE_CUDA,
            "gpu": _ffi.LT_DEVICE_CUDA}
_DTYPES = {"auto": _ffi.LT_DTYPE_AUTO, "none": _ffi.LT_DTYPE_AUTO, "float32": _ffi.LT_DTYPE_F32,
           "fp32": _ffi.LT_DTYPE_F32, "f32": _ffi.LT_DTYPE_F32, "float16": _ffi.LT_DTYPE_F16,
           "fp16": _ffi.LT_DTYPE_F16, "f16": _ffi.LT_DTYPE_F16, "half": _ffi.LT_DTYPE_F16,
           "bfloat16": _ffi.LT_DTYPE_BF16, "bf16": _ffi.LT_DTYPE_BF16}
_QUANTS = {"nf4": _ffi.LT_QUANT_NF4, "4bit": _ffi.LT_QUANT_NF4, "none": _ffi.LT_QUANT_NONE,
           "16bit": _ffi.LT_QUANT_NONE}
_FORMATS = {"auto": _ffi.LT_DATA_AUTO, "alpaca": _ffi.LT_DATA_ALPACA, "chat": _ffi.LT_DATA_CHAT,
            "text": _ffi.LT_DATA_TEXT, "tokens": _ffi.LT_DATA_TOKENS}
_LOSS_ON = {"all": _ffi.LT_LOSS_ALL, "response": _ffi.LT_LOSS_RESPONSE}
_MERGE = {"auto": _ffi.LT_MERGE_AUTO, "original": _ffi.LT_MERGE_ORIGINAL,
          "dequantized": _ffi.LT_MERGE_DEQUANTIZED}


def _parse_device(device):
    """"auto", "cpu", "cuda", "cuda:1" -> (lt_device, index)."""
    if device is None:
        return _ffi.LT_DEVICE_AUTO, 0
    if isinstance(device, int):
        return device, 0
    s = str(device).lower()
    index = 0
    if ":" in s:
        s, idx = s.split(":", 1)
        index = int(idx)
    return _enum(s, _DEVICES, "device"), index


def _parse_with(fn, name, what):
    if isinstance(name, int):
        return name
    out = ctypes.c_int32()
    check(fn(encode_str(name), ctypes.byref(out)), what)
    return out.value


def parse_targets(targets):
    """"all", "q_proj,k_proj", ["q_proj", ...] or an LT_TARGET_* mask -> mask."""
    if targets is None:
        return _ffi.LT_TARGET_ALL
    if isinstance(targets, int):
        return targets
    if not isinstance(targets, str):
        targets = ",".join(targets)
    mask = ctypes.c_uint32()
    check(_L.lt_lora_targets_parse(encode_str(targets), ctypes.byref(mask)), "lt_lora_targets_parse")
    return mask.value


def template_builtin(name):
    """A built-in prompt template's text ("alpaca-zh", "alpaca", "chatml"), or None."""
    s = _L.lt_template_builtin(encode_str(name))
    return s.decode("utf-8") if s else None


def template_render(template, instruction="", input="", output=""):
    buf, n = _ffi.call_buffer(_L.lt_template_render, encode_str(template), encode_str(instruction),
                              encode_str(input), encode_str(output), call="lt_template_render")
    return buf.raw[:n].decode("utf-8")


def _int_array(values):
    values = list(values)
    return (ctypes.c_int32 * max(len(values), 1))(*values), len(values)


class _Handle:
    """An owned C handle. Subclasses name their free function in _free.

    Order of freeing: a child (a dataset of its tokenizer, a trainer of its model) is freed
    before its parents. close() closes the open children first. Garbage collection may
    finalize a parent before a child (both unreachable at once, their weak references already
    cleared), so a parent with open children only marks itself and is freed by its last child."""
    _free = None
    _what = "handle"

    def __init__(self):
        self._h = ctypes.c_void_p()
        self._children = weakref.WeakSet()
        self._parents = []
        self._open_children = 0
        self._free_pending = False
        self._keep = []  # objects the C side points into (callbacks, strings) while the handle lives

    @property
    def handle(self):
        if not self._h:
            raise LoratuneError(_ffi.LT_ERR_STATE, "this %s is closed" % self._what, self._what)
        return self._h

    @property
    def closed(self):
        return not self._h

    def _adopt(self, child):
        self._children.add(child)
        self._open_children += 1
        child._parents.append(self)

    def close(self):
        if getattr(self, "_h", None):
            for child in list(self._children):
                child.close()
            self._release()

    def _release(self):
        if not self._h:
            return
        getattr(_L, self._free)(self._h)
        self._h = ctypes.c_void_p()
        self._keep = []
        parents, self._parents = self._parents, []
        for p in parents:
            p._open_children -= 1
            if p._free_pending and p._open_children == 0:
                p._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if getattr(self, "_open_children", 0) > 0:
                self._free_pending = True  # the last open child frees this handle
            else:
                self.close()
        except Exception:
            pass


# ---- tokenizer -------------------------------------------------------------------------------
class Tokenizer(_Handle):
    """tokenizer.json (+ tokenizer_config.json, generation_config.json) from a folder."""
    _free = "lt_tokenizer_free"
    _what = "tokenizer"

    def __init__(self, path):
        super().__init__()
        self.path = os.fspath(path)
        check(_L.lt_tokenizer_load(encode_str(self.path), ctypes.byref(self._h)), "lt_tokenizer_load")

    def encode(self, text, add_special=False):
        b = encode_str(text)
        buf, n = _ffi.call_buffer(_L.lt_tokenizer_encode, self.handle, b, len(b), int(bool(add_special)),
                                  initial=len(b) + 16, kind="int32", call="lt_tokenizer_encode")
        return list(buf[:n])

    def decode(self, ids, skip_special=False):
        arr, n = _int_array(ids)
        buf, length = _ffi.call_buffer(_L.lt_tokenizer_decode, self.handle, arr, n, int(bool(skip_special)),
                                       initial=16 * n + 16, call="lt_tokenizer_decode")
        return buf.raw[:length].decode("utf-8")

    @property
    def vocab_size(self):
        return int(_L.lt_tokenizer_vocab_size(self.handle))

    def token_to_id(self, token):
        i = _L.lt_tokenizer_token_to_id(self.handle, encode_str(token))
        return None if i < 0 else int(i)

    def id_to_token(self, i):
        s = _L.lt_tokenizer_id_to_token(self.handle, int(i))
        return s.decode("utf-8", "replace") if s is not None else None

    def special_tokens(self):
        """{"bos_id", "eos_id", "pad_id", "stop_ids"}; absent ids are None."""
        st = init_struct(_ffi.lt_special_tokens)
        check(_L.lt_tokenizer_special_tokens(self.handle, ctypes.byref(st)), "lt_tokenizer_special_tokens")
        opt = lambda v: None if v < 0 else int(v)  # noqa: E731
        return {"bos_id": opt(st.bos_id), "eos_id": opt(st.eos_id), "pad_id": opt(st.pad_id),
                "stop_ids": [int(st.stop_ids[i]) for i in range(st.n_stop_ids)]}

    @property
    def eos_token(self):
        s = _L.lt_tokenizer_eos_token(self.handle)
        return s.decode("utf-8") if s is not None else None

    def apply_chat_template(self, messages, add_generation_prompt=False, template=None):
        msgs = (_ffi.lt_chat_message * max(len(messages), 1))()
        keep = []
        for i, m in enumerate(messages):
            role, content = encode_str(m["role"]), encode_str(m["content"])
            keep += [role, content]
            msgs[i].role, msgs[i].content = role, content
        buf, n = _ffi.call_buffer(_L.lt_tokenizer_apply_chat_template, self.handle, msgs, len(messages),
                                  int(bool(add_generation_prompt)), encode_str(template),
                                  call="lt_tokenizer_apply_chat_template")
        return buf.raw[:n].decode("utf-8")

    def stream(self, skip_special=False):
        """A TokenStream that turns ids into complete UTF-8 pieces."""
        return TokenStream(self, skip_special)


class TokenStream(_Handle):
    _free = "lt_token_stream_free"
    _what = "token stream"

    def __init__(self, tokenizer, skip_special=False):
        super().__init__()
        self.tokenizer = tokenizer
        check(_L.lt_token_stream_new(tokenizer.handle, int(bool(skip_special)), ctypes.byref(self._h)),
              "lt_token_stream_new")
        tokenizer._adopt(self)

    def push(self, token):
        buf, n = _ffi.call_buffer(_L.lt_token_stream_push, self.handle, int(token), initial=256,
                                  call="lt_token_stream_push")
        return buf.raw[:n].decode("utf-8")

    def flush(self):
        buf, n = _ffi.call_buffer(_L.lt_token_stream_flush, self.handle, initial=256, call="lt_token_stream_flush")
        return buf.raw[:n].decode("utf-8")


# ---- model -----------------------------------------------------------------------------------
class ModelInfo:
    """lt_model_info as attributes."""

    def __init__(self, s):
        for name, _ in s._fields_:
            v = getattr(s, name)
            setattr(self, name, v.decode() if isinstance(v, bytes) else v)

    def __repr__(self):
        return "ModelInfo(%s)" % ", ".join("%s=%r" % kv for kv in vars(self).items() if kv[0] != "struct_size")


class Model(_Handle):
    """A Hugging Face model folder loaded (and quantized) by libloratune, with its LoRA adapter."""
    _free = "lt_model_free"
    _what = "model"

    def __init__(self, path, device=None, quant=None, dtype=None, max_seq_len=None, threads=None,
                 double_quant=None, progress=None, n_threads=None):
        super().__init__()
        self.path = os.fspath(path)
        guard = _CallbackGuard()
        p = init_struct(_ffi.lt_model_params, _L.lt_model_params_init)
        if device is not None:
            p.device, p.device_index = _parse_device(device)
        _set_fields(p, "Model", quant=_enum(quant, _QUANTS, "quant") if quant is not None else None,
                    compute_dtype=_enum(dtype, _DTYPES, "dtype") if dtype is not None else None,
                    double_quant=double_quant, max_seq_len=max_seq_len,
                    n_threads=_alias(threads, n_threads, "threads", "n_threads"))
        cb = _progress_fn(progress, guard)
        p.progress = cb
        st = _L.lt_model_load(encode_str(self.path), ctypes.byref(p), ctypes.byref(self._h))
        guard.reraise()
        check(st, "lt_model_load")
        if st == _ffi.LT_STOPPED:
            raise LoratuneError(st, "loading was cancelled by the progress callback", "lt_model_load")

    def info(self):
        s = init_struct(_ffi.lt_model_info)
        check(_L.lt_model_get_info(self.handle, ctypes.byref(s)), "lt_model_get_info")
        return ModelInfo(s)

    def _drop_dependents(self):
        """Trainers and exporters are built on the adapter: replacing it closes them first."""
        for child in list(self._children):
            child.close()

    def add_lora(self, lora_r=None, lora_alpha=None, lora_dropout=None, targets=None, use_rslora=None, seed=None,
                 r=None, alpha=None, dropout=None):
        """Attaches a fresh adapter (replacing any; open trainers and exporters are closed).
        Keyword names are the --config keys; r / alpha / dropout are the same as lora_r /
        lora_alpha / lora_dropout. Arguments left at None take lt_lora_params_init's defaults."""
        p = init_struct(_ffi.lt_lora_params, _L.lt_lora_params_init)
        _set_fields(p, "add_lora", r=_alias(lora_r, r, "lora_r", "r"), alpha=_alias(lora_alpha, alpha, "lora_alpha", "alpha"),
                    dropout=_alias(lora_dropout, dropout, "lora_dropout", "dropout"), use_rslora=use_rslora, seed=seed,
                    targets=parse_targets(targets) if targets is not None else None)
        self._drop_dependents()
        check(_L.lt_model_add_lora(self.handle, ctypes.byref(p)), "lt_model_add_lora")
        return self

    def load_adapter(self, path):
        self._drop_dependents()
        check(_L.lt_model_load_adapter(self.handle, encode_str(os.fspath(path))), "lt_model_load_adapter")
        return self

    def save_adapter(self, path, overwrite=False):
        check(_L.lt_model_save_adapter(self.handle, encode_str(os.fspath(path)), int(bool(overwrite))),
              "lt_model_save_adapter")

    def set_lora_enabled(self, enabled):
        check(_L.lt_model_set_lora_enabled(self.handle, int(bool(enabled))), "lt_model_set_lora_enabled")

    def release_buffers(self):
        """Frees the training graph's activation buffers now (inference mode); a later step or
        logits / loss call allocates them again."""
        check(_L.lt_model_release_buffers(self.handle), "lt_model_release_buffers")

    def logits(self, ids):
        """Logits of one sequence: a list of n rows of vocab_size floats (a numpy array
        [n, vocab] when numpy is installed)."""
        arr, n = _int_array(ids)
        vocab = self.info().vocab_size
        out = (ctypes.c_float * (n * vocab))()
        check(_L.lt_model_logits(self.handle, arr, n, out), "lt_model_logits")
        try:
            import numpy as np
            return np.ctypeslib.as_array(out).reshape(n, vocab).copy()
        except ImportError:
            return [list(out[i * vocab:(i + 1) * vocab]) for i in range(n)]

    def loss(self, ids, labels=None):
        arr, n = _int_array(ids)
        lab = _int_array(labels if labels is not None else ids)[0]
        out = ctypes.c_double()
        check(_L.lt_model_loss(self.handle, arr, lab, n, ctypes.byref(out)), "lt_model_loss")
        return out.value

    def generate(self, prompt_ids, max_new_tokens=None, tokenizer=None, on_text=None, do_sample=None,
                 temperature=None, top_k=None, top_p=None, min_p=None, repetition_penalty=None, seed=None,
                 stop_ids=None, stop_strings=None):
        """Generates after prompt_ids; returns the new ids. on_text(piece, token) receives each
        complete piece of text as it comes (needs `tokenizer`); a truthy return stops. Arguments
        left at None take lt_generate_params_init's defaults.

        prompt_ids may be a list of prompts (lists of ids): they are generated together
        (lt_generate_batch: greedy gives each prompt's ids alone, sampling draws prompt i with
        seed + i) and a list of new-id lists comes back, in order; on_text needs one prompt."""
        p = init_struct(_ffi.lt_generate_params, _L.lt_generate_params_init)
        _set_fields(p, "generate", max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                    top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty, seed=seed)
        keep = []
        if stop_ids is not None:
            arr, n = _int_array(stop_ids)
            keep.append(arr)
            p.stop_ids, p.n_stop_ids = ctypes.cast(arr, _ffi.c_int32_p), n
        if stop_strings:
            enc = [encode_str(s) for s in stop_strings]
            arr = (ctypes.c_char_p * len(enc))(*enc)
            keep += [enc, arr]
            p.stop_strings, p.n_stop_strings = ctypes.cast(arr, ctypes.POINTER(ctypes.c_char_p)), len(enc)
        guard = _CallbackGuard()
        if tokenizer is not None:
            p.tokenizer = tokenizer.handle
        if on_text is not None:
            if tokenizer is None:
                raise LoratuneError(_ffi.LT_ERR_INVALID_ARGUMENT, "on_text needs a tokenizer", "generate")

            cb = _ffi.STREAM_FN(guard.wrap(lambda piece, length, token, ud: on_text(
                ctypes.string_at(piece, length).decode("utf-8", "replace"), int(token))))
            keep.append(cb)
            p.on_text = cb
        cap = max(int(p.max_new_tokens), 0) + 1
        prompt_ids = list(prompt_ids)
        if prompt_ids and (isinstance(prompt_ids[0], (list, tuple)) or getattr(prompt_ids[0], "ndim", 0) >= 1):
            rows = [_int_array(r) for r in prompt_ids]
            n = len(rows)
            ptrs = (_ffi.c_int32_p * n)(*[ctypes.cast(a, _ffi.c_int32_p) for a, _ in rows])
            lens = (ctypes.c_size_t * n)(*[k for _, k in rows])
            out = (ctypes.c_int32 * (cap * n))()
            n_out = (ctypes.c_size_t * n)()
            st = _L.lt_generate_batch(self.handle, ptrs, lens, n, ctypes.byref(p), out, cap, n_out)
            guard.reraise()
            check(st, "lt_generate_batch")
            return [list(out[i * cap:i * cap + n_out[i]]) for i in range(n)]
        prompt, n_prompt = _int_array(prompt_ids)
        out = (ctypes.c_int32 * cap)()
        n_out = ctypes.c_size_t()
        st = _L.lt_generate(self.handle, prompt, n_prompt, ctypes.byref(p), out, cap, ctypes.byref(n_out))
        guard.reraise()
        check(st, "lt_generate")
        return list(out[:n_out.value])

    def generate_stream(self, prompt_ids, tokenizer, **kwargs):
        """Yields the text pieces of a generation as they come (runs lt_generate on a worker
        thread; leaving the loop early stops the generation)."""
        q = queue.Queue(maxsize=64)
        stop = threading.Event()
        done = object()
        result = {}

        def on_text(piece, token):
            while not stop.is_set():
                try:
                    q.put(piece, timeout=0.1)
                    return False
                except queue.Full:
                    continue
            return True

        def work():
            try:
                result["ids"] = self.generate(prompt_ids, tokenizer=tokenizer, on_text=on_text, **kwargs)
            except BaseException as e:
                result["error"] = e
            finally:
                while True:
                    try:
                        q.put(done, timeout=0.1)
                        break
                    except queue.Full:
                        if stop.is_set():
                            break

        t = threading.Thread(target=work, daemon=True)
        t.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    break
                yield item
        finally:
            stop.set()
            t.join()
        if "error" in result:
            raise result["error"]


# ---- dataset ---------------------------------------------------------------------------------
class DatasetStats:
    def __init__(self, s):
        for name, _ in s._fields_:
            setattr(self, name, getattr(s, name))

    def __repr__(self):
        return "DatasetStats(%s)" % ", ".join("%s=%r" % kv for kv in vars(self).items() if kv[0] != "struct_size")


class Dataset(_Handle):
    """Tokenized training records: from a JSON/JSONL file (path) or added one by one. template:
    a built-in name (alpaca-zh, alpaca, chatml) or a template text with {instruction} {input}
    {output}, as --template takes it. Keyword names are the --config keys; arguments left at None
    take lt_dataset_params_init's defaults."""
    _free = "lt_dataset_free"
    _what = "dataset"

    def __init__(self, tokenizer, path=None, format=None, template=None, instruction_field=None, input_field=None,
                 output_field=None, text_field=None, max_seq_len=None, loss_on=None, add_eos=None,
                 skip_bad_records=None, eval_fraction=None, seed=None, threads=None, progress=None,
                 template_text=None, n_threads=None):
        super().__init__()
        self.tokenizer = tokenizer  # must outlive the dataset
        guard = _CallbackGuard()
        p = init_struct(_ffi.lt_dataset_params, _L.lt_dataset_params_init)
        if template is not None and template_text is None and "{" in str(template) \
                and _L.lt_template_builtin(encode_str(template)) is None:
            template, template_text = None, template
        strings = {"template_name": template, "template_text": template_text,
                   "instruction_field": instruction_field, "input_field": input_field,
                   "output_field": output_field, "text_field": text_field}
        for field, value in strings.items():
            if value is not None:
                b = encode_str(value)
                self._keep.append(b)
                setattr(p, field, b)
        _set_fields(p, "Dataset", format=_enum(format, _FORMATS, "format") if format is not None else None,
                    loss_on=_enum(loss_on, _LOSS_ON, "loss_on") if loss_on is not None else None,
                    max_seq_len=max_seq_len, add_eos=add_eos, skip_bad_records=skip_bad_records,
                    eval_fraction=eval_fraction, seed=seed,
                    n_threads=_alias(threads, n_threads, "threads", "n_threads"))
        cb = _progress_fn(progress, guard)
        self._keep.append(cb)
        p.progress = cb
        self._params = p
        if path is not None:
            st = _L.lt_dataset_load(encode_str(os.fspath(path)), tokenizer.handle, ctypes.byref(p),
                                    ctypes.byref(self._h))
            guard.reraise()
            check(st, "lt_dataset_load")
        else:
            check(_L.lt_dataset_new(tokenizer.handle, ctypes.byref(p), ctypes.byref(self._h)), "lt_dataset_new")
        tokenizer._adopt(self)

    def add(self, record):
        """A dict (instruction/input/output, text, messages, input_ids) or a plain text."""
        if isinstance(record, str):
            return self.add_text(record)
        return self.add_json(json.dumps(dict(record), ensure_ascii=False))

    def add_json(self, json_record):
        check(_L.lt_dataset_add_json(self.handle, encode_str(json_record)), "lt_dataset_add_json")

    def add_alpaca(self, instruction, input="", output=""):
        check(_L.lt_dataset_add_alpaca(self.handle, encode_str(instruction), encode_str(input or ""),
                                       encode_str(output or "")), "lt_dataset_add_alpaca")

    def add_text(self, text):
        check(_L.lt_dataset_add_text(self.handle, encode_str(text)), "lt_dataset_add_text")

    def add_tokens(self, ids, labels=None):
        arr, n = _int_array(ids)
        lab = _int_array(labels)[0] if labels is not None else None
        check(_L.lt_dataset_add_tokens(self.handle, arr, lab, n), "lt_dataset_add_tokens")

    def extend(self, records):
        for r in records:
            self.add(r)
        return self

    def stats(self):
        s = init_struct(_ffi.lt_dataset_stats)
        check(_L.lt_dataset_get_stats(self.handle, ctypes.byref(s)), "lt_dataset_get_stats")
        return DatasetStats(s)

    def __len__(self):
        return int(_L.lt_dataset_size(self.handle))

    def __getitem__(self, index):
        """(ids, labels) of training record `index` (labels -100 where no loss)."""
        if index < 0:
            index += len(self)
        n = ctypes.c_size_t()
        st = _L.lt_dataset_get(self.handle, index, None, None, 0, ctypes.byref(n))
        if st != _ffi.LT_ERR_BUFFER_TOO_SMALL:
            check(st, "lt_dataset_get")
        cap = max(n.value, 1)
        ids, labels = (ctypes.c_int32 * cap)(), (ctypes.c_int32 * cap)()
        check(_L.lt_dataset_get(self.handle, index, ids, labels, cap, ctypes.byref(n)), "lt_dataset_get")
        return list(ids[:n.value]), list(labels[:n.value])


# ---- training --------------------------------------------------------------------------------
class Metrics:
    """One optimizer step's lt_metrics as attributes (+ .stopped when a callback stopped here)."""
    __slots__ = [f for f, _ in _ffi.lt_metrics._fields_ if f != "struct_size"] + ["stopped"]

    def __init__(self, s, stopped=False):
        for f in self.__slots__[:-1]:
            setattr(self, f, getattr(s, f))
        self.stopped = stopped

    def as_dict(self):
        return {f: getattr(self, f) for f in self.__slots__}

    def __repr__(self):
        return "Metrics(step=%d, loss=%.4f, lr=%.3g, grad_norm=%.3f)" % (self.step, self.loss, self.lr, self.grad_norm)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a trainer call: the step in progress was finished (or abandoned by
    the library), a checkpoint was written where the trainer has an output_dir, and the trainer
    and model stay usable. .step: the steps done; .checkpoint: the folder written, or None."""

    def __init__(self, message, step=0, checkpoint=None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


class _SigintWatcher:
    """Python runs its signal handlers on the main thread between bytecodes, so while a C step
    runs, a Ctrl-C reaches Python code only once the step is over. To stop the step itself, the
    C-level handler's wake-up byte (signal.set_wakeup_fd) wakes this daemon thread, which asks the
    library to stop at once (lt_trainer_request_stop only sets a flag; the step checks it between
    micro-batch passes). Used only where no one else holds the wake-up fd (asyncio does)."""
    _lock = threading.Lock()
    _r = _w = _pid = None
    _SENTINEL = 255  # not a signal number: release()'s marker in the pipe
    _drained = threading.Event()
    active = None  # the _DeferSigint of the step() running on the main thread

    @classmethod
    def start(cls):
        with cls._lock:
            if cls._pid != os.getpid():  # first use, or a forked child (the thread did not come along)
                r, w = os.pipe()
                os.set_blocking(w, False)
                threading.Thread(target=cls._run, args=(r,), name="loratune-sigint", daemon=True).start()
                cls._r, cls._w, cls._pid = r, w, os.getpid()
        return cls._w

    @classmethod
    def _run(cls, r):
        while True:
            try:
                data = os.read(r, 64)
            except OSError:
                return
            if not data:
                return
            with cls._lock:
                d = cls.active
                if d is not None and signal.SIGINT in data:
                    d.request()
            if cls._SENTINEL in data:
                cls._drained.set()

    @classmethod
    def release(cls):
        """The step() is over: later bytes, and any left in the pipe, are nobody's. Waits until
        the thread has read past a sentinel written now, so that a byte it read during this
        step() but handles late (a busy machine) cannot reach the next step()'s trainer call."""
        with cls._lock:
            cls.active = None
        cls._drained.clear()
        try:
            os.write(cls._w, bytes([cls._SENTINEL]))
        except OSError:
            return
        cls._drained.wait(5.0)


class _DeferSigint:
    """While a trainer call runs on the main thread with Python's default SIGINT handling, a
    first Ctrl-C only asks the trainer to stop (the library abandons the step in progress between
    two micro-batch passes, or completes it when the request came after the last one, and the
    trainer raises TrainingInterrupted after it); a second one raises KeyboardInterrupt at once,
    as the default handler would. A callback's Python code never sees the first interrupt, so no
    step is left half-reported."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.hits = 0
        self.requested = False
        self.error = None
        self._prev = None
        self._wakeup = False

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._prev = signal.signal(signal.SIGINT, self._handler)
            w = _SigintWatcher.start()
            old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
            if old == -1:
                self._wakeup = True
                with _SigintWatcher._lock:
                    _SigintWatcher.active = self
            else:  # someone else's (an event loop's): theirs stays; the stop waits for the step's end
                signal.set_wakeup_fd(old)
        return self

    def request(self):
        """Asks the trainer to stop (once); from the handler or the watcher thread."""
        if not self.requested:
            self.requested = True
            _L.lt_trainer_request_stop(self.trainer._h)

    def _handler(self, signum, frame):
        self.hits += 1
        if self.hits > 1:
            e = KeyboardInterrupt("a second Ctrl-C: stopped at once, no checkpoint written")
            e.loratune_second = True
            raise e
        self.request()

    def poll(self):
        """Runs the Python signal handlers now, so a Ctrl-C that came during the C call is
        counted before its result is looked at; what a handler raised is kept in .error."""
        try:
            _check_signals()
        except BaseException as e:
            self.error = e

    def __exit__(self, *exc):
        if self._wakeup:
            signal.set_wakeup_fd(-1)
            _SigintWatcher.release()
            self._wakeup = False
        if self._prev is not None:
            signal.signal(signal.SIGINT, self._prev)
            self._prev = None


_check_signals = ctypes.pythonapi.PyErr_CheckSignals
_check_signals.restype = ctypes.c_int
_check_signals.argtypes = []


class EvalResult:
    """lt_eval_result as attributes: loss, accuracy, n_records, n_tokens, seconds; float() of
    it is the loss."""

    def __init__(self, s):
        for name, _ in s._fields_[1:]:
            setattr(self, name, getattr(s, name))

    def __float__(self):
        return float(self.loss)

    def __repr__(self):
        return "EvalResult(loss=%.6f, accuracy=%.4f, n_records=%d, n_tokens=%d, seconds=%.3f)" % (
            self.loss, self.accuracy, self.n_records, self.n_tokens, self.seconds)


class TrainSummary(EvalResult):
    """lt_train_summary as attributes (steps, steps_run, total_tokens, records_seen, elapsed_s,
    tokens_per_s, mean_loss, last_loss, best_eval_loss, best_eval_step, n_evals, early_stopped,
    best_loaded)."""

    def __repr__(self):
        return "TrainSummary(%s)" % ", ".join("%s=%r" % kv for kv in vars(self).items())


class Trainer(_Handle):
    """The step loop. on_step: a callable (or a list) called with Metrics after every optimizer
    step; a truthy return stops training after that step; an exception it raises stops training
    and is raised again from step()/run(). Ctrl-C during step()/run()/iteration raises
    TrainingInterrupted (a KeyboardInterrupt) after at most the step in progress, with a
    checkpoint in output_dir. eval_data: a Dataset of eval records (must outlive the trainer;
    default: the training dataset's eval_fraction split). Keyword names are the --config keys
    (tests/train/option_names.txt); arguments left at None take lt_train_params_init's defaults."""
    _free = "lt_trainer_free"
    _what = "trainer"

    def __init__(self, model, dataset, batch_size=None, grad_accum=None, max_steps=None, epochs=None, lr=None,
                 warmup_steps=None, warmup_ratio=None, scheduler=None, optim=None, weight_decay=None,
                 adam_beta1=None, adam_beta2=None, adam_eps=None, max_grad_norm=None, seed=None,
                 gradient_checkpointing=None, deterministic=None, fuse_micro_batches=None, log_every=None,
                 save_every=None, eval_data=None, eval_every=None, eval_batch_size=None,
                 early_stopping_patience=None, early_stopping_threshold=None, save_total_limit=None,
                 load_best_at_end=None, output_dir=None, on_step=None, packing=None, offload_checkpoints=None,
                 fp16_initial_loss_scale=None, optimizer=None, bucket_passes=None):
        super().__init__()
        self.model, self.dataset, self.eval_data = model, dataset, eval_data  # all must outlive the trainer
        self._guard = _CallbackGuard()
        p = init_struct(_ffi.lt_train_params, _L.lt_train_params_init)
        _set_fields(p, "Trainer", batch_size=batch_size, grad_accum=grad_accum, max_steps=max_steps, epochs=epochs,
                    lr=lr, warmup_steps=warmup_steps, warmup_ratio=warmup_ratio, weight_decay=weight_decay,
                    adam_beta1=adam_beta1, adam_beta2=adam_beta2, adam_eps=adam_eps, max_grad_norm=max_grad_norm,
                    seed=seed, packing=packing, gradient_checkpointing=gradient_checkpointing,
                    offload_checkpoints=offload_checkpoints, deterministic=deterministic, log_every=log_every,
                    save_every=save_every, fp16_initial_loss_scale=fp16_initial_loss_scale,
                    fuse_micro_batches=fuse_micro_batches, eval_every=eval_every, eval_batch_size=eval_batch_size,
                    early_stopping_patience=early_stopping_patience,
                    early_stopping_threshold=early_stopping_threshold, save_total_limit=save_total_limit,
                    load_best_at_end=load_best_at_end, bucket_passes=bucket_passes)
        if scheduler is not None:
            p.scheduler = _parse_with(_L.lt_scheduler_parse, scheduler, "lt_scheduler_parse")
        optim = _alias(optim, optimizer, "optim", "optimizer")
        if optim is not None:
            p.optimizer = _parse_with(_L.lt_optimizer_parse, optim, "lt_optimizer_parse")
        if eval_data is not None:
            if not isinstance(eval_data, Dataset):
                raise _bad("Trainer", "eval_data", "%r: expected a loratune.Dataset" % (eval_data,))
            p.eval_data = eval_data.handle
        self.output_dir = os.fspath(output_dir) if output_dir is not None else None
        if output_dir is not None:
            b = encode_str(self.output_dir)
            self._keep.append(b)
            p.output_dir = b
        self._callbacks = [] if on_step is None else (list(on_step) if isinstance(on_step, (list, tuple))
                                                      else [on_step])
        if self._callbacks:
            cb = _ffi.STEP_FN(self._guard.wrap(self._on_step))
            self._keep.append(cb)
            p.on_step = cb
        self._params = p
        if hasattr(self, "_new_trainer"):  # distributed.Trainer: the data-parallel fields
            self._new_trainer(p)
        check(_L.lt_trainer_new(model.handle, dataset.handle, ctypes.byref(p), ctypes.byref(self._h)),
              "lt_trainer_new")
        model._adopt(self)
        dataset._adopt(self)
        if eval_data is not None:
            eval_data._adopt(self)
        self._metrics = init_struct(_ffi.lt_metrics)
        self.last_metrics = None  # the Metrics of the last step taken
        self.finished = False
        self.stopped = False
        self._stale_stop = False  # a stop request of an interrupted call may still be pending

    def _on_step(self, mp, ud):
        m = Metrics(mp.contents)
        stop = False
        for fn in self._callbacks:
            stop = bool(fn(m)) or stop
        return stop

    def _interrupted(self):
        """After a Ctrl-C: a checkpoint of the steps done, then TrainingInterrupted."""
        step = int(_L.lt_trainer_get_step(self.handle))
        where = None
        if self.finished:
            note = "training had already finished; nothing to resume"
        elif step == 0:
            note = "before the first step ended; no checkpoint was written"
        elif self.output_dir is None:
            note = ("no output_dir, so no checkpoint was written; the trainer goes on with step() or run(), "
                    "or save_checkpoint(path) keeps its state")
        else:
            where = os.path.join(self.output_dir, "checkpoint-%d" % step)
            if not os.path.isdir(where):  # save_every may have written this step's already
                self.save_checkpoint(where)
            note = "checkpoint written to %s (resume: load_checkpoint(%r), then run())" % (where, where)
        raise TrainingInterrupted("training interrupted after step %d: %s" % (step, note), step, where)

    def step(self):
        """One optimizer step: its Metrics (.stopped set when a callback asked to stop), or
        None when training is complete (or a Ctrl-C abandoned the step: TrainingInterrupted)."""
        h = self.handle
        while True:
            before = _L.lt_trainer_get_step(h)
            with _DeferSigint(self) as sigint:
                st = _L.lt_trainer_step(h, ctypes.byref(self._metrics))
                sigint.poll()
            took = st in (_ffi.LT_OK, _ffi.LT_STOPPED) and _L.lt_trainer_get_step(h) > before
            stale, self._stale_stop = self._stale_stop, False
            if (stale and st == _ffi.LT_STOPPED and not took and not sigint.hits and sigint.error is None
                    and self._guard.error is None):
                continue  # the leftover request of an earlier Ctrl-C stopped this call before it began
            break
        if sigint.requested and (st != _ffi.LT_STOPPED or took):
            self._stale_stop = True  # the request may have come after the library's last look at it
        m = None
        if st == _ffi.LT_DONE:
            self.finished = True
        elif took:
            self.stopped = st == _ffi.LT_STOPPED
            m = self.last_metrics = Metrics(self._metrics, self.stopped)
        if sigint.error is not None:  # the second Ctrl-C
            raise sigint.error
        self._guard.reraise()
        check(st, "lt_trainer_step")
        if sigint.hits:
            self._interrupted()
        if st == _ffi.LT_STOPPED and not took:
            self.stopped = True  # stopped before a step began: request_stop() from another thread
        return m

    def request_stop(self):
        """Asks the step in progress (or the next one) to stop: from another thread, or a signal
        handler of one's own. That step() returns None with .stopped set (the step abandoned, or
        not begun) or, when the request came after its last pass, its Metrics with .stopped;
        run() then returns "stopped" and a later step() trains on."""
        _L.lt_trainer_request_stop(self.handle)

    @property
    def global_step(self):
        """Optimizer steps done (after a resume: counted from the checkpoint's)."""
        return int(_L.lt_trainer_get_step(self.handle))

    def __iter__(self):
        while True:
            m = self.step()
            if m is None:
                return
            yield m
            if m.stopped:
                return

    def run(self):
        """Runs until done ("done"), stopped by a callback ("stopped"), an error (raised) or
        Ctrl-C (TrainingInterrupted)."""
        for _ in self:
            pass
        return "stopped" if self.stopped else "done"

    def evaluate(self):
        """An EvalResult (loss, accuracy, n_records, n_tokens, seconds) over the eval records,
        now: no gradient, no dropout, no effect on training."""
        out = init_struct(_ffi.lt_eval_result)
        st = _L.lt_trainer_evaluate_v2(self.handle, ctypes.byref(out))
        self._guard.reraise()
        check(st, "lt_trainer_evaluate")
        return EvalResult(out)

    def summary(self):
        """A TrainSummary of where training stands (TRL's TrainOutput is made from it)."""
        out = init_struct(_ffi.lt_train_summary)
        check(_L.lt_trainer_get_summary(self.handle, ctypes.byref(out)), "lt_trainer_get_summary")
        return TrainSummary(out)

    def save_checkpoint(self, path):
        check(_L.lt_trainer_save_checkpoint(self.handle, encode_str(os.fspath(path))), "lt_trainer_save_checkpoint")

    def load_checkpoint(self, path):
        check(_L.lt_trainer_load_checkpoint(self.handle, encode_str(os.fspath(path))), "lt_trainer_load_checkpoint")
        self.finished = self.stopped = False


# ---- export ----------------------------------------------------------------------------------
class Exporter(_Handle):
    """Writes the model as a PEFT adapter, merged safetensors, GGUF (+ Modelfile) or GGUF LoRA."""
    _free = "lt_exporter_free"
    _what = "exporter"

    def __init__(self, model, tokenizer=None, format=None, quant=None, merge_base=None, template=None,
                 template_text=None, tokenizer_dir=None, overwrite=None, write_modelfile=None, n_threads=None,
                 max_shard_bytes=None, progress=None):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self._guard = _CallbackGuard()
        p = init_struct(_ffi.lt_export_params, _L.lt_export_params_init)
        if format is not None:
            p.format = _parse_with(_L.lt_export_format_parse, format, "lt_export_format_parse")
        for field, value in (("quant", quant), ("template_name", template), ("template_text", template_text),
                             ("tokenizer_dir", tokenizer_dir)):
            if value is not None:
                b = encode_str(os.fspath(value) if field == "tokenizer_dir" else value)
                self._keep.append(b)
                setattr(p, field, b)
        _set_fields(p, "Exporter", merge_base=_enum(merge_base, _MERGE, "merge_base") if merge_base is not None
                    else None, overwrite=overwrite, write_modelfile=write_modelfile, n_threads=n_threads,
                    max_shard_bytes=max_shard_bytes)
        cb = _progress_fn(progress, self._guard)
        self._keep.append(cb)
        p.progress = cb
        self._params = p
        check(_L.lt_exporter_new(model.handle, tokenizer.handle if tokenizer is not None else None,
                                 ctypes.byref(p), ctypes.byref(self._h)), "lt_exporter_new")
        model._adopt(self)
        if tokenizer is not None:
            tokenizer._adopt(self)

    def write(self, path):
        st = _L.lt_exporter_write(self.handle, encode_str(os.fspath(path)))
        self._guard.reraise()
        check(st, "lt_exporter_write")
        if st == _ffi.LT_STOPPED:
            raise LoratuneError(st, "export was cancelled by the progress callback", "lt_exporter_write")
        return os.fspath(path)


def export(model, path, tokenizer=None, **kwargs):
    """Exporter(model, tokenizer, **kwargs).write(path), closing the exporter."""
    with Exporter(model, tokenizer, **kwargs) as ex:
        return ex.write(path)


def estimate_memory(model_dir, device=None, quant=None, dtype=None, max_seq_len=None, r=None, targets=None,
                    batch_size=None, grad_accum=None, gradient_checkpointing=None, offload_checkpoints=None):
    """Device bytes a training config needs, without loading weights: a dict of
    weights/lora/activations/workspace/total (offload_checkpoints: the checkpoints' pinned host
    memory is not in them). None takes the lt_*_params_init default."""
    mp = init_struct(_ffi.lt_model_params, _L.lt_model_params_init)
    if device is not None:
        mp.device, mp.device_index = _parse_device(device)
    _set_fields(mp, "estimate_memory", quant=_enum(quant, _QUANTS, "quant") if quant is not None else None,
                compute_dtype=_enum(dtype, _DTYPES, "dtype") if dtype is not None else None, max_seq_len=max_seq_len)
    lp = init_struct(_ffi.lt_lora_params, _L.lt_lora_params_init)
    _set_fields(lp, "estimate_memory", r=r, targets=parse_targets(targets) if targets is not None else None)
    tp = init_struct(_ffi.lt_train_params, _L.lt_train_params_init)
    _set_fields(tp, "estimate_memory", batch_size=batch_size, grad_accum=grad_accum,
                gradient_checkpointing=gradient_checkpointing, offload_checkpoints=offload_checkpoints)
    out = init_struct(_ffi.lt_memory_estimate)
    check(_L.lt_estimate_memory(encode_str(os.fspath(model_dir)), ctypes.byref(mp), ctypes.byref(lp),
                                ctypes.byref(tp), ctypes.byref(out)), "lt_estimate_memory")
    return {k: getattr(out, k) for k in ("weights", "lora", "activations", "workspace", "total")}
