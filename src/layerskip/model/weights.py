"""State-dict name mapping between HF/GGUF checkpoints and our fused layout.

Ours fuses q/k/v into `wqkv` and gate/up into `w13`; everything else is a rename.
"""

from __future__ import annotations

import numpy as np
import torch
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


def from_hf(sd: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Map a HF LlamaForCausalLM state dict to ours."""
    out: dict[str, Tensor] = {}
    for ours, hf, _ in _TOP_RENAMES:
        if hf in sd:
            out[ours] = sd[hf]
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        for ours, hf, _ in _BLOCK_RENAMES:
            out[f"layers.{i}.{ours}"] = _require(sd, p + hf)
        out[f"layers.{i}.attention.wqkv.weight"] = torch.cat(
            [_require(sd, f"{p}self_attn.{n}.weight") for n in _QKV]
        )
        out[f"layers.{i}.feed_forward.w13.weight"] = torch.cat(
            [_require(sd, f"{p}mlp.{n}.weight") for n in _GATE_UP]
        )
    return _tie_or_require_head(out, cfg)


def to_hf(sd: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Map our state dict back to HF names (the inverse of `from_hf`)."""
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


def unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo the Q/K row interleaving that GGUF conversion applies for its rotary layout.

    GGUF stores each head's rows as pairs (x0, x_half, x1, x_half+1, ...); HF and we use the
    half-split layout, so the pairs are regrouped back into two halves per head.
    """
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def from_gguf(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, Tensor]:
    """Map dequantized GGUF tensors (numpy, [out, in]) to our state dict."""

    def get(name: str) -> Tensor:
        if name not in tensors:
            raise LayerSkipError(f"GGUF file is missing tensor {name!r} (truncated or not a Llama model?)")
        return torch.from_numpy(np.asarray(tensors[name]).view(np.ndarray).astype(np.float32, copy=True))

    out: dict[str, Tensor] = {}
    for ours, _, gg in _TOP_RENAMES:
        if gg in tensors:
            out[ours] = get(gg)
    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        for ours, _, gg in _BLOCK_RENAMES:
            out[f"layers.{i}.{ours}"] = get(p + gg)
        q = torch.from_numpy(unpermute_rotary(get(p + "attn_q.weight").numpy(), cfg.n_heads))
        k = torch.from_numpy(unpermute_rotary(get(p + "attn_k.weight").numpy(), cfg.n_kv_heads))
        out[f"layers.{i}.attention.wqkv.weight"] = torch.cat([q, k, get(p + "attn_v.weight")])
        out[f"layers.{i}.feed_forward.w13.weight"] = torch.cat(
            [get(p + "ffn_gate.weight"), get(p + "ffn_up.weight")]
        )
    if "output.weight" not in out:
        cfg.tie_word_embeddings = True
    return _tie_or_require_head(out, cfg)


def _require(sd: dict[str, Tensor], name: str) -> Tensor:
    if name not in sd:
        raise LayerSkipError(f"checkpoint is missing tensor {name!r} (incomplete or not a Llama model?)")
    return sd[name]


def _tie_or_require_head(out: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    if cfg.tie_word_embeddings:
        out["output.weight"] = out["tok_embeddings.weight"]
    elif "output.weight" not in out:
        raise LayerSkipError("checkpoint has no LM head (lm_head.weight) and does not tie embeddings")
    return out
