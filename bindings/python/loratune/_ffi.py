"""_ffi.py - the ctypes mirror of include/loratune.h: finding and loading libloratune, the
public structs, every function's prototype, the load-time checks (major version, struct sizes)
and the turning of statuses into exceptions.

Everything here follows the header line by line; when the header grows, this file grows with
it (tests/bindings compares the two).
"""
import ctypes
import ctypes.util
import os

# The major version these bindings were written against (LT_VERSION_MAJOR).
BINDING_VERSION_MAJOR = 0

# ---- status codes (lt_status; pinned forever) ------------------------------------------------
LT_OK = 0
LT_DONE = 1
LT_STOPPED = 2
LT_ERR_INVALID_ARGUMENT = -1
LT_ERR_IO = -2
LT_ERR_FORMAT = -3
LT_ERR_UNSUPPORTED = -4
LT_ERR_OUT_OF_MEMORY = -5
LT_ERR_CUDA = -6
LT_ERR_NOT_FOUND = -7
LT_ERR_STATE = -8
LT_ERR_DATA = -9
LT_ERR_EXISTS = -10
LT_ERR_VERSION = -11
LT_ERR_BUFFER_TOO_SMALL = -12
LT_ERR_UTF8 = -13
LT_ERR_NCCL = -14
LT_ERR_NO_DEVICE = -15
LT_ERR_NONFINITE = -16
LT_ERR_INTERNAL = -99

LT_LOG_ERROR, LT_LOG_WARN, LT_LOG_INFO, LT_LOG_DEBUG = 0, 1, 2, 3
LT_DEVICE_AUTO, LT_DEVICE_CPU, LT_DEVICE_CUDA = 0, 1, 2
LT_DTYPE_AUTO, LT_DTYPE_F32, LT_DTYPE_F16, LT_DTYPE_BF16 = 0, 1, 2, 3
LT_QUANT_NF4, LT_QUANT_NONE = 0, 1
LT_TARGET_Q, LT_TARGET_K, LT_TARGET_V, LT_TARGET_O = 1, 2, 4, 8
LT_TARGET_GATE, LT_TARGET_UP, LT_TARGET_DOWN = 16, 32, 64
LT_TARGET_ALL = 0x7F
LT_DATA_AUTO, LT_DATA_ALPACA, LT_DATA_CHAT, LT_DATA_TEXT, LT_DATA_TOKENS = 0, 1, 2, 3, 4
LT_LOSS_ALL, LT_LOSS_RESPONSE = 0, 1
LT_SCHED_LINEAR, LT_SCHED_COSINE, LT_SCHED_CONSTANT = 0, 1, 2
LT_OPTIM_ADAMW, LT_OPTIM_ADAMW_8BIT = 0, 1
LT_EXPORT_PEFT, LT_EXPORT_MERGED, LT_EXPORT_GGUF, LT_EXPORT_GGUF_LORA = 0, 1, 2, 3
LT_MERGE_AUTO, LT_MERGE_ORIGINAL, LT_MERGE_DEQUANTIZED = 0, 1, 2
LT_NCCL_ID_BYTES = 128


class LoratuneError(Exception):
    """A failed loratune call: .status (an lt_status value), .status_name and .message
    (lt_last_error()'s text at the time of the failure)."""

    def __init__(self, status, message, call=None):
        self.status = int(status)
        self.message = message
        self.call = call
        self.status_name = status_string(status) if _lib is not None else str(status)
        where = "%s: " % call if call else ""
        super().__init__("%s%s: %s" % (where, self.status_name, message or "(no message)"))


class InvalidArgumentError(LoratuneError, ValueError):
    """LT_ERR_INVALID_ARGUMENT: a parameter out of range, not finite, or too large for its
    field (the message names the parameter and the value)."""


class UnsupportedError(LoratuneError, NotImplementedError):
    """LT_ERR_UNSUPPORTED: a valid request this version cannot do (the message names it)."""


