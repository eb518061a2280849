"""State-dict name mapping between HF/GGUF checkpoints and our fused layout.

Ours fuses q/k/v into `wqkv` and gate/up into `w13`; everything else is a rename. Loading goes
through a `Mapping` (which checkpoint tensors make each of ours) so it can read one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from torch import Tensor

from layerskip.errors import LayerSkipError
from layerskip.model.config import ModelConfig

# (our name inside a block, HF name inside `model.layers.{i}.`, GGUF name inside `blk.{i}.`)
_BLOCK_RENAMES = [
    ("attention.wo.weight", "self_attn.o_proj.weight", "attn_output.weight"),
    ("feed_forward.w2.weight", "mlp.down_proj.weight", "ffn_down.weight"),
    ("attention_norm.weight", "input_layernorm.weight", "attn_norm.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight", "ffn_norm.weight"),
]
_TOP_RENAMES = [
    ("tok_embeddings.weight", "model.embed_tokens.weight", "token_embd.weight"),
    ("norm.weight", "model.norm.weight", "output_norm.weight"),
    ("output.weight", "lm_head.weight", "output.weight"),
]
_QKV = ("q_proj", "k_proj", "v_proj")
_GATE_UP = ("gate_proj", "up_proj")


@dataclass(frozen=True)
class Mapping:
    """How each of our tensors is built from a checkpoint's: its parts (checkpoint names, joined
    along rows in this order), each passed through `prepare` first. The loader reads one tensor at
    a time through it; a tied head is absent (the loader ties it to the embedding)."""

    parts: dict[str, tuple[str, ...]]
    prepare: Callable[[str, Tensor], Tensor] = lambda name, t: t


def hf_mapping(names: Collection[str], cfg: ModelConfig) -> Mapping:
    """Our tensors from a HF LlamaForCausalLM checkpoint holding `names`."""
    parts = {ours: (hf,) for ours, hf, _ in _TOP_RENAMES}
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        for ours, hf, _ in _BLOCK_RENAMES:
            parts[f"layers.{i}.{ours}"] = (p + hf,)
        parts[f"layers.{i}.attention.wqkv.weight"] = tuple(f"{p}self_attn.{n}.weight" for n in _QKV)
        parts[f"layers.{i}.feed_forward.w13.weight"] = tuple(f"{p}mlp.{n}.weight" for n in _GATE_UP)
    _tie_or_require_head(parts, names, cfg)
    _require(names, parts, "checkpoint is missing tensor {!r} (incomplete or not a Llama model?)")
    return Mapping(parts)


def to_hf(sd: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Map our state dict back to HF names (the inverse of `hf_mapping`)."""
    out: dict[str, Tensor] = {}
    for ours, hf, _ in _TOP_RENAMES:
        if ours == "output.weight" and cfg.tie_word_embeddings:
            continue
        out[hf] = sd[ours]
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        for ours, hf, _ in _BLOCK_RENAMES:
            out[p + hf] = sd[f"layers.{i}.{ours}"]
        for name, w in zip(_QKV, sd[f"layers.{i}.attention.wqkv.weight"].split([q, kv, kv])):
            out[f"{p}self_attn.{name}.weight"] = w
        for name, w in zip(_GATE_UP, sd[f"layers.{i}.feed_forward.w13.weight"].chunk(2)):
            out[f"{p}mlp.{name}.weight"] = w
    return {k: v.contiguous() for k, v in out.items()}


Array = TypeVar("Array", np.ndarray, Tensor)


def unpermute_rotary(w: Array, n_heads: int) -> Array:
    """Undo the Q/K row interleaving that GGUF conversion applies for its rotary layout.

    GGUF stores each head's rows as pairs (x0, x_half, x1, x_half+1, ...); HF and we use the
    half-split layout, so the pairs are regrouped back into two halves per head.
    """
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_mapping(names: Collection[str], cfg: ModelConfig) -> Mapping:
    """Our tensors from dequantised GGUF tensors ([out, in]) holding `names`; a file without
    `output.weight` ties the head (sets `cfg.tie_word_embeddings`)."""
    parts = {ours: (gg,) for ours, _, gg in _TOP_RENAMES}
    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        for ours, _, gg in _BLOCK_RENAMES:
            parts[f"layers.{i}.{ours}"] = (p + gg,)
        parts[f"layers.{i}.attention.wqkv.weight"] = (p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight")
        parts[f"layers.{i}.feed_forward.w13.weight"] = (p + "ffn_gate.weight", p + "ffn_up.weight")
    if "output.weight" not in names:
        cfg.tie_word_embeddings = True
    _tie_or_require_head(parts, names, cfg)
    _require(names, parts, "GGUF file is missing tensor {!r} (truncated or not a Llama model?)")

    def prepare(name: str, t: Tensor) -> Tensor:
        if name.endswith("attn_q.weight"):
            return unpermute_rotary(t, cfg.n_heads)
        if name.endswith("attn_k.weight"):
            return unpermute_rotary(t, cfg.n_kv_heads)
        return t

    return Mapping(parts, prepare)


def _require(names: Collection[str], parts: dict[str, tuple[str, ...]], message: str) -> None:
    for part in (n for group in parts.values() for n in group):
        if part not in names:
            raise LayerSkipError(message.format(part))


def _tie_or_require_head(parts: dict[str, tuple[str, ...]], names: Collection[str], cfg: ModelConfig) -> None:
    """A tied head is not read (the loader ties it); an untied one must be in the checkpoint."""
    head = parts["output.weight"][0]
    if cfg.tie_word_embeddings:
        del parts["output.weight"]
    elif head not in names:
        raise LayerSkipError("checkpoint has no LM head (lm_head.weight) and does not tie embeddings")
