"""The loaded model and its tokenizer: what generation, serving and benchmarks are handed.

Its own module so that they import a dataclass, not the loader (GGUF, hub downloads, quantisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer


@dataclass
class LoadedModel:
    """A model ready for generation, with the tokenizer that belongs to it."""

    model: Transformer
    tokenizer: Any  # a transformers PreTrainedTokenizer(Fast)
    name: str
    path: Path
    compile: bool | str = False  # torch.compile the decode steps: True (inductor) or a backend name

    @property
    def config(self) -> ModelConfig:
        return self.model.config
