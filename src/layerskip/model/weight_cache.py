"""Dequantised GGUF tensors cached as safetensors under ~/.cache/layerskip/weights/.

Dequantising a GGUF file in numpy costs seconds per load; reading the float32 tensors back from
a safetensors file is a memory map. The key is the GGUF file's path, size and mtime, as for the
tokenizer cache, so a changed file is dequantised again. The file is written one tensor at a
time and read lazily, so neither side ever holds all the float32 tensors at once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from layerskip.cache_paths import cache_root, file_key
from layerskip.model.streaming import write_safetensors


def cache_file(gguf: Path) -> Path:
    return cache_root() / "weights" / f"{file_key(gguf)}.safetensors"


def cached(gguf: Path) -> Path | None:
    """This GGUF file's cache file if it is a readable safetensors file, else None (missing or
    unreadable: dequantise again)."""
    from safetensors import safe_open

    f = cache_file(gguf)
    if not f.is_file():
        return None
    try:
        with safe_open(f, framework="pt"):
            return f
    except Exception:  # a truncated or foreign file is just a cache miss
        return None


def save(gguf: Path, shapes: dict[str, tuple[int, ...]], read: Callable[[str], np.ndarray]) -> bool:
    """Write `read(name)` (float32, of `shapes[name]`) for every name, one at a time, atomically.

    False when the cache cannot be written: a read-only home only costs the work next time.
    """
    f = cache_file(gguf)
    tmp = f.with_suffix(f".{os.getpid()}.tmp")  # concurrent first loads each write their own
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as out:
            write_safetensors(out, shapes, torch.float32, lambda name: torch.from_numpy(read(name)))
        tmp.replace(f)
        return True
    except (OSError, ValueError):
        return False
    finally:
        with contextlib.suppress(OSError):  # gone after the rename, or never created
            tmp.unlink(missing_ok=True)
