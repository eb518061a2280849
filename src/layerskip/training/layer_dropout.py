"""Layer dropout (paper §4.1): each sequence skips layer l with probability p_l,t = S(t) D(l) p_max.

Later layers are dropped more so that early layers learn to do without them; the time
curriculum S(t) ramps dropout in when training from scratch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from layerskip.training.config import LayerDropoutSection


def depth_scale(kind: str, layer: int, n_layers: int) -> float:
    """D(l): 0 at the first layer, 1 at the last; `uniform` is 1 everywhere."""
    if kind == "uniform" or n_layers == 1:
        return 1.0
    if kind == "linear":
        return layer / (n_layers - 1)
    return math.exp(layer * math.log(2) / (n_layers - 1)) - 1  # exp


def time_scale(kind: str, step: int, total_steps: int) -> float:
    """S(t): 1 without a curriculum; exponential from 0 to 1 over training from scratch."""
    if kind == "none" or total_steps <= 1:
        return 1.0
    return math.exp(min(step, total_steps - 1) * math.log(2) / (total_steps - 1)) - 1


def drop_rates(cfg: LayerDropoutSection, n_layers: int, step: int, total_steps: int) -> list[float]:
    """p_l at `step` for every layer."""
    s = time_scale(cfg.curriculum, step, total_steps)
    return [s * depth_scale(cfg.scale, layer, n_layers) * cfg.p_max for layer in range(n_layers)]


def apply_with_dropout(layer: Callable[[Tensor], Tensor], h: Tensor, p: float) -> Tensor:
    """Run `layer` on the sequences of h [B, T, D] that keep it; the others pass through.

    Only the kept sequences are computed, so dropout also saves their compute. The layer is
    called even when no sequence keeps it: under FSDP every process must take part in every
    layer's all-gather.
    """
    if p <= 0.0:
        return layer(h)
    keep = torch.rand(h.shape[0], device=h.device) >= p
    idx = keep.nonzero().squeeze(1)
    return h.index_copy(0, idx, layer(h.index_select(0, idx)))

