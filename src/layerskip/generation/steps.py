"""The steps decoding is made of, each with the same shapes at every position.

decode: tokens [B, 1] through layers 0..end-1 and the head             -> logits [B, V]
draft:  tokens [B, 1] through layers 0..E-1, then the draft head       -> (states [B, 1, D], logits [B, N])
early:  tokens [B, 1] through layers 0..E-1 (the last draft: no head)  -> states [B, 1, D]
verify: pending layer-E states [B, n, D] through layers E..L-1 + head  -> logits [B, n, V]
layers: states [B, n, D] through layers a..b-1 (the exit-layer controller's shadow exits) -> states

Positions are tensors [B, T] and attention reads the cache through a mask. Compiled
(model/compiled.py), a step reads the whole cache (span None), so nothing in it depends on a Python
number that changes per token: each traces once per shape and layer range. Eager, a step reads the
first `span` slots, a power of two (attention_span) that changes a few times per generation: a
server's cache is sized for its longest request, most of which short ones never use. Prefill, a
new length per prompt, always runs eagerly.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from layerskip.generation.draft_vocab import DraftHead
from layerskip.model.compiled import compile_step
from layerskip.model.llama import Transformer
from layerskip.model.packing import pack_for_decoding


def prepare_for_decoding(
    model: Transformer, max_seq_len: int, exit_query_len: int = 0, batch: int = 1, exit_layer: int | None = None,
    head_verifies: bool = True,
) -> None:
    """Caches for `batch` rows of `max_seq_len` positions, and the weights in their decoding layout
    (packing.py): for products of `batch` rows, and of a verification's `batch * exit_query_len`
    rows in the head (unless `head_verifies` is False: decoding starts autoregressively) and, with
    a fixed `exit_layer`, in the layers from it on (only verifications run those; drafts run the
    layers below it one token per row)."""
    model.setup_caches(max_seq_len, exit_query_len, batch)
    verified = model.layers[exit_layer:] if exit_layer is not None and exit_query_len else ()
    verified_rows = batch * max(exit_query_len, 1)
    pack_for_decoding(model, tied=model.tok_embeddings.weight, rows=batch, head_rows=verified_rows if head_verifies
                      else batch, verified=verified, verified_rows=verified_rows)


def prefill(
    model: Transformer, tokens: Tensor, input_pos: Tensor, end_layer: int | None = None, rows: Tensor | None = None
) -> Tensor:
    """Fill cache rows `rows` [B, 1] (default: all) with prompts [B, T] from position 0; logits of
    the last position [B, V]. Only that position goes through the head: over all T it would read
    the vocabulary matrix as a T-row product, the largest one in a step, for T-1 unused rows."""
    h = model.run_layers(model.embed(tokens), input_pos, 0, end_layer, from_start=True, rows=rows)
    return model.exit_logits(h[:, -1:])[:, -1]


def probed_prefill(
    model: Transformer, tokens: Tensor, input_pos: Tensor, probes: tuple[int, ...], last: int,
    rows: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """A prefill (as `prefill`) that also keeps the states after the `probes` layers (ascending,
    >= 1) at the last `last` positions: the full model's logits there [B, last, V] and the states
    [P, B, last, D] (the exit-layer controller's shadow exits over a prompt)."""
    h, at, states = model.embed(tokens), 0, []
    for layer in (*probes, model.n_layers):
        h = model.run_layers(h, input_pos, at, layer, from_start=True, rows=rows)
        states.append(h[:, -last:].clone())  # not a view: it would keep every layer's [B, T, D] alive
        at = layer
    return model.exit_logits(states.pop()), torch.stack(states)


MIN_SPAN = 64  # the shortest attention span eager steps use
Span = int | None  # cache slots a step attends over (None: all of them)


def attention_span(needed: int, cache_len: int) -> int:
    """The cache slots an eager step attends over when its positions reach `needed` - 1: the
    next power of two (at least MIN_SPAN), at most the whole cache. Powers of two keep the
    waste under 2x and the distinct shapes per generation few."""
    return min(cache_len, max(MIN_SPAN, 1 << (needed - 1).bit_length()))


def decode_step(model: Transformer, tokens: Tensor, input_pos: Tensor, end_layer: int | None,
                span: Span) -> Tensor:
    return model(tokens, input_pos, end_layer, span=span)[:, -1]


def draft_step(
    model: Transformer, head: DraftHead, tokens: Tensor, input_pos: Tensor, exit_layer: int, span: Span
) -> tuple[Tensor, Tensor]:
    h = model.run_layers(model.embed(tokens), input_pos, 0, exit_layer, span=span)
    return h, head.logits(model, h)[:, -1]


def early_step(model: Transformer, tokens: Tensor, input_pos: Tensor, exit_layer: int, span: Span) -> Tensor:
    return model.run_layers(model.embed(tokens), input_pos, 0, exit_layer, span=span)


def verify_step(model: Transformer, h: Tensor, input_pos: Tensor, exit_layer: int, span: Span) -> Tensor:
    return model.exit_logits(model.run_layers(h, input_pos, exit_layer, None, span=span))


def layers_step(model: Transformer, h: Tensor, input_pos: Tensor, start: int, end: int, span: Span) -> Tensor:
    return model.run_layers(h, input_pos, start, end, span=span)


@dataclass(frozen=True)
class Steps:
    decode: Callable[[Transformer, Tensor, Tensor, int | None, Span], Tensor]
    draft: Callable[[Transformer, DraftHead, Tensor, Tensor, int, Span], tuple[Tensor, Tensor]]
    early: Callable[[Transformer, Tensor, Tensor, int, Span], Tensor]
    verify: Callable[[Transformer, Tensor, Tensor, int, Span], Tensor]
    layers: Callable[[Transformer, Tensor, Tensor, int, int, Span], Tensor]
    compiled: bool = False  # compiled steps read the whole cache (span None), one shape throughout


_STEP_FUNCTIONS = (decode_step, draft_step, early_step, verify_step, layers_step)
EAGER = Steps(*_STEP_FUNCTIONS)

# Compiled steps per model and backend: compiling is the expensive part, done on first use.
_COMPILED: weakref.WeakKeyDictionary[Transformer, dict[str, Steps]] = weakref.WeakKeyDictionary()


def steps_for(model: Transformer, compile: bool | str) -> Steps:
    """Eager steps, or the model's compiled ones (True: inductor; a string names another backend)."""
    if not compile:
        return EAGER
    backend = "inductor" if compile is True else compile
    per_backend = _COMPILED.setdefault(model, {})
    if backend not in per_backend:
        device = model.tok_embeddings.weight.device.type
        per_backend[backend] = Steps(*(compile_step(f, device, backend) for f in _STEP_FUNCTIONS), compiled=True)
    return per_backend[backend]
