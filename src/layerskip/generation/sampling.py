"""Turn logits into the distribution we sample from; shared by target and draft so that
speculative sampling compares like with like."""

from __future__ import annotations

import torch
from torch import Tensor

from layerskip.errors import LayerSkipError
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


class LogitAdjuster:
    """OpenAI's frequency and presence penalties and logit_bias, on logits of the full vocabulary:

        logits[j] + bias[j] - frequency_penalty * c[j] - presence_penalty * (c[j] > 0)

    where c[j] counts token j among the tokens generated so far (not the prompt, as OpenAI).
    Drafts and verification are adjusted alike, each row seeing the drafts before it, so
    self-speculation stays lossless with respect to the adjusted target. Inactive (all zero) it
    returns logits untouched.
    """

    def __init__(self, cfg: GenerationConfig, vocab_size: int, device: torch.device | str):
        self.frequency, self.presence = cfg.frequency_penalty, cfg.presence_penalty
        self.active = bool(self.frequency or self.presence or cfg.logit_bias)
        self.counts = torch.zeros(vocab_size, device=device)
        self.bias = torch.zeros(vocab_size, device=device)
        if cfg.logit_bias:
            if max(cfg.logit_bias) >= vocab_size:
                raise LayerSkipError(f"logit_bias: token id {max(cfg.logit_bias)} is outside the vocabulary "
                                     f"(0..{vocab_size - 1})")
            ids = torch.tensor(list(cfg.logit_bias), device=device)
            self.bias[ids] = torch.tensor(list(cfg.logit_bias.values()), dtype=self.bias.dtype, device=device)

    def commit(self, ids: list[int]) -> None:
        """Count tokens the output now holds."""
        if self.active:
            self.counts.index_add_(0, torch.tensor(ids, device=self.counts.device), self.counts.new_ones(len(ids)))

    def __call__(self, logits: Tensor, drafts: list[Tensor] = (), columns: Tensor | None = None) -> Tensor:
        """One row of logits [V] after the committed tokens and then `drafts` (token ids, 0-d);
        `columns` are the vocabulary ids a draft head's reduced logits [N] stand for."""
        if not self.active:
            return logits
        counts = self.counts
        if len(drafts):
            counts = counts + torch.bincount(torch.stack(drafts), minlength=len(counts))
        delta = self._delta(counts)
        return logits.float() + (delta if columns is None else delta[columns])

    def rows(self, logits: Tensor, drafts: Tensor) -> Tensor:
        """Verification logits [n + 1, V]: row i follows the committed tokens and drafts[:i] [n]."""
        if not self.active:
            return logits
        seen = torch.nn.functional.one_hot(drafts, len(self.counts)).float().cumsum(0)  # [n, V]
        counts = self.counts + torch.cat([seen.new_zeros(1, len(self.counts)), seen])
        return logits.float() + self._delta(counts)

    def _delta(self, counts: Tensor) -> Tensor:
        return self.bias - self.frequency * counts - self.presence * (counts > 0).float()


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
