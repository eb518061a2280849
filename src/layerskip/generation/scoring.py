"""Log-probabilities of given tokens under the model: one forward pass over the sequence, then
log_softmax. The server's `logprobs` and `echo` come from here, so they are the distribution of
the model that decides the tokens (every layer, or layers 0..E-1 for early exit), never a draft's,
and the decoding loops pay nothing for them. eval/scoring.py does the batched lm-eval version
(sums over continuations); both score the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from layerskip.model.llama import Transformer


@dataclass
class TokenLogprobs:
    """Per scored token: its log-probability and the `top_n` most likely ids with theirs."""

    token_ids: list[int]
    logprobs: list[float]
    top_ids: list[list[int]]
    top_logprobs: list[list[float]]

    def __len__(self) -> int:
        return len(self.token_ids)

    def __getitem__(self, s: slice) -> TokenLogprobs:
        return TokenLogprobs(self.token_ids[s], self.logprobs[s], self.top_ids[s], self.top_logprobs[s])

    def __add__(self, other: TokenLogprobs) -> TokenLogprobs:
        return TokenLogprobs(self.token_ids + other.token_ids, self.logprobs + other.logprobs,
                             self.top_ids + other.top_ids, self.top_logprobs + other.top_logprobs)


def row_logprobs(logits: Tensor, tokens: Tensor, top_n: int) -> TokenLogprobs:
    """Log-probabilities of tokens [n] under logits rows [n, V], with the top_n alternatives."""
    logprobs = logits.float().log_softmax(-1)
    chosen = logprobs.gather(-1, tokens[:, None])[:, 0]
    top = logprobs.topk(min(top_n, logprobs.shape[-1]), dim=-1)
    return TokenLogprobs(tokens.tolist(), chosen.tolist(), top.indices.tolist(), top.values.tolist())


def sequence_logprobs(
    model: Transformer, ids: list[int], start: int, top_n: int, exit_layer: int | None = None
) -> TokenLogprobs:
    """Scores of ids[start:], each given the tokens before it (start >= 1), from layers
    0..exit_layer-1 (None: all); a forward pass without the KV cache, so generation state is kept."""
    if not 1 <= start <= len(ids):
        raise ValueError(f"start must be in 1..{len(ids)}, got {start}")
    if start == len(ids):
        return TokenLogprobs([], [], [], [])
    device = model.output.weight.device
    tokens = torch.tensor(ids, device=device)
    with torch.inference_mode():
        h = model.run_layers(model.embed(tokens[None, :-1]), None, 0, exit_layer)[0, start - 1 :]
        return row_logprobs(model.exit_logits(h), tokens[start:], top_n)
