"""The public shapes of the facebook/layerskip-* checkpoints, and the memory a model takes once
loaded: the facts behind README's memory table and the real-size benchmarks (no download)."""

from __future__ import annotations

from layerskip.model.config import ModelConfig, RopeScaling

_LLAMA3_ROPE = RopeScaling(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                           original_max_position_embeddings=8192)
_INT4_GROUP, _INT4_ROW_BLOCK = 32, 16  # model/quantize.py's defaults


def _llama(vocab: int, dim: int, layers: int, heads: int, kv: int, ffn: int, **kw) -> ModelConfig:
    return ModelConfig(vocab_size=vocab, dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=kv,
                       intermediate_size=ffn, **kw)


LAYERSKIP_CHECKPOINTS = {
    "facebook/layerskip-llama2-7B": _llama(32000, 4096, 32, 32, 32, 11008),
    "facebook/layerskip-llama2-13B": _llama(32000, 5120, 40, 40, 40, 13824),
    "facebook/layerskip-llama2-70B": _llama(32000, 8192, 80, 64, 8, 28672),
    "facebook/layerskip-codellama-7B": _llama(32016, 4096, 32, 32, 32, 11008, rope_theta=1e6, max_seq_len=16384),
    "facebook/layerskip-codellama-34B": _llama(32000, 8192, 48, 64, 8, 22016, rope_theta=1e6, max_seq_len=16384),
    "facebook/layerskip-llama3-8B": _llama(128256, 4096, 32, 32, 8, 14336, rope_theta=500000.0, max_seq_len=8192),
    "facebook/layerskip-llama3.2-1B": _llama(128256, 2048, 16, 32, 8, 8192, rope_theta=500000.0,
                                             max_seq_len=131072, tie_word_embeddings=True,
                                             rope_scaling=_LLAMA3_ROPE),
}
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def linear_shapes(cfg: ModelConfig) -> list[tuple[int, int]]:
    """(out, in) of every Linear: fused q/k/v, o, fused gate/up, down per layer, then the LM head."""
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    ffn = cfg.intermediate_size
    block = [(q + 2 * kv, cfg.dim), (cfg.dim, q), (2 * ffn, cfg.dim), (cfg.dim, ffn)]
    return block * cfg.n_layers + [(cfg.vocab_size, cfg.dim)]


def loaded_bytes(cfg: ModelConfig, dtype: str) -> int:
    """Bytes of the weights once loaded in `dtype` (float32/bfloat16/float16/int8/int4).

    int8: one byte per weight and a bfloat16 scale per row; int4: half a byte per weight and a
    bfloat16 scale and zero per group of 32 inputs, rows padded to 16. Quantised models keep the
    embedding and norms in bfloat16, and quantise a tied head as a matrix of its own.
    """
    norms = (2 * cfg.n_layers + 1) * cfg.dim
    embedding = cfg.vocab_size * cfg.dim
    linears = linear_shapes(cfg)
    if dtype in _BYTES:
        if cfg.tie_word_embeddings:
            linears = linears[:-1]  # the head is the embedding
        return _BYTES[dtype] * (norms + embedding + sum(o * i for o, i in linears))
    if dtype == "int8":
        return 2 * (norms + embedding) + sum(o * i + 2 * o for o, i in linears)
    if dtype == "int4":
        padded = [(-(-o // _INT4_ROW_BLOCK) * _INT4_ROW_BLOCK, i) for o, i in linears]
        return 2 * (norms + embedding) + sum(o * i // 2 + 4 * o * (i // _INT4_GROUP) for o, i in padded)
    raise ValueError(f"unknown dtype {dtype!r}")


def kv_cache_bytes(cfg: ModelConfig, tokens: int, dtype_bytes: int = 2) -> int:
    """Keys and values of every layer for `tokens` positions."""
    return 2 * cfg.n_layers * tokens * cfg.n_kv_heads * cfg.head_dim * dtype_bytes
