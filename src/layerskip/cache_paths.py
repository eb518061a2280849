"""Where layerskip keeps what it derives once (tokenizers, dequantised weights, tuned settings)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """$LAYERSKIP_CACHE, default ~/.cache/layerskip."""
    return Path(os.environ.get("LAYERSKIP_CACHE", Path.home() / ".cache" / "layerskip"))


def file_key(path: Path) -> str:
    """A short key of a file's path, size and mtime: a changed file gets a new key."""
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def write_text_whole(path: Path, text: str) -> None:
    """Write `path` whole or not at all: concurrent writers (pytest-xdist workers, server replicas)
    each write their own temporary file and rename it into place, so no reader sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
