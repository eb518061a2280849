"""Token-by-token decoding through layers 0..end_layer-1: autoregressive when end_layer is the
model's depth, early exit when it is E."""

from __future__ import annotations

import torch
from torch import Tensor

from layerskip.generation.config import GenerationConfig
from layerskip.generation.output import TokenSink
from layerskip.generation.sampling import next_token
from layerskip.model.llama import Transformer


def prefill(model: Transformer, prompt: Tensor, end_layer: int | None = None) -> Tensor:
    """Fill the KV cache with the prompt [T]; return the logits of its last position [V]."""
    return model(prompt[None], start_pos=0, end_layer=end_layer)[0, -1]


def decode_one_token(model: Transformer, token: int, pos: int, end_layer: int | None) -> Tensor:
    x = torch.tensor([[token]], device=model.output.weight.device)
    return model(x, start_pos=pos, end_layer=end_layer)[0, -1]


def decode(
    model: Transformer,
    prompt: Tensor,
    cfg: GenerationConfig,
    sink: TokenSink,
    generator: torch.Generator | None,
    end_layer: int | None = None,
) -> None:
    """Generate into `sink` until it says stop."""
    logits = prefill(model, prompt, end_layer)
    pos = prompt.shape[0]
    while True:
        token = int(next_token(logits, cfg, generator))
        if sink.push([token]):
            return
        logits = decode_one_token(model, token, pos, end_layer)
        pos += 1
