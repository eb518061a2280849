"""Synthetic models for tests and benchmarks: tiny random ones, and "perfect-draft" ones whose
layers from E on contribute nothing, so the early exit at E equals the final output."""

from __future__ import annotations

import torch

from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer


def random_model(cfg: ModelConfig, seed: int = 0, std: float = 0.02) -> Transformer:
    """A randomly initialised model (normal weights, unit norms), deterministic in `seed`."""
    torch.manual_seed(seed)
    model = Transformer(cfg)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            torch.nn.init.ones_(p)
        else:
            torch.nn.init.normal_(p, std=std)
    return model.eval()


@torch.no_grad()
def silence_layers(model: Transformer, from_layer: int) -> Transformer:
    """Zero the output projections of layers >= from_layer: each becomes the identity on the
    residual stream, so draft acceptance at any E >= from_layer is 100 %."""
    for layer in model.layers[from_layer:]:
        layer.attention.wo.weight.zero_()
        layer.feed_forward.w2.weight.zero_()
    return model
