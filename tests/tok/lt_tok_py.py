"""lt_tok_py.py - a minimal ctypes view of libloratune's tokenizer API for the Python tests
(mirrors include/loratune.h; LORATUNE_LIBRARY names the shared library)."""
import ctypes
import os


class ChatMessage(ctypes.Structure):
    _fields_ = [("role", ctypes.c_char_p), ("content", ctypes.c_char_p)]


class Lib:
    def __init__(self, path=None):
        path = path or os.environ.get("LORATUNE_LIBRARY")
        if not path:
            raise RuntimeError("LORATUNE_LIBRARY is not set")
        self.lib = lib = ctypes.CDLL(path)
        lib.lt_last_error.restype = ctypes.c_char_p
        lib.lt_tokenizer_load.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        lib.lt_tokenizer_free.argtypes = [ctypes.c_void_p]
        lib.lt_tokenizer_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int32,
                                            ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t,
                                            ctypes.POINTER(ctypes.c_size_t)]
        lib.lt_tokenizer_decode.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t,
                                            ctypes.c_int32, ctypes.c_char_p, ctypes.c_size_t,
                                            ctypes.POINTER(ctypes.c_size_t)]
        lib.lt_tokenizer_apply_chat_template.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(ChatMessage), ctypes.c_size_t, ctypes.c_int32, ctypes.c_char_p,
            ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]

    def error(self):
        return (self.lib.lt_last_error() or b"").decode("utf-8", "replace")


class Tokenizer:
    def __init__(self, lib, folder):
        self.L = lib
        self.h = ctypes.c_void_p()
        st = lib.lib.lt_tokenizer_load(folder.encode(), ctypes.byref(self.h))
        if st != 0:
            raise RuntimeError(f"lt_tokenizer_load({folder}) -> {st}: {lib.error()}")

    def close(self):
        if self.h:
            self.L.lib.lt_tokenizer_free(self.h)
            self.h = None

    def encode(self, text, add_special=False):
        b = text.encode("utf-8") if isinstance(text, str) else text
        cap = len(b) + 16
        ids = (ctypes.c_int32 * cap)()
        n = ctypes.c_size_t()
        st = self.L.lib.lt_tokenizer_encode(self.h, b, len(b), int(add_special), ids, cap, ctypes.byref(n))
        if st == -12:  # LT_ERR_BUFFER_TOO_SMALL (normalization can add bytes): n holds the count
            cap = n.value
            ids = (ctypes.c_int32 * cap)()
            st = self.L.lib.lt_tokenizer_encode(self.h, b, len(b), int(add_special), ids, cap, ctypes.byref(n))
        if st != 0:
            raise RuntimeError(f"encode -> {st}: {self.L.error()}")
        return list(ids[: n.value])

    def decode(self, ids, skip_special=False):
        arr = (ctypes.c_int32 * max(1, len(ids)))(*ids)
        n = ctypes.c_size_t()
        cap = 8 * len(ids) + 64
        buf = ctypes.create_string_buffer(cap)
        st = self.L.lib.lt_tokenizer_decode(self.h, arr, len(ids), int(skip_special), buf, cap, ctypes.byref(n))
        if st == -12:  # LT_ERR_BUFFER_TOO_SMALL: n holds the size
            cap = n.value + 1
            buf = ctypes.create_string_buffer(cap)
            st = self.L.lib.lt_tokenizer_decode(self.h, arr, len(ids), int(skip_special), buf, cap, ctypes.byref(n))
        if st != 0:
            raise RuntimeError(f"decode -> {st}: {self.L.error()}")
        return buf.raw[: n.value].decode("utf-8")

    def apply_chat_template(self, messages, add_generation_prompt=False, template=None):
        arr = (ChatMessage * max(1, len(messages)))()
        keep = []
        for i, m in enumerate(messages):
            r, c = m["role"].encode(), m["content"].encode()
            keep += [r, c]
            arr[i] = ChatMessage(r, c)
        n = ctypes.c_size_t()
        t = template.encode() if template is not None else None
        st = self.L.lib.lt_tokenizer_apply_chat_template(self.h, arr, len(messages), int(add_generation_prompt), t,
                                                        None, 0, ctypes.byref(n))
        if st not in (0, -12):
            return st, self.L.error()
        buf = ctypes.create_string_buffer(n.value + 1)
        st = self.L.lib.lt_tokenizer_apply_chat_template(self.h, arr, len(messages), int(add_generation_prompt), t,
                                                        buf, n.value + 1, ctypes.byref(n))
        if st != 0:
            return st, self.L.error()
        return 0, buf.raw[: n.value].decode("utf-8")
