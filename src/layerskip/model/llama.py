"""A lean Llama-family transformer that owns its layer loop and caches.

The forward pass is split so that a caller can run any layer range:
`embed` -> `run_layers(h, start, end)` -> `exit_logits`. Prefill, early exit, drafting and
verification are all compositions of these three calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layerskip.model.cache import ExitQueryCache, KVCache
from layerskip.model.config import ModelConfig, RopeScaling
from layerskip.model.packing import pack_for_decoding, unpack


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in float32 as the reference implementation does, then cast back.
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).type_as(x)


def rope_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None) -> Tensor:
    """Inverse frequencies [head_dim/2], with Llama 3 scaling of the low frequencies."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if scaling is None:
        return inv_freq.float()
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    mid = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    is_mid = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
    return torch.where(is_mid, mid, scaled).float()


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_tables(inv_freq: Tensor, start: int, length: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos and sin [length, 1, head_dim] of positions start..start+length-1 (computed in float32)."""
    pos = torch.arange(start, start + length, device=inv_freq.device, dtype=torch.float32)
    angles = torch.outer(pos, inv_freq)
    angles = torch.cat((angles, angles), dim=-1)[:, None, :]
    return angles.cos().to(dtype), angles.sin().to(dtype)


@dataclass
class AttentionContext:
    """What every layer of one forward call shares: rotary tables, mask, cache position."""

    cos: Tensor  # [T, 1, head_dim]
    sin: Tensor  # [T, 1, head_dim]
    mask: Tensor | None  # [T, end] bool, None when causal or single-token
    is_causal: bool
    start: int | None  # first cache position written; None: no cache (training, scoring)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        q_size, kv_size = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, q_size + 2 * kv_size, bias=False)
        self.wo = nn.Linear(q_size, cfg.dim, bias=False)
        self.kv_cache: KVCache | None = None

    def forward(self, x: Tensor, ctx: AttentionContext) -> Tensor:
        b, t, _ = x.shape
        qkv = self.wqkv(x).view(b, t, -1, self.head_dim)  # [B, T, H + 2 * KV, head_dim]
        rotated = self.n_heads + self.n_kv_heads
        qk = qkv[:, :, :rotated]
        # One rotary pass over q and k together: half the element-wise calls per layer.
        qk = (qk * ctx.cos + rotate_half(qk) * ctx.sin).transpose(1, 2)
        q, k = qk.split([self.n_heads, self.n_kv_heads], dim=1)
        v = qkv[:, :, rotated:].transpose(1, 2)
        if ctx.start is not None and self.kv_cache is not None:
            k, v = self.kv_cache.update(ctx.start, k, v)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=ctx.mask, is_causal=ctx.is_causal, enable_gqa=self.n_heads != self.n_kv_heads
        )
        return self.wo(y.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    """SwiGLU with the gate and up projections fused into one matrix."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.hidden = cfg.intermediate_size
        self.w13 = nn.Linear(cfg.dim, 2 * cfg.intermediate_size, bias=False)
        self.w2 = nn.Linear(cfg.intermediate_size, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w13(x).split(self.hidden, dim=-1)
        return self.w2(F.silu(gate) * up)


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: Tensor, ctx: AttentionContext) -> Tensor:
        x = x + self.attention(self.attention_norm(x), ctx)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.exit_query_cache: ExitQueryCache | None = None
        # Rotary tables of every cached position, built with the caches: decoding slices them.
        self.register_buffer("rope_cos", None, persistent=False)
        self.register_buffer("rope_sin", None, persistent=False)

    @property
    def n_layers(self) -> int:
        return self.config.n_layers

    @property
    def cache_len(self) -> int:
        """Positions the KV cache can hold (0 before `setup_caches`)."""
        cache = self.layers[0].attention.kv_cache
        return 0 if cache is None else cache.max_seq_len

    def setup_caches(self, max_seq_len: int, exit_query_len: int = 0, batch: int = 1) -> None:
        """Preallocate the KV cache (and exit-query cache) once; reused while large enough.

        Also lays the weights out for decoding (`packing.pack_for_decoding`); `clear_caches` undoes it.
        """
        # The embedding is never quantised: its dtype is the activations' dtype.
        dtype, device = self.tok_embeddings.weight.dtype, self.tok_embeddings.weight.device
        max_seq_len = min(max_seq_len, self.config.max_seq_len)
        current = self.layers[0].attention.kv_cache
        if current is None or current.max_seq_len < max_seq_len or current.k.shape[0] != batch:
            for layer in self.layers:
                layer.attention.kv_cache = KVCache(
                    batch, max_seq_len, self.config.n_kv_heads, self.config.head_dim, dtype
                ).to(device)
        eq = self.exit_query_cache
        if exit_query_len and (eq is None or eq.capacity < exit_query_len or eq.h.shape[0] != batch):
            self.exit_query_cache = ExitQueryCache(batch, exit_query_len, self.config.dim, dtype).to(device)
        if self.rope_cos is None or self.rope_cos.shape[0] < max_seq_len or self.rope_cos.dtype != dtype:
            self.rope_cos, self.rope_sin = rope_tables(self.inv_freq(device), 0, max_seq_len, dtype)
        pack_for_decoding(self, tied=self.tok_embeddings.weight)

    def inv_freq(self, device: torch.device) -> Tensor:
        """Rotary frequencies, always float32: a buffer would be rounded by `model.to(bfloat16)`."""
        cfg = self.config
        return rope_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling).to(device)

    def clear_caches(self) -> None:
        """Drop the caches and restore plain nn.Linear weights (for training, saving, `.to()`)."""
        unpack(self)
        for layer in self.layers:
            layer.attention.kv_cache = None
        self.exit_query_cache = None
        self.rope_cos = self.rope_sin = None

    def attention_context(self, start: int | None, length: int, device: torch.device) -> AttentionContext:
        """Rotary tables and mask for `length` tokens at positions start..start+length-1.

        start=None means no cache: positions 0..length-1 with plain causal attention.
        """
        offset = 0 if start is None else start
        if self.rope_cos is not None and offset + length <= self.rope_cos.shape[0]:
            cos, sin = self.rope_cos[offset : offset + length], self.rope_sin[offset : offset + length]
        else:
            cos, sin = rope_tables(self.inv_freq(device), offset, length, self.tok_embeddings.weight.dtype)
        if length == 1:
            return AttentionContext(cos, sin, None, False, start)
        if start is None or start == 0:
            return AttentionContext(cos, sin, None, True, start)
        keys = torch.arange(start + length, device=device)
        mask = keys[None, :] <= torch.arange(start, start + length, device=device)[:, None]
        return AttentionContext(cos, sin, mask, False, start)

    def embed(self, tokens: Tensor) -> Tensor:
        return self.tok_embeddings(tokens)

    def run_layers(
        self, h: Tensor, start_pos: int | None, start_layer: int = 0, end_layer: int | None = None
    ) -> Tensor:
        """Run layers [start_layer, end_layer) on hidden states h [B, T, D] at start_pos.."""
        end_layer = self.n_layers if end_layer is None else end_layer
        ctx = self.attention_context(start_pos, h.shape[1], h.device)
        for layer in self.layers[start_layer:end_layer]:
            h = layer(h, ctx)
        return h

    def exit_logits(self, h: Tensor) -> Tensor:
        """The early exit: final norm + shared LM head applied to any layer's output."""
        return self.output(self.norm(h))

    def forward(
        self, tokens: Tensor, start_pos: int | None = None, end_layer: int | None = None
    ) -> Tensor:
        """Logits of tokens [B, T] after layers 0..end_layer-1 (all layers by default)."""
        return self.exit_logits(self.run_layers(self.embed(tokens), start_pos, 0, end_layer))
