"""loratune - Python bindings of libloratune (LoRA fine-tuning on a 4-bit base), over ctypes.

Two layers:
  - loratune.Model / Tokenizer / Dataset / Trainer / Exporter: the C handles, Pythonic;
  - the Unsloth notebook's names (FastLanguageModel, is_bfloat16_supported, SFTTrainer, SFTConfig,
    TrainingArguments, TextStreamer), importable from here as a notebook's
    `from unsloth/trl/transformers import ...` lines name them, and from the submodules
    loratune.unsloth / trl / transformers / datasets under the original module names.
The library is found through $LORATUNE_LIBRARY, this package's folder, or the system loader;
its major version and struct sizes are checked at import.
"""
from ._ffi import (InvalidArgumentError, LibraryMismatchError, LibraryNotFoundError, LoratuneError,
                   NonFiniteError, UnsupportedError, check_library, library_path)
from .core import (Dataset, Exporter, Metrics, Model, Tokenizer, TokenStream, Trainer, TrainingInterrupted,
                   cuda_device_count, cuda_device_info, estimate_memory, export, parse_targets,
                   set_log_callback, template_builtin, template_render, version, version_number)
from .hf import (FastLanguageModel, FastModel, SFTConfig, SFTTrainer, TextStreamer, TrainingArguments,
                 is_bfloat16_supported)

try:  # written by the pip build from CMakeLists.txt's project version
    from ._version import __version__
except ImportError:  # a source checkout (PYTHONPATH=bindings/python): the loaded library's version
    __version__ = version()

__all__ = ["InvalidArgumentError", "LibraryMismatchError", "LibraryNotFoundError", "LoratuneError",
           "NonFiniteError", "UnsupportedError", "check_library", "library_path",
           "Dataset", "Exporter", "Metrics", "Model", "Tokenizer", "TokenStream", "Trainer", "TrainingInterrupted",
           "cuda_device_count", "cuda_device_info", "estimate_memory", "export", "parse_targets",
           "set_log_callback", "template_builtin", "template_render", "version", "version_number",
           "FastLanguageModel", "FastModel", "SFTConfig", "SFTTrainer", "TextStreamer", "TrainingArguments",
           "is_bfloat16_supported"]
