"""Self-speculative decoding: draft with layers 0..E-1, verify with layers E..L-1.

Both phases share the model's weights, its one KV cache and its exit-query cache. A round:
  draft:  the pending token and each draft go through layers 0..E-1 (their layer-E states are
          kept in the exit-query cache); the early exit proposes up to k tokens.
  verify: layers E..L-1 run once over the k+1 cached states at positions pos..pos+k.
  accept: the longest agreeing prefix plus one token from the full model. Rejected positions
          are rolled back by not advancing `pos`; their cache slots are overwritten next round.

The round itself runs in `generation/batch.py` (one sequence is a batch of one); this module holds
the acceptance rules it applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from layerskip.generation.config import GenerationConfig
from layerskip.generation.sampling import processed_probs, sample


@dataclass
class Draft:
    tokens: Tensor  # [n] drafted token ids
    probs: Tensor | None  # [n, V] draft distributions q (sampling only)


def accept_sampled(
    d: Draft, logits: Tensor, cfg: GenerationConfig, generator: torch.Generator | None
) -> tuple[int, int]:
    """Speculative sampling (Leviathan et al. / Chen et al.): lossless w.r.t. the target p.

    Draft i is accepted with probability min(1, p_i(d_i) / q_i(d_i)); at the first rejection the
    token is drawn from norm(max(p_i - q_i, 0)); if all are accepted, a bonus token from p_n.
    """
    p = processed_probs(logits, cfg)  # [n, V]
    n_drafts = d.tokens.shape[0]
    if n_drafts:
        idx = d.tokens[:, None]
        ratio = p[:-1].gather(-1, idx)[:, 0] / d.probs.gather(-1, idx)[:, 0]
        u = torch.rand(n_drafts, generator=generator, device=p.device)
        n_acc = (u < ratio).int().cumprod(0).sum()
        residual = (p[:-1] - d.probs).clamp_min(0)
        total = residual.sum(-1, keepdim=True)
        residual = torch.where(total > 0, residual / total.clamp_min(1e-30), p[:-1])
        dists = torch.cat([residual, p[-1:]])
    else:
        n_acc, dists = torch.zeros((), dtype=torch.long, device=p.device), p
    choices = sample(dists, generator)
    n, tok = torch.stack([n_acc.long(), choices[n_acc]]).tolist()
    return n, tok


def next_k(k_max: int, n_drafted: int, n_accepted: int) -> int:
    """Adaptive k: one more after a fully accepted draft, what was accepted (+1) otherwise."""
    return min(k_max, n_drafted + 1) if n_accepted == n_drafted else max(1, n_accepted + 1)
