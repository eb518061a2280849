"""Early-exit loss (paper §4.2): every enabled exit is scored through the model's own final norm
and LM head, with per-layer weights and a curriculum choosing which exits count at each step.

Exits are numbered by how many layers ran: exit E is the output of layers 0..E-1, so exit L is
the model's normal output (the paper's layer index is l = E - 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from layerskip.training.config import EarlyExitSection

IGNORE_INDEX = -100

# Scale functions e(l) share one signature: (l, n_layers, e_scale) -> unnormalised weight.


def paper_scale(layer: int, n_layers: int, e_scale: float) -> float:
    """The paper's e(l): e_scale * sum_{i<=l} i, and the last layer gets L-1 on top."""
    if layer < n_layers - 1:
        return e_scale * layer * (layer + 1) / 2
    return (n_layers - 1) + e_scale * (n_layers - 2) * (n_layers - 1) / 2


def linear_scale(layer: int, n_layers: int, e_scale: float) -> float:
    return float(layer + 1)


def uniform_scale(layer: int, n_layers: int, e_scale: float) -> float:
    return 1.0


SCALES: dict[str, Callable[[int, int, float], float]] = {
    "paper": paper_scale,
    "linear": linear_scale,
    "uniform": uniform_scale,
}


def candidate_exits(cfg: EarlyExitSection, n_layers: int) -> list[int]:
    """Exits the loss may use (1..L); the last layer is always one of them."""
    if not cfg.enabled:
        return [n_layers]
    chosen = range(1, n_layers) if cfg.layers is None else cfg.layers
    for e in chosen:
        if not 1 <= e <= n_layers:
            raise ValueError(f"early_exit.layers: exit {e} is outside 1..{n_layers}")
    return sorted(set(chosen) | {n_layers})


def enabled_exits(cfg: EarlyExitSection, n_layers: int, step: int, total_steps: int) -> list[int]:
    """The curriculum C(t, l): which candidate exits the loss uses at `step`."""
    exits = candidate_exits(cfg, n_layers)
    if cfg.curriculum == "rotational":  # every R-th layer, shifted by one each step
        keep = [e for e in exits if (e - 1) % cfg.rotation == step % cfg.rotation]
    elif cfg.curriculum == "gradual":  # last to first, all enabled by half of training
        n_on = 1 + math.floor(2 * n_layers * step / max(total_steps, 1))
        keep = [e for e in exits if e > n_layers - n_on]
    else:
        keep = exits
    return sorted(set(keep) | {n_layers})


def exit_weights(cfg: EarlyExitSection, exits: list[int], n_layers: int) -> list[float]:
    """Normalised weights ẽ(t, l) of the enabled exits; they sum to 1."""
    raw = [SCALES[cfg.scale](e - 1, n_layers, cfg.e_scale) for e in exits]
    total = sum(raw)
    if total <= 0:  # e.g. only exit 1 under the paper's scale, which weighs layer 0 by 0
        return [1.0 / len(exits)] * len(exits)
    return [w / total for w in raw]


def _chunk_loss(
    head: Callable[[Tensor], Tensor], h: Tensor, labels: Tensor, teacher: Tensor | None,
    distill: float, temperature: float,
) -> Tensor:
    """Summed loss of one chunk: (1-distill) CE to the labels + distill T² KL to the teacher."""
    logits = head(h).float()  # [N, V]
    loss = logits.new_zeros(())
    if distill < 1.0:
        loss = loss + (1 - distill) * F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    if teacher is not None and distill > 0.0:
        valid = labels != IGNORE_INDEX
        log_p = F.log_softmax(logits[valid] / temperature, dim=-1)
        kl = F.kl_div(log_p, teacher[valid], log_target=True, reduction="sum")
        loss = loss + distill * temperature**2 * kl
    return loss


def early_exit_losses(
    head: Callable[[Tensor], Tensor], hidden: dict[int, Tensor], labels: Tensor,
    teacher_h: Tensor | None, cfg: EarlyExitSection, n_layers: int,
) -> dict[int, Tensor]:
    """Mean loss of every exit in `hidden` over the unmasked tokens, chunk by chunk.

    hidden maps exit -> h [B, T, D]; labels [B, T]; teacher_h [B, T, D] are the teacher's
    last-layer hidden states (None: no distillation). Each (chunk, exit) is checkpointed, so at
    most one chunk's logits [chunk, V] are alive per exit in forward and in backward, and the
    teacher's log-probabilities are computed once per chunk for all exits.
    """
    labels = labels.flatten()
    flat = {e: h.flatten(0, 1) for e, h in hidden.items()}
    distill = cfg.distill_weight if cfg.enabled and teacher_h is not None else 0.0
    teacher_flat = teacher_h.flatten(0, 1) if distill > 0 else None
    totals = {e: labels.new_zeros((), dtype=torch.float32) for e in flat}
    for i in range(0, labels.shape[0], cfg.chunk_tokens):
        sl = slice(i, i + cfg.chunk_tokens)
        teacher = None
        if teacher_flat is not None:
            with torch.no_grad():
                teacher = F.log_softmax(head(teacher_flat[sl]).float() / cfg.temperature, dim=-1)
        for e, h in flat.items():
            # The last layer distils only from a separate teacher (distilling from itself is 0).
            d = distill if (e < n_layers or cfg.teacher == "base") else 0.0
            args = (head, h[sl], labels[sl], teacher, d, cfg.temperature)
            totals[e] = totals[e] + checkpoint(_chunk_loss, *args, use_reentrant=False)
    count = (labels != IGNORE_INDEX).sum().clamp(min=1)
    return {e: t / count for e, t in totals.items()}
