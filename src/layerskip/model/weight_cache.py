"""Dequantised GGUF tensors cached as safetensors under ~/.cache/layerskip/weights/.

Dequantising a GGUF file in numpy costs seconds per load; reading the float32 tensors back from
a safetensors file is a memory map. The key is the GGUF file's path, size and mtime, as for the
tokenizer cache, so a changed file is dequantised again.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from layerskip.cache_paths import cache_root, file_key


def cache_file(gguf: Path) -> Path:
    return cache_root() / "weights" / f"{file_key(gguf)}.safetensors"


def load(gguf: Path) -> dict[str, torch.Tensor] | None:
    """The cached tensors of this GGUF file, or None (missing or unreadable: dequantise again)."""
    from safetensors.torch import load_file

    f = cache_file(gguf)
    if not f.is_file():
        return None
    try:
        return load_file(f)
    except Exception:  # a truncated or foreign file is just a cache miss
        return None


def save(gguf: Path, tensors: dict[str, np.ndarray]) -> None:
    """Write the dequantised tensors atomically; a read-only home only costs the work next time."""
    from safetensors.torch import save_file

    f = cache_file(gguf)
    tmp = f.with_suffix(f".{os.getpid()}.tmp")  # concurrent first loads each write their own
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: torch.tensor(np.asarray(v, dtype=np.float32)) for k, v in tensors.items()}, tmp)
        tmp.replace(f)
    except OSError:
        tmp.unlink(missing_ok=True)
