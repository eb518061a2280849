"""A lean decoder-only transformer that owns its layer loop and caches.

One block serves every family (model/families.py): Llama, Mistral, Qwen2/3 and Gemma 3 differ only
in switches it reads from the config (q/k/v bias, q/k norms, norm offset, post norms, activation,
embedding scale, per-layer sliding window and rope base, attention scale, logit softcapping).

The forward pass is split so that a caller can run any layer range:
`embed` -> `run_layers(h, input_pos, start, end)` -> `exit_logits`. Prefill, early exit, drafting
and verification are all compositions of these three calls. Cached calls take their positions as a
tensor and attend over the whole preallocated cache through a mask, so a decode step has the same
shapes at every position (what torch.compile and CUDA graphs need).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layerskip.model.cache import ExitQueryCache, KVCache
from layerskip.model.config import SLIDING, ModelConfig, RopeScaling


class RMSNorm(nn.Module):
    """RMSNorm; `unit_offset` (Gemma) scales by 1 + weight, its weights stored around 0."""

    def __init__(self, dim: int, eps: float, unit_offset: bool = False):
        super().__init__()
        self.eps, self.unit_offset = eps, unit_offset
        self.weight = nn.Parameter(torch.zeros(dim) if unit_offset else torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in float32 as the reference implementations do; Llama casts back before
        # scaling, Gemma scales in float32 and casts after (they differ in bfloat16 rounding).
        normed = F.rms_norm(x.float(), self.weight.shape, eps=self.eps)
        if self.unit_offset:
            return (normed * (1.0 + self.weight.float())).type_as(x)
        return self.weight * normed.type_as(x)


def rope_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None) -> Tensor:
    """Inverse frequencies [head_dim/2], with Llama 3 scaling of the low frequencies or linear
    scaling of all of them."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if scaling is None:
        return inv_freq.float()
    if scaling.rope_type == "linear":
        return (inv_freq / scaling.factor).float()
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


def rope_tables(inv_freq: Tensor, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos and sin [*positions.shape, head_dim] of the given positions (computed in float32)."""
    angles = positions.to(torch.float32)[..., None] * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def positions(start: int, length: int, device: torch.device | str = "cpu", batch: int = 1) -> Tensor:
    """Cache positions [batch, length] start..start+length-1, the form every cached call takes."""
    return torch.arange(start, start + length, device=device).expand(batch, length)


def visible(keys: Tensor, input_pos: Tensor, window: int | None = None) -> Tensor:
    """Which keys each query sees, [B, 1, T, S] bool: key positions `keys` ([S], or [B, S] per row)
    at or before the query's position input_pos[b, t], and within `window` of it on a sliding layer
    (the query's own key included, as in HF: position > query - window)."""
    query = input_pos[..., None]  # [B, T, 1]
    key = keys[..., None, :]  # [1, S] or [B, 1, S]
    mask = key <= query
    if window is not None:
        mask = mask & (key > query - window)
    return mask[:, None]


@dataclass
class AttentionContext:
    """What every layer of one forward call shares: rotary tables, mask, cache positions.

    Sliding-window layers read `local`: their own mask (and rotary tables, where their rope base
    differs), built once per forward like the global one.
    """

    cos: Tensor  # [B or 1, T, 1, head_dim]
    sin: Tensor  # [B or 1, T, 1, head_dim]
    mask: Tensor | None  # [B, 1, T, S] bool over the whole cache or [B, 1, T, T]; None: causal over the T tokens
    input_pos: Tensor | None  # [B, T] cache slots written; None: no cache (training, scoring)
    rows: Tensor | None = None  # [B, 1] cache rows the B inputs are (None: all rows, in order)
    over_cache: bool = False  # keys are the cache's slots (else only the T new tokens')
    span: int | None = None  # with over_cache: keys are slots 0..span-1 (None: the whole cache)
    local: AttentionContext | None = None  # the sliding-window layers' context (None: no such layers)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        arch = cfg.arch
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.scale = cfg.attn_scale
        q_size, kv_size = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, q_size + 2 * kv_size, bias=False)
        # Qwen2's q/k/v bias lives beside the Linear, so quantising or packing it needs no bias.
        self.qkv_bias = nn.Parameter(torch.zeros(q_size + 2 * kv_size)) if arch.qkv_bias else None
        self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps, arch.norm_unit_offset) if arch.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps, arch.norm_unit_offset) if arch.qk_norm else None
        self.wo = nn.Linear(q_size, cfg.dim, bias=False)
        self.kv_cache: KVCache | None = None

    def forward(self, x: Tensor, ctx: AttentionContext) -> Tensor:
        b, t, _ = x.shape
        qkv = self.wqkv(x)
        if self.qkv_bias is not None:
            qkv = qkv + self.qkv_bias
        qkv = qkv.view(b, t, -1, self.head_dim)  # [B, T, H + 2 * KV, head_dim]
        rotated = self.n_heads + self.n_kv_heads
        qk = qkv[:, :, :rotated]
        if self.q_norm is not None:  # per-head norms of q and k, before rotary (Qwen3, Gemma 3)
            q, k = qk.split([self.n_heads, self.n_kv_heads], dim=2)
            qk = torch.cat((self.q_norm(q), self.k_norm(k)), dim=2)
        # One rotary pass over q and k together: half the element-wise calls per layer.
        qk = (qk * ctx.cos + rotate_half(qk) * ctx.sin).transpose(1, 2)
        q, k = qk.split([self.n_heads, self.n_kv_heads], dim=1)
        v = qkv[:, :, rotated:].transpose(1, 2)
        if ctx.input_pos is not None:
            cached_k, cached_v = self.kv_cache.update(ctx.input_pos, k, v, ctx.rows)
            if ctx.over_cache:  # else a prefill from position 0: its own keys are all there is
                k, v = cached_k[:, :, : ctx.span], cached_v[:, :, : ctx.span]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=ctx.mask, is_causal=ctx.mask is None, scale=self.scale,
            enable_gqa=self.n_heads != self.n_kv_heads,
        )
        return self.wo(y.transpose(1, 2).reshape(b, t, -1))


def gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """A GLU (SwiGLU, or GeGLU with tanh-GELU for Gemma) with the gate and up projections fused
    into one matrix."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.act = gelu_tanh if cfg.arch.activation == "gelu_tanh" else F.silu
        self.hidden = cfg.intermediate_size
        self.w13 = nn.Linear(cfg.dim, 2 * cfg.intermediate_size, bias=False)
        self.w2 = nn.Linear(cfg.intermediate_size, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w13(x).split(self.hidden, dim=-1)
        return self.w2(self.act(gate) * up)


class TransformerBlock(nn.Module):
    """Pre-norm attention and MLP; Gemma also norms each output before its residual add, and
    its sliding-window layers attend through the local context."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        arch = cfg.arch

        def norm() -> RMSNorm:
            return RMSNorm(cfg.dim, cfg.norm_eps, arch.norm_unit_offset)

        self.sliding = cfg.window(layer) is not None
        self.attention_norm = norm()
        self.attention = Attention(cfg)
        self.post_attention_norm = norm() if arch.post_norms else nn.Identity()
        self.ffn_norm = norm()
        self.feed_forward = FeedForward(cfg)
        self.post_ffn_norm = norm() if arch.post_norms else nn.Identity()

    def forward(self, x: Tensor, ctx: AttentionContext) -> Tensor:
        ctx = ctx.local if self.sliding else ctx
        x = x + self.post_attention_norm(self.attention(self.attention_norm(x), ctx))
        return x + self.post_ffn_norm(self.feed_forward(self.ffn_norm(x)))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.arch.norm_unit_offset)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.exit_query_cache: ExitQueryCache | None = None
        # Rotary tables [S, head_dim] of every cached position, built with the caches.
        self.register_buffer("rope_cos", None, persistent=False)
        self.register_buffer("rope_sin", None, persistent=False)
        # The sliding layers' own tables, where their rope base differs (Gemma 3); else None.
        self.register_buffer("rope_local_cos", None, persistent=False)
        self.register_buffer("rope_local_sin", None, persistent=False)
        self.register_buffer("cache_slots", None, persistent=False)  # [S]: 0..S-1, for masks

    @property
    def n_layers(self) -> int:
        return self.config.n_layers

    @property
    def cache_len(self) -> int:
        """Positions the KV cache can hold (0 before `setup_caches`)."""
        cache = self.layers[0].attention.kv_cache
        return 0 if cache is None else cache.max_seq_len

    def setup_caches(self, max_seq_len: int, exit_query_len: int = 0, batch: int = 1) -> None:
        """Preallocate the KV cache (and exit-query cache) once; reused while large enough."""
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
        slots = self.cache_len
        if self.rope_cos is None or self.rope_cos.shape[0] != slots or self.rope_cos.dtype != dtype:
            self.cache_slots = torch.arange(slots, device=device)
            self.rope_cos, self.rope_sin = rope_tables(self.inv_freq(device), self.cache_slots, dtype)
            if self.config.rope_local_theta is not None:
                self.rope_local_cos, self.rope_local_sin = rope_tables(
                    self.inv_freq(device, local=True), self.cache_slots, dtype
                )

    def inv_freq(self, device: torch.device, local: bool = False) -> Tensor:
        """Rotary frequencies, always float32: a buffer would be rounded by `model.to(bfloat16)`.
        `local`: the sliding layers', where they have their own base (and no scaling)."""
        cfg = self.config
        if local and cfg.rope_local_theta is not None:
            return rope_frequencies(cfg.head_dim, cfg.rope_local_theta, None).to(device)
        return rope_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling).to(device)

    def clear_caches(self) -> None:
        """Drop the caches (for training, saving, `.to()`)."""
        for layer in self.layers:
            layer.attention.kv_cache = None
        self.exit_query_cache = None
        self.rope_cos = self.rope_sin = self.cache_slots = None
        self.rope_local_cos = self.rope_local_sin = None

    def attention_context(
        self,
        input_pos: Tensor | None,
        length: int,
        device: torch.device,
        from_start: bool = False,
        rows: Tensor | None = None,
        span: int | None = None,
    ) -> AttentionContext:
        """Rotary tables and mask for `length` tokens at cache positions `input_pos` [B, T].

        input_pos=None means no cache: positions 0..length-1 with plain causal attention. With a
        cache, attention reads the slots through a mask (slot <= position): all of them by default,
        so a step's shapes do not depend on the position, or the first `span` (which must hold
        every position in input_pos), so that short sequences in a long cache read only what they
        use. `from_start` says the rows hold nothing before these tokens (a prefill from 0), where
        causal attention over the new keys alone gives the same result. `rows` [B, 1]: the cache
        rows a prefill writes, when it fills only some rows of a batch. Sliding-window layers get
        `local`: the same with the window in their mask.
        """
        if rows is not None and not from_start:
            raise ValueError("only a prefill (from_start) may write a subset of the cache rows")
        ctx = self._context(input_pos, length, device, from_start, rows, None, span)
        if SLIDING in self.config.layer_types:
            ctx.local = self._context(input_pos, length, device, from_start, rows, self.config.sliding_window, span)
        return ctx

    def _context(
        self,
        input_pos: Tensor | None,
        length: int,
        device: torch.device,
        from_start: bool,
        rows: Tensor | None,
        window: int | None,
        span: int | None,
    ) -> AttentionContext:
        """One attention context: global (window=None) or sliding-window layers'."""
        local = window is not None
        # A window that covers every new token needs no mask of its own over them.
        banded = local and length > window
        if input_pos is None:
            new = torch.arange(length, device=device)
            cos, sin = rope_tables(self.inv_freq(device, local), new, self.dtype)
            mask = visible(new, new[None], window) if banded else None
            return AttentionContext(cos[:, None], sin[:, None], mask, None)
        own_tables = local and self.rope_local_cos is not None
        cos, sin = (self.rope_local_cos, self.rope_local_sin) if own_tables else (self.rope_cos, self.rope_sin)
        cos, sin = cos[input_pos][:, :, None], sin[input_pos][:, :, None]
        if from_start:
            mask = visible(input_pos, input_pos, window) if banded else None
            return AttentionContext(cos, sin, mask, input_pos, rows)
        mask = visible(self.cache_slots[:span], input_pos, window)
        return AttentionContext(cos, sin, mask, input_pos, rows, over_cache=True, span=span)

    @property
    def dtype(self) -> torch.dtype:
        """The activations' dtype (the embedding is never quantised)."""
        return self.tok_embeddings.weight.dtype

    def embed(self, tokens: Tensor) -> Tensor:
        h = self.tok_embeddings(tokens)
        if self.config.arch.scale_embeddings:  # Gemma: by sqrt(dim), rounded to the dtype as in HF
            h = h * torch.tensor(self.config.dim**0.5, dtype=h.dtype)
        return h

    def run_layers(
        self,
        h: Tensor,
        input_pos: Tensor | None,
        start_layer: int = 0,
        end_layer: int | None = None,
        from_start: bool = False,
        rows: Tensor | None = None,
        span: int | None = None,
    ) -> Tensor:
        """Run layers [start_layer, end_layer) on hidden states h [B, T, D] at cache positions
        input_pos [B, T] (None: no cache), attending over the first `span` cache slots (None: all)."""
        end_layer = self.n_layers if end_layer is None else end_layer
        ctx = self.attention_context(input_pos, h.shape[1], h.device, from_start, rows, span)
        for layer in self.layers[start_layer:end_layer]:
            h = layer(h, ctx)
        return h

    def exit_logits(self, h: Tensor) -> Tensor:
        """The early exit: final norm + shared LM head applied to any layer's output."""
        return self.scale_logits(self.output(self.norm(h)))

    def scale_logits(self, logits: Tensor) -> Tensor:
        """The family's final logit softcapping, where its config sets one (any head's logits)."""
        cap = self.config.final_logit_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def forward(
        self,
        tokens: Tensor,
        input_pos: Tensor | None = None,
        end_layer: int | None = None,
        from_start: bool = False,
        rows: Tensor | None = None,
        span: int | None = None,
    ) -> Tensor:
        """Logits of tokens [B, T] after layers 0..end_layer-1 (all layers by default)."""
        return self.exit_logits(
            self.run_layers(self.embed(tokens), input_pos, 0, end_layer, from_start, rows, span)
        )
