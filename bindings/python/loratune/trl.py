"""trl.py - `from loratune.trl import SFTTrainer` in place of TRL's."""
from .hf import SFTConfig, SFTTrainer  # noqa: F401

__all__ = ["SFTTrainer", "SFTConfig"]
