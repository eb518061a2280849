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

from layerskip.bench.cost_model import expected_tokens_per_round
from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer
from layerskip.model.saving import save_pretrained
from layerskip.training import lora
from layerskip.training.config import TrainConfig


def _layer_and_head_params(cfg: ModelConfig) -> tuple[int, int]:
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    layer = cfg.dim * (q + 2 * kv) + q * cfg.dim + 3 * cfg.dim * cfg.intermediate_size
    return layer, cfg.vocab_size * cfg.dim


def estimated_speedup(agreement: float, exit_layer: int, cfg: ModelConfig, max_draft: int = 8) -> float:
    """Self-speculation speedup at one exit, taking acceptance ≈ top-1 agreement and decoding as
    memory-bound (a pass costs the weights it reads, whatever its token count).

    The round of `bench.cost_model` in weight units: k+1 draft passes through E layers and k draft
    heads, one verification through the other layers and the head. A small model's LM head weighs
    as much as many layers, which makes every draft token expensive.
    """
    layer, head = _layer_and_head_params(cfg)
    token = cfg.n_layers * layer + head
    best = 0.0
    for k in range(1, max_draft + 1):
        round_cost = (k + 1) * exit_layer * layer + k * head + (cfg.n_layers - exit_layer) * layer + head
        best = max(best, expected_tokens_per_round(agreement, k) * token / round_cost)
    return best


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

