"""What a finished run leaves behind: a HF model directory or a peft LoRA adapter.

Both record the recommended exit layer and the training settings, so that `generate` and
`serve` can pick the exit without being told.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer
from layerskip.model.saving import save_pretrained
from layerskip.training import lora
from layerskip.training.config import TrainConfig


def estimated_speedup(agreement: float, exit_layer: int, n_layers: int, max_draft: int = 8) -> float:
    """Rough self-speculation speedup at one exit, taking draft acceptance ≈ top-1 agreement.

    A round drafts k tokens at E/L of a full step each and verifies them with the remaining
    layers; it yields the accepted prefix plus one token. Best k wins.
    """
    ratio = exit_layer / n_layers
    best = 0.0
    for k in range(1, max_draft + 1):
        tokens = sum(agreement**i for i in range(k + 1))  # expected accepted + the bonus token
        cost = k * ratio + (1 - ratio)
        best = max(best, tokens / cost)
    return best


def recommend_exit(agreement: dict[int, float], n_layers: int) -> int | None:
    """The evaluated exit with the best estimated speedup, if any beats plain decoding."""
    scored = {e: estimated_speedup(a, e, n_layers) for e, a in agreement.items() if e < n_layers}
    if not scored:
        return None
    best = max(scored, key=scored.get)
    return best if scored[best] > 1.0 else None


def save_model(
    state: dict[str, Tensor], model_cfg: ModelConfig, path: Path, tokenizer: Any, training: dict[str, Any]
) -> None:
    """A HF model directory (model.safetensors, config.json, tokenizer) from our full state dict,
    with the training settings recorded under `layerskip.training` in config.json."""
    with torch.device("meta"):
        model = Transformer(model_cfg)
    model.load_state_dict(state, strict=False, assign=True)
    if model_cfg.tie_word_embeddings:
        model.output.weight = model.tok_embeddings.weight
    save_pretrained(model, path, tokenizer if hasattr(tokenizer, "save_pretrained") else None)
    config = json.loads((path / "config.json").read_text())
    config.setdefault("layerskip", {})["training"] = training
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def save_adapter(
    state: dict[str, Tensor], model_cfg: ModelConfig, path: Path, base: str, train_cfg: TrainConfig
) -> None:
    meta = {"recommended_exit_layer": model_cfg.recommended_exit_layer, "training": train_cfg.to_dict()}
    lora.save_adapter(state, model_cfg, train_cfg.lora, path, base, meta)

