"""Turn logits into the distribution we sample from; shared by target and draft so that
speculative sampling compares like with like."""

from __future__ import annotations

import torch
from torch import Tensor

from layerskip.generation.config import GenerationConfig


def processed_probs(logits: Tensor, cfg: GenerationConfig) -> Tensor:
    """Softmax of logits [..., V] after temperature, top-k and top-p, in float32."""
    logits = logits.float() / max(cfg.temperature, 1e-5)
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1:
        sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the tokens before it already cover top_p; the first always stays.
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= cfg.top_p
        drop_sorted[..., 0] = False  # a top_p below float32's smallest value (e.g. 1e-46) would drop all
        drop = drop_sorted.scatter(-1, idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits.softmax(-1)


def sample(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One token per row of probs [..., V] (returns [...])."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def next_token(logits: Tensor, cfg: GenerationConfig, generator: torch.Generator | None) -> Tensor:
    """Greedy argmax or a sample from the processed distribution, for logits [V]."""
    if cfg.greedy:
        return logits.argmax(-1)
    return sample(processed_probs(logits, cfg), generator)


def make_generator(cfg: GenerationConfig, device: torch.device | str = "cpu") -> torch.Generator | None:
    if cfg.greedy:
        return None
    g = torch.Generator(device=device)
    if cfg.seed is None:
        g.seed()
    else:
        g.manual_seed(cfg.seed)
    return g
