"""Dequantised GGUF tensors cached as safetensors under ~/.cache/layerskip/weights/.

Dequantising a GGUF file in numpy costs seconds per load; reading the float32 tensors back from
a safetensors file is a memory map. The key is the GGUF file's path, size and mtime, as for the
tokenizer cache, so a changed file is dequantised again. The file is written one tensor at a
time and read lazily, so neither side ever holds all the float32 tensors at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from layerskip.cache_paths import cache_root, file_key

_ALIGN = 8  # safetensors pads its header so every tensor starts 8-byte aligned


def cache_file(gguf: Path) -> Path:
    return cache_root() / "weights" / f"{file_key(gguf)}.safetensors"


def open_cached(gguf: Path) -> Any | None:
    """A lazy `safe_open` handle on this GGUF file's cached tensors, or None (missing or
    unreadable: dequantise again)."""
    from safetensors import safe_open

    f = cache_file(gguf)
    if not f.is_file():
        return None
    try:
        return safe_open(f, framework="pt")
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
            _write(out, shapes, read)
        tmp.replace(f)
        return True
    except (OSError, ValueError):
        return False
    finally:
        with contextlib.suppress(OSError):  # gone after the rename, or never created
            tmp.unlink(missing_ok=True)


def _write(out: BinaryIO, shapes: dict[str, tuple[int, ...]], read: Callable[[str], np.ndarray]) -> None:
    """The safetensors layout by hand (8-byte header length, JSON header, raw data): its own
    writer needs every tensor in memory at once."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = 4 * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(len(text) + 8) % _ALIGN)
    out.write(struct.pack("<Q", len(text)) + text)
    for name, shape in shapes.items():
        array = np.ascontiguousarray(read(name), dtype=np.float32)
        if array.shape != tuple(shape):
            raise ValueError(f"{name}: dequantised to {array.shape}, expected {shape}")  # not cached
        out.write(memoryview(array).cast("B"))
