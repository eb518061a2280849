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
        if name.endswith("norm.weight"):  # unit scale: weight 1, or 0 where the norm adds the 1
            torch.nn.init.constant_(p, 0.0 if cfg.arch.norm_unit_offset else 1.0)
        else:
            torch.nn.init.normal_(p, std=std)
    return model.eval()


@torch.no_grad()
def silence_layers(model: Transformer, from_layer: int) -> Transformer:
    """Make the output projections of layers >= from_layer output exact zeros: each layer becomes
    the identity on the residual stream, so draft acceptance at any E >= from_layer is 100 %.

    Every floating-point tensor of the projection is zeroed, so this holds for a quantised layer
    too: int8 and int4 scales (and int4 zero points) of 0 decode every weight to 0, whereas zeroed
    int4 codes would decode to each group's minimum.
    """
    for layer in model.layers[from_layer:]:
        for module in (layer.attention.wo, layer.feed_forward.w2):
            for t in (*module.parameters(), *module.buffers()):
                if t.is_floating_point():
                    t.zero_()
    return model