class NonFiniteError(LoratuneError, FloatingPointError):
    """LT_ERR_NONFINITE: a loss or gradient norm became NaN/Inf; training stopped (the message
    names the step, the value and the last good checkpoint)."""


def error_class(status):
    """The LoratuneError subclass raised for an lt_status."""
    return _ERROR_CLASSES.get(int(status), LoratuneError)


class LibraryMismatchError(LoratuneError, ImportError):
    """The loaded libloratune does not match these bindings (major version or struct layout)."""


class LibraryNotFoundError(ImportError):
    pass


_ERROR_CLASSES = {LT_ERR_INVALID_ARGUMENT: InvalidArgumentError, LT_ERR_UNSUPPORTED: UnsupportedError,
                  LT_ERR_NONFINITE: NonFiniteError}


# ---- callback types ------------------------------------------------------------------------
c_int32_p = ctypes.POINTER(ctypes.c_int32)
LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_char_p, ctypes.c_void_p)
PROGRESS_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p)


# ---- structs (field for field as in the header) ---------------------------------------------
class lt_model_params(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("device", ctypes.c_int32),
        ("device_index", ctypes.c_int32),
        ("quant", ctypes.c_int32),
        ("compute_dtype", ctypes.c_int32),
        ("double_quant", ctypes.c_int32),
        ("max_seq_len", ctypes.c_int32),
        ("n_threads", ctypes.c_int32),
        ("progress", PROGRESS_FN),
        ("progress_user_data", ctypes.c_void_p),
    ]


class lt_model_info(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("architecture", ctypes.c_char * 64),
        ("model_type", ctypes.c_char * 32),
        ("vocab_size", ctypes.c_int32),
        ("hidden_size", ctypes.c_int32),
        ("intermediate_size", ctypes.c_int32),
        ("num_layers", ctypes.c_int32),
        ("num_heads", ctypes.c_int32),
        ("num_kv_heads", ctypes.c_int32),
        ("head_dim", ctypes.c_int32),
        ("max_position_embeddings", ctypes.c_int32),
        ("rope_theta", ctypes.c_double),
        ("rms_norm_eps", ctypes.c_double),
        ("tie_word_embeddings", ctypes.c_int32),
        ("attention_bias", ctypes.c_int32),
        ("device", ctypes.c_int32),
        ("compute_dtype", ctypes.c_int32),
        ("quant", ctypes.c_int32),
        ("n_params", ctypes.c_uint64),
        ("n_lora_params", ctypes.c_uint64),
        ("weight_bytes", ctypes.c_uint64),
    ]


class lt_lora_params(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("r", ctypes.c_int32),
        ("alpha", ctypes.c_float),
        ("dropout", ctypes.c_float),
        ("use_rslora", ctypes.c_int32),
        ("targets", ctypes.c_uint32),
        ("seed", ctypes.c_uint64),
    ]


class lt_memory_estimate(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("weights", ctypes.c_uint64),
        ("lora", ctypes.c_uint64),
        ("activations", ctypes.c_uint64),
        ("workspace", ctypes.c_uint64),
        ("total", ctypes.c_uint64),
    ]


class lt_special_tokens(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("bos_id", ctypes.c_int32),
        ("eos_id", ctypes.c_int32),
        ("pad_id", ctypes.c_int32),
        ("n_stop_ids", ctypes.c_int32),
        ("stop_ids", ctypes.c_int32 * 8),
    ]


class lt_chat_message(ctypes.Structure):
    _fields_ = [("role", ctypes.c_char_p), ("content", ctypes.c_char_p)]


class lt_dataset_params(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("format", ctypes.c_int32),
        ("template_name", ctypes.c_char_p),
        ("template_text", ctypes.c_char_p),
        ("instruction_field", ctypes.c_char_p),
        ("input_field", ctypes.c_char_p),
        ("output_field", ctypes.c_char_p),
        ("text_field", ctypes.c_char_p),
        ("max_seq_len", ctypes.c_int32),
        ("loss_on", ctypes.c_int32),
        ("add_eos", ctypes.c_int32),
        ("skip_bad_records", ctypes.c_int32),
        ("eval_fraction", ctypes.c_double),
        ("seed", ctypes.c_uint64),
        ("n_threads", ctypes.c_int32),
        ("progress", PROGRESS_FN),
        ("progress_user_data", ctypes.c_void_p),
    ]


