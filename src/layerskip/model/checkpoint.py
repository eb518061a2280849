"""Checkpoint files opened lazily: each tensor is read when the loader asks for it.

A `TensorSource` maps checkpoint names to tensors without reading them all: safetensors through
`safe_open` (a memory map per read), `pytorch_model.bin` through `torch.load(mmap=True, weights_only=True)`,
GGUF dequantised one tensor at a time (or read back from the dequantisation cache). Corrupt or
truncated files are `LayerSkipError`s naming the file.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from layerskip.errors import LayerSkipError
from layerskip.model import weight_cache


class TensorSource(Protocol):
    def names(self) -> set[str]: ...

    def get(self, name: str) -> Tensor:
        """The tensor `name`, on the CPU in the checkpoint's dtype (a fresh copy or a memory map)."""
        ...


class SafetensorsSource:
    """One or more safetensors files (shards), opened with `safe_open` for each tensor read.

    A handle kept open would keep every page read through its memory map resident: reading a
    bfloat16 checkpoint into float32 would then peak at both. Reopening costs a header parse.
    """

    def __init__(self, files: dict[str, Path]):
        self._files = files  # tensor name -> its shard

    @classmethod
    def open(cls, files: list[Path]) -> SafetensorsSource:
        return cls({name: f for f in files for name in _read_safetensors(f, lambda h: list(h.keys()))})

    def names(self) -> set[str]:
        return set(self._files)

    def get(self, name: str) -> Tensor:
        return _read_safetensors(self._files[name], lambda h: h.get_tensor(name))


def _read_safetensors(f: Path, read: Callable[[Any], Any]) -> Any:
    from safetensors import safe_open

    try:
        with safe_open(f, framework="pt", device="cpu") as handle:
            return read(handle)
    except Exception as e:
        raise LayerSkipError(f"cannot read {f}: corrupt or truncated safetensors ({e})") from e


class StateDictSource:
    """A state dict whose tensors are memory maps (`torch.load(mmap=True)`): read on first touch."""

    def __init__(self, sd: dict[str, Tensor]):
        self._sd = sd

    def names(self) -> set[str]:
        return set(self._sd)

    def get(self, name: str) -> Tensor:
        return self._sd[name]


class GGUFSource:
    """A GGUF file's tensors, each dequantised to float32 when asked for (numpy, in gguf-py)."""

    def __init__(self, path: Path):
        self.path = path
        self._tensors = {t.name: t for t in gguf_reader(path).tensors}

    def names(self) -> set[str]:
        return set(self._tensors)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Dequantised shapes, from the metadata alone (GGUF lists dimensions innermost first)."""
        return {name: tuple(int(d) for d in reversed(t.shape)) for name, t in self._tensors.items()}

    def array(self, name: str) -> np.ndarray:
        from gguf.quants import dequantize

        t = self._tensors[name]
        try:  # a copy: dequantize returns unquantised tensors as views of the read-only memory map
            return np.array(dequantize(t.data, t.tensor_type), dtype=np.float32)
        except Exception as e:
            raise LayerSkipError(f"cannot dequantize {self.path}: corrupt or truncated GGUF ({e})") from e

    def get(self, name: str) -> Tensor:
        return torch.from_numpy(self.array(name))


def open_hf(path: Path) -> TensorSource:
    """The weights of a HF model directory: sharded or single safetensors, else pytorch_model.bin."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in path.glob("*.safetensors"))
    if files:
        return SafetensorsSource.open([path / f for f in files])
    bin_file = path / "pytorch_model.bin"
    if not bin_file.is_file():
        raise LayerSkipError(f"{path} has no *.safetensors weights")
    try:  # weights_only: never unpickle arbitrary objects from a checkpoint
        return StateDictSource(torch.load(bin_file, map_location="cpu", weights_only=True, mmap=True))
    except Exception as e:
        raise LayerSkipError(f"cannot read {bin_file}: {e}") from e


def open_gguf(path: Path) -> TensorSource:
    """A GGUF file's float32 tensors: from the dequantisation cache, which a first load writes
    (one tensor at a time) and then reads back lazily like any safetensors file."""
    cached = weight_cache.cached(path)
    if cached is None:
        source = GGUFSource(path)
        if not weight_cache.save(path, source.shapes(), source.array):
            return source  # the cache cannot be written: dequantise as we load
        cached = weight_cache.cached(path)
        if cached is None:
            return source
    return SafetensorsSource.open([cached])


def gguf_reader(path: Path) -> Any:
    """gguf-py's reader of `path`. The latest one is kept (until `release_gguf_reader`), so a
    first load takes the config and the weights from one parse: gguf-py decodes the whole
    vocabulary to reach either (~5 s of SmolLM2's cold load per parse)."""
    try:
        stat = path.stat()
    except OSError as e:
        raise LayerSkipError(f"cannot read {path}: {e}") from e
    return _reader(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1)
def _reader(path: Path, size: int, mtime_ns: int) -> Any:
    """Keyed by the file's size and time too: a file written again is parsed again."""
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except Exception as e:
        raise LayerSkipError(f"cannot read {path}: not a valid GGUF file or truncated ({e})") from e


def release_gguf_reader() -> None:
    """Drop the kept reader: its memory map holds every page of the file a load touched."""
    _reader.cache_clear()


def read_gguf_fields(reader: Any) -> dict[str, Any]:
    """Decode the scalar/string/array metadata of a GGUF file into plain Python values."""
    fields: dict[str, Any] = {}
    for key, field in reader.fields.items():
        try:
            fields[key] = field.contents()
        except Exception:  # fields we cannot decode are not needed
            continue
    return fields
