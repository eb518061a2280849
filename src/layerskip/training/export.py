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

from layerskip.errors import LayerSkipError
from layerskip.generation.costs import memory_bound_costs
from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer
from layerskip.model.saving import save_pretrained
from layerskip.training import lora
from layerskip.training.config import TrainConfig


def estimated_speedup(agreement: float, exit_layer: int, cfg: ModelConfig, max_draft: int = 8) -> float:
    """Self-speculation speedup at one exit with the best k, taking acceptance ≈ top-1 agreement
    and decoding as memory-bound (`cost_model.memory_bound_costs`)."""
    costs = memory_bound_costs(cfg, max_tokens=max_draft + 1)
    return max(costs.speedup(exit_layer, k, agreement) for k in range(1, max_draft + 1))


def recommend_exit(agreement: dict[int, float], cfg: ModelConfig) -> int | None:
    """The evaluated exit with the best estimated speedup, if any beats plain decoding."""
    scored = {e: estimated_speedup(a, e, cfg) for e, a in agreement.items() if e < cfg.n_layers}
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
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise LayerSkipError(
            f"trained state does not match the model: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
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

