"""loratune - Python bindings of libloratune (LoRA fine-tuning on a 4-bit base), over ctypes.

Two layers:
  - loratune.Model / Tokenizer / Dataset / Trainer / Exporter: the C handles, Pythonic;
  - loratune.unsloth / trl / transformers / datasets: the Unsloth notebook's names
    (FastLanguageModel, SFTTrainer, TrainingArguments, TextStreamer, load_dataset).
The library is found through $LORATUNE_LIBRARY, this package's folder, or the system loader;
its major version and struct sizes are checked at import.
"""
from ._ffi import (LibraryMismatchError, LibraryNotFoundError, LoratuneError, check_library,
                   library_path)
from .core import (Dataset, Exporter, Metrics, Model, Tokenizer, TokenStream, Trainer,
                   cuda_device_count, cuda_device_info, estimate_memory, export, parse_targets,
                   set_log_callback, template_builtin, template_render, version, version_number)

__version__ = "0.1.0"

__all__ = ["LibraryMismatchError", "LibraryNotFoundError", "LoratuneError", "check_library", "library_path",
           "Dataset", "Exporter", "Metrics", "Model", "Tokenizer", "TokenStream", "Trainer", "cuda_device_count",
           "cuda_device_info", "estimate_memory", "export", "parse_targets", "set_log_callback", "template_builtin",
           "template_render", "version", "version_number"]
