"""Tiny GGUF files as llama.cpp writes them, from one of our models: its tensor names and metadata
keys, Gemma's norms stored as 1 + weight, rotary rows interleaved for Llama only, matrices
optionally quantised. Used by the GGUF loading and weight-cache tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# llama.cpp's name of each of ours inside blk.{i}. (ours "attention.wqkv.weight" is split below)
BLOCK = {"attention.wo.weight": "attn_output.weight", "feed_forward.w2.weight": "ffn_down.weight",
         "attention_norm.weight": "attn_norm.weight", "ffn_norm.weight": "ffn_norm.weight",
         "attention.q_norm.weight": "attn_q_norm.weight", "attention.k_norm.weight": "attn_k_norm.weight",
         "post_attention_norm.weight": "post_attention_norm.weight", "post_ffn_norm.weight": "post_ffw_norm.weight"}


def _rotary_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """GGUF's rotary row interleaving for Llama (what `weights.unpermute_rotary` undoes)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _split_qkv(t: np.ndarray, cfg, interleave: bool) -> dict[str, np.ndarray]:
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    wq, wk, wv = np.split(t, [q, q + kv])
    if interleave:
        wq, wk = _rotary_rows(wq, cfg.n_heads), _rotary_rows(wk, cfg.n_kv_heads)
    return {"q": wq, "k": wk, "v": wv}


def gguf_tensors(model, arch: str) -> dict[str, np.ndarray]:
    """Our state dict under llama.cpp's names and conventions for `arch`."""
    cfg, sd = model.config, {k: v.numpy() for k, v in model.state_dict().items()}
    offset, interleave = (1.0 if cfg.arch.norm_unit_offset else 0.0), arch == "llama"
    out = {"token_embd.weight": sd["tok_embeddings.weight"], "output_norm.weight": sd["norm.weight"] + offset}
    if not cfg.tie_word_embeddings:
        out["output.weight"] = sd["output.weight"]
    for i in range(cfg.n_layers):
        p, mine = f"blk.{i}.", f"layers.{i}."
        ours = {k.removeprefix(mine): v for k, v in sd.items() if k.startswith(mine)}
        for name, t in ours.items():
            if name in BLOCK:
                out[p + BLOCK[name]] = t + offset if name.endswith("norm.weight") else t
        for part, t in _split_qkv(ours["attention.wqkv.weight"], cfg, interleave).items():
            out[f"{p}attn_{part}.weight"] = t
        if "attention.qkv_bias" in ours:
            for part, t in _split_qkv(ours["attention.qkv_bias"], cfg, interleave).items():
                out[f"{p}attn_{part}.bias"] = t
        out[p + "ffn_gate.weight"], out[p + "ffn_up.weight"] = np.split(ours["feed_forward.w13.weight"], 2)
    return out


def write_gguf(path: Path, arch: str, model, quant=None) -> None:
    """`model` as a GGUF of architecture `arch`; matrices in `quant` (a GGMLQuantizationType) if given,
    vectors always float32."""
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(cfg.n_layers)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_vocab_size(cfg.vocab_size)
    if cfg.sliding_window:
        w.add_sliding_window(cfg.sliding_window)
    for name, t in gguf_tensors(model, arch).items():
        if quant is None or t.ndim == 1:
            w.add_tensor(name, np.ascontiguousarray(t))
        else:
            w.add_tensor(name, gguf.quants.quantize(t, quant), raw_dtype=quant)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
