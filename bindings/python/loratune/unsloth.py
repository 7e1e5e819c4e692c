"""unsloth.py - `from loratune.unsloth import FastLanguageModel` in place of Unsloth's."""
from .hf import FastLanguageModel, FastModel, is_bfloat16_supported  # noqa: F401

__all__ = ["FastLanguageModel", "FastModel", "is_bfloat16_supported"]