class lt_dataset_stats(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("n_records", ctypes.c_uint64),
        ("n_eval", ctypes.c_uint64),
        ("n_skipped", ctypes.c_uint64),
        ("n_truncated", ctypes.c_uint64),
        ("n_tokens", ctypes.c_uint64),
        ("n_label_tokens", ctypes.c_uint64),
        ("min_len", ctypes.c_int32),
        ("max_len", ctypes.c_int32),
        ("mean_len", ctypes.c_double),
    ]


class lt_metrics(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("step", ctypes.c_int64),
        ("max_steps", ctypes.c_int64),
        ("epoch", ctypes.c_double),
        ("loss", ctypes.c_double),
        ("lr", ctypes.c_double),
        ("grad_norm", ctypes.c_double),
        ("tokens", ctypes.c_int64),
        ("total_tokens", ctypes.c_int64),
        ("tokens_per_s", ctypes.c_double),
        ("elapsed_s", ctypes.c_double),
        ("peak_memory", ctypes.c_uint64),
        ("eval_loss", ctypes.c_double),
        ("eval_accuracy", ctypes.c_double),
        ("best_eval_loss", ctypes.c_double),
        ("best_eval_step", ctypes.c_int64),
        ("early_stop", ctypes.c_int32),
    ]


STEP_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(lt_metrics), ctypes.c_void_p)
STREAM_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_char), ctypes.c_size_t, ctypes.c_int32,
                             ctypes.c_void_p)


class lt_train_params(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("batch_size", ctypes.c_int32),
        ("grad_accum", ctypes.c_int32),
        ("max_steps", ctypes.c_int32),
        ("epochs", ctypes.c_double),
        ("lr", ctypes.c_double),
        ("warmup_steps", ctypes.c_int32),
        ("warmup_ratio", ctypes.c_double),
        ("scheduler", ctypes.c_int32),
        ("optimizer", ctypes.c_int32),
        ("weight_decay", ctypes.c_double),
        ("adam_beta1", ctypes.c_double),
        ("adam_beta2", ctypes.c_double),
        ("adam_eps", ctypes.c_double),
        ("max_grad_norm", ctypes.c_double),
        ("seed", ctypes.c_uint64),
        ("packing", ctypes.c_int32),
        ("gradient_checkpointing", ctypes.c_int32),
        ("offload_checkpoints", ctypes.c_int32),
        ("deterministic", ctypes.c_int32),
        ("log_every", ctypes.c_int32),
        ("save_every", ctypes.c_int32),
        ("output_dir", ctypes.c_char_p),
        ("on_step", STEP_FN),
        ("user_data", ctypes.c_void_p),
        ("rank", ctypes.c_int32),
        ("world_size", ctypes.c_int32),
        ("nccl_id", ctypes.POINTER(ctypes.c_uint8)),
        ("fp16_initial_loss_scale", ctypes.c_double),
        ("fuse_micro_batches", ctypes.c_int32),
        ("eval_data", ctypes.c_void_p),
        ("eval_every", ctypes.c_int32),
        ("eval_batch_size", ctypes.c_int32),
        ("early_stopping_patience", ctypes.c_int32),
        ("early_stopping_threshold", ctypes.c_double),
        ("save_total_limit", ctypes.c_int32),
        ("load_best_at_end", ctypes.c_int32),
        ("comm", ctypes.c_void_p),
        ("dist_timeout_s", ctypes.c_double),
        ("bucket_passes", ctypes.c_int32),
    ]


class lt_eval_result(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("loss", ctypes.c_double),
        ("accuracy", ctypes.c_double),
        ("n_records", ctypes.c_int64),
        ("n_tokens", ctypes.c_int64),
        ("seconds", ctypes.c_double),
    ]


