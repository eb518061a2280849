"""Batched log-likelihood of continuations, at full depth or at an early exit.

Independent of lm-eval so it can be tested on a tiny model. Sequences are right-padded: with
causal attention a real token never attends to the padding after it, so no mask is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from layerskip.model.llama import Transformer


@dataclass(frozen=True)
class ContinuationScore:
    logprob: float  # sum of log p(continuation token | everything before it)
    is_greedy: bool  # every continuation token is the argmax at its position


def score_continuations(
    model: Transformer,
    requests: list[tuple[list[int], list[int]]],
    *,
    exit_layer: int | None = None,
    batch_size: int = 1,
    max_length: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[ContinuationScore]:
    """Score each (context ids, continuation ids) pair; layers 0..exit_layer-1 (None: all).

    Inputs longer than max_length are cut from the left. Requests with the same input and
    continuation length (multiple choice with one-token answers) share one forward pass.
    `on_batch(n)` is called with the number of requests finished after each batch.
    """
    max_length = max_length or model.config.max_seq_len
    groups: dict[tuple[tuple[int, ...], int], list[int]] = {}
    for i, (context, continuation) in enumerate(requests):
        if not context or not continuation:
            raise ValueError("context and continuation must both be non-empty token lists")
        whole = (context + continuation)[-(max_length + 1) :]
        groups.setdefault((tuple(whole[:-1]), len(continuation)), []).append(i)

    keys = sorted(groups, key=lambda k: -len(k[0]))  # longest first: padding stays small
    scores: list[ContinuationScore | None] = [None] * len(requests)
    with torch.inference_mode():
        for start in range(0, len(keys), batch_size):
            batch = keys[start : start + batch_size]
            for key, logprobs in zip(batch, _continuation_logprobs(model, batch, exit_layer)):
                for i in groups[key]:
                    scores[i] = _score(logprobs, requests[i][1])
            if on_batch is not None:
                on_batch(sum(len(groups[k]) for k in batch))
    return scores  # type: ignore[return-value]


def _continuation_logprobs(
    model: Transformer, batch: list[tuple[tuple[int, ...], int]], exit_layer: int | None
) -> list[Tensor]:
    """Log-probabilities [n_scored, vocab] at the last n_scored positions of each input."""
    device = model.output.weight.device
    lengths = [len(inp) for inp, _ in batch]
    tokens = torch.zeros(len(batch), max(lengths), dtype=torch.long, device=device)
    for row, (inp, _) in enumerate(batch):
        tokens[row, : len(inp)] = torch.tensor(inp, device=device)
    h = model.run_layers(model.embed(tokens), None, 0, exit_layer)  # [B, T, D]
    # The head runs only where a continuation token is predicted: the LM head is most of the
    # compute of a small model, and most positions belong to the context.
    scored = torch.cat([h[row, n - k : n] for row, (n, (_, k)) in enumerate(zip(lengths, batch))])
    logprobs = model.exit_logits(scored).float().log_softmax(-1)
    return list(logprobs.split([k for _, k in batch]))


def _score(logprobs: Tensor, continuation: list[int]) -> ContinuationScore:
    # A shared input can have continuations of the same length that differ in their tokens.
    target = torch.tensor(continuation, device=logprobs.device)
    picked = logprobs.gather(-1, target[:, None]).squeeze(-1)
    return ContinuationScore(float(picked.sum()), bool((logprobs.argmax(-1) == target).all()))
