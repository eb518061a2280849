"""Qwen2, Qwen3 and Gemma 3 GGUF files as llama.cpp writes them (its tensor names and metadata
keys, Gemma's norms stored as 1 + weight, no rotary interleaving outside Llama) load into the
same model as the weights they were written from."""

import numpy as np
import pytest
import torch

from layerskip import load_model
from layerskip.model import loading
from layerskip.model.config import FULL, SLIDING, ModelConfig
from layerskip.model.synthetic import random_model

SHAPE = dict(vocab_size=64, dim=32, n_layers=6, n_heads=4, n_kv_heads=2, intermediate_size=48, max_seq_len=64,
             rope_theta=1e6, norm_eps=2**-20)  # GGUF stores eps as float32
# llama.cpp's name of each of ours inside blk.{i}. (ours "attention.wqkv.weight" is split below)
BLOCK = {"attention.wo.weight": "attn_output.weight", "feed_forward.w2.weight": "ffn_down.weight",
         "attention_norm.weight": "attn_norm.weight", "ffn_norm.weight": "ffn_norm.weight",
         "attention.q_norm.weight": "attn_q_norm.weight", "attention.k_norm.weight": "attn_k_norm.weight",
         "post_attention_norm.weight": "post_attention_norm.weight", "post_ffn_norm.weight": "post_ffw_norm.weight"}
CONFIGS = {
    "qwen2": ModelConfig(**SHAPE, family="qwen2"),
    "qwen3": ModelConfig(**SHAPE, family="qwen3", head_dim=12),
    # what llama.cpp's Gemma 3 implies: every 6th layer global, local base 1e4, scale 1/sqrt(head_dim)
    "gemma3": ModelConfig(**SHAPE, family="gemma3_text", tie_word_embeddings=True, head_dim=16, sliding_window=4,
                          layer_types=[SLIDING] * 5 + [FULL], rope_local_theta=1e4, query_pre_attn_scalar=16.0),
}


def _gguf_tensors(model) -> dict[str, np.ndarray]:
    cfg, sd = model.config, {k: v.numpy() for k, v in model.state_dict().items()}
    offset = 1.0 if cfg.arch.norm_unit_offset else 0.0
    out = {"token_embd.weight": sd["tok_embeddings.weight"], "output_norm.weight": sd["norm.weight"] + offset}
    if not cfg.tie_word_embeddings:
        out["output.weight"] = sd["output.weight"]
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    for i in range(cfg.n_layers):
        p, mine = f"blk.{i}.", f"layers.{i}."
        ours = {k.removeprefix(mine): v for k, v in sd.items() if k.startswith(mine)}
        for name, t in ours.items():
            if name in BLOCK:
                out[p + BLOCK[name]] = t + offset if name.endswith("norm.weight") else t
        for part, t in zip("qkv", np.split(ours["attention.wqkv.weight"], [q, q + kv])):
            out[f"{p}attn_{part}.weight"] = t
        if "attention.qkv_bias" in ours:
            for part, t in zip("qkv", np.split(ours["attention.qkv_bias"], [q, q + kv])):
                out[f"{p}attn_{part}.bias"] = t
        out[p + "ffn_gate.weight"], out[p + "ffn_up.weight"] = np.split(ours["feed_forward.w13.weight"], 2)
    return out


def _write_gguf(path, arch: str, model) -> None:
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
    w.add_vocab_size(cfg.vocab_size)
    if cfg.sliding_window:
        w.add_sliding_window(cfg.sliding_window)
    for name, t in _gguf_tensors(model).items():
        w.add_tensor(name, np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_gguf_loads_the_model_it_was_written_from(arch, tmp_path, monkeypatch):
    original = random_model(CONFIGS[arch], seed=7, std=0.2)
    with torch.no_grad():  # norms and biases away from their neutral values
        for name, p in original.named_parameters():
            if "norm" in name or "bias" in name:
                p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / f"{arch}.gguf"
    _write_gguf(path, arch, original)
    monkeypatch.setattr(loading, "load_tokenizer", lambda p: None)  # the tiny GGUF has no tokenizer
    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path / "cache"))
    loaded = load_model(str(path)).model
    assert loaded.config == original.config
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (loaded(ids) - original(ids)).abs().max().item() <= 1e-5