class lt_train_summary(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("steps", ctypes.c_int64),
        ("max_steps", ctypes.c_int64),
        ("steps_run", ctypes.c_int64),
        ("total_tokens", ctypes.c_int64),
        ("records_seen", ctypes.c_int64),
        ("elapsed_s", ctypes.c_double),
        ("tokens_per_s", ctypes.c_double),
        ("mean_loss", ctypes.c_double),
        ("last_loss", ctypes.c_double),
        ("best_eval_loss", ctypes.c_double),
        ("best_eval_step", ctypes.c_int64),
        ("n_evals", ctypes.c_int32),
        ("early_stopped", ctypes.c_int32),
        ("best_loaded", ctypes.c_int32),
    ]


class lt_comm_params(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("world_size", ctypes.c_int32),
        ("rank", ctypes.c_int32),
        ("master_addr", ctypes.c_char_p),
        ("master_port", ctypes.c_int32),
        ("timeout_s", ctypes.c_double),
    ]


class lt_generate_params(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("max_new_tokens", ctypes.c_int32),
        ("do_sample", ctypes.c_int32),
        ("temperature", ctypes.c_float),
        ("top_k", ctypes.c_int32),
        ("top_p", ctypes.c_float),
        ("min_p", ctypes.c_float),
        ("repetition_penalty", ctypes.c_float),
        ("seed", ctypes.c_uint64),
        ("stop_ids", c_int32_p),
        ("n_stop_ids", ctypes.c_int32),
        ("stop_strings", ctypes.POINTER(ctypes.c_char_p)),
        ("n_stop_strings", ctypes.c_int32),
        ("tokenizer", ctypes.c_void_p),
        ("on_text", STREAM_FN),
        ("user_data", ctypes.c_void_p),
    ]


class lt_export_params(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("format", ctypes.c_int32),
        ("quant", ctypes.c_char_p),
        ("merge_base", ctypes.c_int32),
        ("template_name", ctypes.c_char_p),
        ("template_text", ctypes.c_char_p),
        ("tokenizer_dir", ctypes.c_char_p),
        ("overwrite", ctypes.c_int32),
        ("write_modelfile", ctypes.c_int32),
        ("n_threads", ctypes.c_int32),
        ("max_shard_bytes", ctypes.c_uint64),
        ("progress", PROGRESS_FN),
        ("progress_user_data", ctypes.c_void_p),
    ]


# Every struct the library reports a size for (lt_struct_size), checked at load.
STRUCTS = {
    "lt_model_params": lt_model_params,
    "lt_model_info": lt_model_info,
    "lt_lora_params": lt_lora_params,
    "lt_memory_estimate": lt_memory_estimate,
    "lt_special_tokens": lt_special_tokens,
    "lt_chat_message": lt_chat_message,
    "lt_dataset_params": lt_dataset_params,
    "lt_dataset_stats": lt_dataset_stats,
    "lt_metrics": lt_metrics,
    "lt_train_params": lt_train_params,
    "lt_eval_result": lt_eval_result,
    "lt_train_summary": lt_train_summary,
    "lt_comm_params": lt_comm_params,
    "lt_generate_params": lt_generate_params,
    "lt_export_params": lt_export_params,
}

# ---- prototypes: (name, restype, argtypes) ---------------------------------------------------
_p = ctypes.c_void_p  # every opaque handle
_s = ctypes.c_char_p
_i32 = ctypes.c_int32
_u32 = ctypes.c_uint32
_u64 = ctypes.c_uint64
_sz = ctypes.c_size_t
_szp = ctypes.POINTER(ctypes.c_size_t)
_st = ctypes.c_int  # lt_status (an enum: int)
_P = ctypes.POINTER
_buf = ctypes.c_char_p  # char *text out-buffers are passed as ctypes string buffers

