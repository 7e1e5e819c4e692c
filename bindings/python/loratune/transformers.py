"""transformers.py - `from loratune.transformers import TrainingArguments, TextStreamer`."""
from .hf import EarlyStoppingCallback, TextStreamer, TrainingArguments  # noqa: F401

__all__ = ["TrainingArguments", "TextStreamer", "EarlyStoppingCallback"]
