"""Token-by-token decoding through layers 0..end_layer-1: autoregressive when end_layer is the
model's depth, early exit when it is E."""

from __future__ import annotations

import torch
from torch import Tensor

from layerskip.generation.config import GenerationConfig
from layerskip.generation.output import TokenSink
from layerskip.generation.sampling import LogitAdjuster, next_token
from layerskip.generation.steps import Steps, prefill
from layerskip.model.llama import Transformer, positions


def decode(
    model: Transformer,
    prompt: Tensor,
    cfg: GenerationConfig,
    sink: TokenSink,
    generator: torch.Generator | None,
    steps: Steps,
    adjust: LogitAdjuster,
    end_layer: int | None = None,
) -> None:
    """Generate into `sink` until it says stop; positions stay on the device (no sync but the sink's).
    `adjust` applies penalties and logit_bias."""
    n = prompt.shape[0]
    logits = prefill(model, prompt[None], positions(0, n, prompt.device), end_layer)[0]
    pos = positions(n, 1, prompt.device)
    while True:
        token = next_token(adjust(logits), cfg, generator)
        if sink.push([int(token)]):
            return
        logits = steps.decode(model, token.view(1, 1), pos, end_layer)[0]
        pos = pos + 1