PROTOTYPES = [
    ("lt_version", _s, []),
    ("lt_version_number", _u32, []),
    ("lt_struct_size", _sz, [_s]),
    ("lt_status_string", _s, [_st]),
    ("lt_last_error", _s, []),
    ("lt_clear_error", None, []),
    ("lt_set_log_callback", None, [LOG_FN, _i32, _p]),
    ("lt_cuda_device_count", _i32, []),
    ("lt_cuda_device_info", _st, [_i32, _buf, _sz, c_int32_p, _P(_u64), _P(_u64)]),
    ("lt_model_params_init", None, [_P(lt_model_params)]),
    ("lt_model_load", _st, [_s, _P(lt_model_params), _P(_p)]),
    ("lt_model_free", None, [_p]),
    ("lt_model_get_info", _st, [_p, _P(lt_model_info)]),
    ("lt_lora_params_init", None, [_P(lt_lora_params)]),
    ("lt_lora_targets_parse", _st, [_s, _P(_u32)]),
    ("lt_model_add_lora", _st, [_p, _P(lt_lora_params)]),
    ("lt_model_load_adapter", _st, [_p, _s]),
    ("lt_model_save_adapter", _st, [_p, _s, _i32]),
    ("lt_model_set_lora_enabled", _st, [_p, _i32]),
    ("lt_model_logits", _st, [_p, c_int32_p, _sz, _P(ctypes.c_float)]),
    ("lt_model_loss", _st, [_p, c_int32_p, c_int32_p, _sz, _P(ctypes.c_double)]),
    ("lt_estimate_memory", _st, [_s, _P(lt_model_params), _P(lt_lora_params), _P(lt_train_params),
                                 _P(lt_memory_estimate)]),
    ("lt_tokenizer_load", _st, [_s, _P(_p)]),
    ("lt_tokenizer_free", None, [_p]),
    ("lt_tokenizer_encode", _st, [_p, _s, _sz, _i32, c_int32_p, _sz, _szp]),
    ("lt_tokenizer_decode", _st, [_p, c_int32_p, _sz, _i32, _buf, _sz, _szp]),
    ("lt_tokenizer_vocab_size", _i32, [_p]),
    ("lt_tokenizer_token_to_id", _i32, [_p, _s]),
    ("lt_tokenizer_id_to_token", _s, [_p, _i32]),
    ("lt_tokenizer_special_tokens", _st, [_p, _P(lt_special_tokens)]),
    ("lt_tokenizer_eos_token", _s, [_p]),
    ("lt_token_stream_new", _st, [_p, _i32, _P(_p)]),
    ("lt_token_stream_free", None, [_p]),
    ("lt_token_stream_push", _st, [_p, _i32, _buf, _sz, _szp]),
    ("lt_token_stream_flush", _st, [_p, _buf, _sz, _szp]),
    ("lt_tokenizer_apply_chat_template", _st, [_p, _P(lt_chat_message), _sz, _i32, _s, _buf, _sz, _szp]),
    ("lt_template_builtin", _s, [_s]),
    ("lt_template_render", _st, [_s, _s, _s, _s, _buf, _sz, _szp]),
    ("lt_dataset_params_init", None, [_P(lt_dataset_params)]),
    ("lt_dataset_load", _st, [_s, _p, _P(lt_dataset_params), _P(_p)]),
    ("lt_dataset_new", _st, [_p, _P(lt_dataset_params), _P(_p)]),
    ("lt_dataset_add_json", _st, [_p, _s]),
    ("lt_dataset_add_alpaca", _st, [_p, _s, _s, _s]),
    ("lt_dataset_add_text", _st, [_p, _s]),
    ("lt_dataset_add_tokens", _st, [_p, c_int32_p, c_int32_p, _sz]),
    ("lt_dataset_free", None, [_p]),
    ("lt_dataset_get_stats", _st, [_p, _P(lt_dataset_stats)]),
    ("lt_dataset_size", _sz, [_p]),
    ("lt_dataset_get", _st, [_p, _sz, c_int32_p, c_int32_p, _sz, _szp]),
    ("lt_train_params_init", None, [_P(lt_train_params)]),
    ("lt_scheduler_parse", _st, [_s, c_int32_p]),
    ("lt_optimizer_parse", _st, [_s, c_int32_p]),
    ("lt_trainer_new", _st, [_p, _p, _P(lt_train_params), _P(_p)]),
    ("lt_trainer_step", _st, [_p, _P(lt_metrics)]),
    ("lt_trainer_run", _st, [_p]),
    ("lt_trainer_request_stop", None, [_p]),
    ("lt_trainer_get_step", ctypes.c_int64, [_p]),
    ("lt_trainer_evaluate", _st, [_p, _P(ctypes.c_double)]),
    ("lt_trainer_evaluate_v2", _st, [_p, _P(lt_eval_result)]),
    ("lt_trainer_get_summary", _st, [_p, _P(lt_train_summary)]),
    ("lt_trainer_save_checkpoint", _st, [_p, _s]),
    ("lt_trainer_load_checkpoint", _st, [_p, _s]),
    ("lt_trainer_free", None, [_p]),
    ("lt_nccl_get_unique_id", _st, [_P(ctypes.c_uint8)]),
    ("lt_comm_params_init", None, [_P(lt_comm_params)]),
    ("lt_comm_new", _st, [_P(lt_comm_params), _P(_p)]),
    ("lt_comm_get_info", _st, [_p, c_int32_p, c_int32_p]),
    ("lt_comm_broadcast", _st, [_p, _i32, _p, _sz]),
    ("lt_comm_barrier", _st, [_p, _i32]),
    ("lt_comm_abort", None, [_p, _i32, _s]),
    ("lt_comm_free", None, [_p]),
    ("lt_generate_params_init", None, [_P(lt_generate_params)]),
    ("lt_generate", _st, [_p, c_int32_p, _sz, _P(lt_generate_params), c_int32_p, _sz, _szp]),
    ("lt_generate_batch", _st, [_p, _P(c_int32_p), _szp, _sz, _P(lt_generate_params), c_int32_p, _sz, _szp]),
    ("lt_model_release_buffers", _st, [_p]),
    ("lt_export_params_init", None, [_P(lt_export_params)]),
    ("lt_export_format_parse", _st, [_s, c_int32_p]),
    ("lt_exporter_new", _st, [_p, _p, _P(lt_export_params), _P(_p)]),
    ("lt_exporter_write", _st, [_p, _s]),
    ("lt_exporter_free", None, [_p]),
]


