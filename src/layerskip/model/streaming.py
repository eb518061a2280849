"""Write a safetensors file one tensor at a time.

safetensors' own writer takes every tensor at once; a file written here holds one in memory: the
header (names, dtypes, shapes, offsets) is known up front and each tensor's bytes follow in
order. The layout: 8-byte little-endian header length, the JSON header padded with spaces so
data starts 8-byte aligned, then the raw tensors.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

import torch
from torch import Tensor

_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
_ALIGN = 8


def write_safetensors(
    out: BinaryIO,
    shapes: dict[str, tuple[int, ...]],
    dtype: torch.dtype,
    read: Callable[[str], Tensor],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write `read(name)` for each name of `shapes`, in order; each must have its shape and `dtype`."""
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset, itemsize = 0, torch.tensor([], dtype=dtype).element_size()
    for name, shape in shapes.items():
        size = itemsize * torch.Size(shape).numel()
        header[name] = {"dtype": _DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(len(text) + 8) % _ALIGN)
    out.write(struct.pack("<Q", len(text)) + text)
    for name, shape in shapes.items():
        t = read(name)
        if t.shape != tuple(shape) or t.dtype != dtype:
            raise ValueError(f"{name}: got {tuple(t.shape)} {t.dtype}, expected {tuple(shape)} {dtype}")
        out.write(t.contiguous().view(torch.uint8).numpy().data)
