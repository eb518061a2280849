"""State-dict name mapping between HF/GGUF checkpoints and our fused layout.

Ours fuses q/k/v into `wqkv` (and their biases into `qkv_bias`) and gate/up into `w13`; everything
else is a rename. Families differ only in which tensors a block has and what HF calls its norms
(Gemma's `post_attention_layernorm` follows attention; Llama's precedes the MLP). Loading goes
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

# our name -> (HF names inside `model.layers.{i}.`, GGUF names inside `blk.{i}.`), parts joined along rows
Names = dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
_QKV = ("q_proj", "k_proj", "v_proj")
_GGUF_QKV = ("attn_q", "attn_k", "attn_v")
_BLOCK: Names = {
    "attention.wqkv.weight": (tuple(f"self_attn.{n}.weight" for n in _QKV), tuple(f"{n}.weight" for n in _GGUF_QKV)),
    "attention.wo.weight": (("self_attn.o_proj.weight",), ("attn_output.weight",)),
    "feed_forward.w13.weight": (("mlp.gate_proj.weight", "mlp.up_proj.weight"), ("ffn_gate.weight", "ffn_up.weight")),
    "feed_forward.w2.weight": (("mlp.down_proj.weight",), ("ffn_down.weight",)),
    "attention_norm.weight": (("input_layernorm.weight",), ("attn_norm.weight",)),
}
_PRE_FFN_NORM: Names = {"ffn_norm.weight": (("post_attention_layernorm.weight",), ("ffn_norm.weight",))}
_POST_NORMS: Names = {
    "post_attention_norm.weight": (("post_attention_layernorm.weight",), ("post_attention_norm.weight",)),
    "ffn_norm.weight": (("pre_feedforward_layernorm.weight",), ("ffn_norm.weight",)),
    "post_ffn_norm.weight": (("post_feedforward_layernorm.weight",), ("post_ffw_norm.weight",)),
}
_QK_NORM: Names = {
    "attention.q_norm.weight": (("self_attn.q_norm.weight",), ("attn_q_norm.weight",)),
    "attention.k_norm.weight": (("self_attn.k_norm.weight",), ("attn_k_norm.weight",)),
}
_QKV_BIAS: Names = {
    "attention.qkv_bias": (tuple(f"self_attn.{n}.bias" for n in _QKV), tuple(f"{n}.bias" for n in _GGUF_QKV)),
}
_TOP: Names = {
    "tok_embeddings.weight": (("model.embed_tokens.weight",), ("token_embd.weight",)),
    "norm.weight": (("model.norm.weight",), ("output_norm.weight",)),
    "output.weight": (("lm_head.weight",), ("output.weight",)),
}


def block_names(cfg: ModelConfig) -> Names:
    """The tensors of one block of this family, with their HF and GGUF names."""
    arch = cfg.arch
    names = _BLOCK | (_POST_NORMS if arch.post_norms else _PRE_FFN_NORM)
    if arch.qk_norm:
        names |= _QK_NORM
    if arch.qkv_bias:
        names |= _QKV_BIAS
    return names


def _parts(cfg: ModelConfig, gguf: bool) -> dict[str, tuple[str, ...]]:
    """Our tensor name -> the checkpoint names it is joined from, for every tensor of the model."""
    parts = {ours: names[gguf] for ours, names in _TOP.items()}
    prefix = "blk.{}." if gguf else "model.layers.{}."
    for i in range(cfg.n_layers):
        p = prefix.format(i)
        for ours, names in block_names(cfg).items():
            parts[f"layers.{i}.{ours}"] = tuple(p + n for n in names[gguf])
    return parts


@dataclass(frozen=True)
class Mapping:
    """How each of our tensors is built from a checkpoint's: its parts (checkpoint names, joined
    along rows in this order), each passed through `prepare` first. The loader reads one tensor at
    a time through it; a tied head is absent (the loader ties it to the embedding)."""

    parts: dict[str, tuple[str, ...]]
    prepare: Callable[[str, Tensor], Tensor] = lambda name, t: t


def hf_mapping(names: Collection[str], cfg: ModelConfig) -> Mapping:
    """Our tensors from a HF checkpoint of the config's family holding `names`."""
    parts = _parts(cfg, gguf=False)
    _tie_or_require_head(parts, names, cfg)
    _require(names, parts, f"checkpoint is missing tensor {{!r}} (incomplete or not a {cfg.family} model?)")
    return Mapping(parts)


def to_hf(sd: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Map our state dict back to HF names (the inverse of `hf_mapping`)."""
    out: dict[str, Tensor] = {}
    for ours, hf_names in _parts(cfg, gguf=False).items():
        if ours == "output.weight" and cfg.tie_word_embeddings:
            continue
        t = sd[ours]
        out.update(zip(hf_names, t.split(_split_sizes(ours, cfg) or [t.shape[0]])))
    return {k: v.contiguous() for k, v in out.items()}


def _split_sizes(ours: str, cfg: ModelConfig) -> list[int]:
    """Rows of each part of a fused tensor ([] for a tensor of one part)."""
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    if ours.endswith(("wqkv.weight", "qkv_bias")):
        return [q, kv, kv]
    if ours.endswith("w13.weight"):
        return [cfg.intermediate_size] * 2
    return []


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
    `output.weight` ties the head (sets `cfg.tie_word_embeddings`).

    llama.cpp interleaves q/k rows for Llama's rotary only (Qwen and Gemma keep HF's layout), and
    stores Gemma's norm weights with the 1 of `1 + weight` added: both are undone here.
    """
    parts = _parts(cfg, gguf=True)
    if "output.weight" not in names:
        cfg.tie_word_embeddings = True
    _tie_or_require_head(parts, names, cfg)
    _require(names, parts, f"GGUF file is missing tensor {{!r}} (truncated or not a {cfg.family} model?)")
    arch = cfg.arch

    def prepare(name: str, t: Tensor) -> Tensor:
        if arch.gguf_interleaved_rotary and name.endswith("attn_q.weight"):
            return unpermute_rotary(t, cfg.n_heads)
        if arch.gguf_interleaved_rotary and name.endswith("attn_k.weight"):
            return unpermute_rotary(t, cfg.n_kv_heads)
        if arch.norm_unit_offset and name.endswith("norm.weight"):
            return t - 1
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