# ---- loading ---------------------------------------------------------------------------------
def _candidates():
    """Where the library is looked for, in order: $LORATUNE_LIBRARY, this package's folder
    (where `pip install` puts libloratune.so.<major>), the system loader (LD_LIBRARY_PATH,
    ldconfig: libloratune0)."""
    env = os.environ.get("LORATUNE_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("libloratune.so", "libloratune.so.%d" % BINDING_VERSION_MAJOR, "libloratune.dylib", "loratune.dll"):
        path = os.path.join(here, name)
        if os.path.exists(path):
            yield path
    yield "libloratune.so.%d" % BINDING_VERSION_MAJOR
    found = ctypes.util.find_library("loratune")
    if found:
        yield found
    yield "libloratune.so"


def _open():
    errors = []
    for path in _candidates():
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            errors.append("%s (%s)" % (path, e))
    raise LibraryNotFoundError(
        "libloratune was not found; tried: %s. Install the package with the library built in "
        "(pip install . at the repository root), or point LORATUNE_LIBRARY=/path/to/libloratune.so "
        "at a build (cmake --build build), or install it where the system loader finds it "
        "(libloratune0, cmake --install)."
        % "; ".join(errors))


class _Missing:
    """Stands in for a function the loaded library does not export (an older build)."""

    def __init__(self, name):
        self.name = name

    def __call__(self, *args):
        raise LoratuneError(LT_ERR_UNSUPPORTED, "the loaded libloratune (%s) has no function %s; "
                            "rebuild or update the library" % (_path, self.name), self.name)


class _Lib:
    pass


def check_library(version_number, struct_size, path="libloratune"):
    """Refuses a library these bindings do not match. `version_number` is what
    lt_version_number() returned; `struct_size(name)` gives the library's size of a struct.
    Raises LibraryMismatchError naming the first difference."""
    major = int(version_number) // 10000
    if major != BINDING_VERSION_MAJOR:
        raise LibraryMismatchError(
            LT_ERR_VERSION,
            "%s is version %d.%d.%d (major %d) but these Python bindings were written for major %d; "
            "install bindings that match the library" % (
                path, major, int(version_number) // 100 % 100, int(version_number) % 100, major,
                BINDING_VERSION_MAJOR), "check_library")
    for name, cls in STRUCTS.items():
        theirs = int(struct_size(name))
        ours = ctypes.sizeof(cls)
        if theirs != ours:
            raise LibraryMismatchError(
                LT_ERR_VERSION,
                "%s: struct %s is %d bytes in the library but %d bytes in these bindings; the library "
                "and the bindings come from different versions of loratune.h" % (path, name, theirs, ours),
                "check_library")


def _load():
    raw, path = _open()
    lib = _Lib()
    for name, restype, argtypes in PROTOTYPES:
        try:
            fn = getattr(raw, name)
        except AttributeError:
            setattr(lib, name, _Missing(name))
            continue
        fn.restype = restype
        fn.argtypes = argtypes
        setattr(lib, name, fn)
    for name in ("lt_version_number", "lt_struct_size", "lt_last_error", "lt_status_string"):
        if isinstance(getattr(lib, name), _Missing):
            raise LibraryMismatchError(LT_ERR_VERSION, "%s does not export %s: not a loratune library"
                                       % (path, name), "load")
    lib._raw = raw
    return lib, path


_lib = None
_path = None


def lib():
    return _lib


def library_path():
    return _path


def status_string(status):
    s = _lib.lt_status_string(int(status))
    return s.decode() if s else "LT_STATUS(%d)" % status


def last_error():
    s = _lib.lt_last_error()
    return s.decode("utf-8", "replace") if s else ""


def check(status, call=None):
    """Returns status when it is not an error (LT_OK, LT_DONE, LT_STOPPED); raises LoratuneError
    carrying lt_last_error()'s text otherwise."""
    status = int(status)
    if status < 0:
        raise error_class(status)(status, last_error(), call)
    return status


def encode_str(s):
    if s is None:
        return None
    if isinstance(s, bytes):
        return s
    return os.fsencode(s) if isinstance(s, os.PathLike) else str(s).encode("utf-8")


def init_struct(cls, init_fn=None):
    """A params struct filled by its lt_<x>_params_init (or zeroed with struct_size set)."""
    p = cls()
    if init_fn is not None:
        init_fn(ctypes.byref(p))
    p.struct_size = ctypes.sizeof(cls)
    return p


def call_buffer(fn, *args, initial=4096, kind="char", call=None):
    """The two-call pattern: fn(*args, buf, cap, &len); retries with the size the library asked
    for on LT_ERR_BUFFER_TOO_SMALL. Returns (buffer, length)."""
    cap = initial
    for _ in range(4):
        buf = ctypes.create_string_buffer(cap) if kind == "char" else (ctypes.c_int32 * cap)()
        n = ctypes.c_size_t(0)
        st = fn(*args, buf, cap, ctypes.byref(n))
        if st == LT_ERR_BUFFER_TOO_SMALL and n.value > cap:
            cap = n.value + 1
            continue
        check(st, call)
        return buf, n.value
    raise LoratuneError(LT_ERR_INTERNAL, "buffer size kept growing", call)


# Load and check at import: a library these bindings do not match is refused here.
_lib, _path = _load()
check_library(_lib.lt_version_number(), lambda n: _lib.lt_struct_size(n.encode()), _path)
