"""The dequantised-GGUF cache, on a tiny Q8_0 GGUF written here: the first load writes it, later
loads read it without dequantising, every path gives the same weights (and the right ones), and
a corrupt cache file is a miss, not an error."""

import numpy as np
import pytest
import torch

from layerskip import load_model
from layerskip.model import checkpoint, loading, weight_cache
from layerskip.model.synthetic import random_model
from tests.conftest import tiny_config


def _gguf_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """GGUF's rotary row interleaving (what `weights.unpermute_rotary` undoes)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """A tiny random model as a llama GGUF: Q8_0 matrices, float32 norms, untied head."""
    import gguf

    model = random_model(tiny_config(), seed=3, std=0.2)
    cfg, sd = model.config, {k: v.numpy() for k, v in model.state_dict().items()}
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    tensors = {"token_embd.weight": sd["tok_embeddings.weight"], "output_norm.weight": sd["norm.weight"],
               "output.weight": sd["output.weight"]}
    for i in range(cfg.n_layers):
        wq, wk, wv = np.split(sd[f"layers.{i}.attention.wqkv.weight"], [q, q + kv])
        gate, up = np.split(sd[f"layers.{i}.feed_forward.w13.weight"], 2)
        tensors |= {f"blk.{i}.{k}": v for k, v in {
            "attn_q.weight": _gguf_rows(wq, cfg.n_heads), "attn_k.weight": _gguf_rows(wk, cfg.n_kv_heads),
            "attn_v.weight": wv, "attn_output.weight": sd[f"layers.{i}.attention.wo.weight"],
            "ffn_gate.weight": gate, "ffn_up.weight": up, "ffn_down.weight": sd[f"layers.{i}.feed_forward.w2.weight"],
            "attn_norm.weight": sd[f"layers.{i}.attention_norm.weight"],
            "ffn_norm.weight": sd[f"layers.{i}.ffn_norm.weight"]}.items()}
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(cfg.n_layers)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_vocab_size(cfg.vocab_size)
    for name, t in tensors.items():
        if t.ndim == 1:
            w.add_tensor(name, np.ascontiguousarray(t))
        else:
            w.add_tensor(name, gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, model


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Same tensors, `b`'s cast to `a`'s dtype (exact when b is the float32 load)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name].to(sa[name].dtype)), name


def test_gguf_cache_round_trip_and_corrupt_file(tiny_gguf, tmp_path, monkeypatch):
    path, original = tiny_gguf
    monkeypatch.setattr(loading, "load_tokenizer", lambda p: None)  # the tiny GGUF has no tokenizer
    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path / "cache"))
    assert weight_cache.cached(path) is None
    cold = load_model(str(path)).model
    assert weight_cache.cache_file(path).is_file()
    for name, ref in original.state_dict().items():  # Q8_0: within half a step of each block's scale
        assert (cold.state_dict()[name] - ref).abs().max() <= ref.abs().max() / 200, name

    dequantised = []
    array = checkpoint.GGUFSource.array
    monkeypatch.setattr(checkpoint.GGUFSource, "array", lambda self, n: dequantised.append(n) or array(self, n))
    _equal(load_model(str(path)).model, cold)
    warm_bf16 = load_model(str(path), dtype="bfloat16").model
    assert dequantised == []  # warm loads read the cache only
    assert warm_bf16.tok_embeddings.weight.dtype == torch.bfloat16
    _equal(warm_bf16, cold)

    (tmp_path / "read-only").write_text("")  # a file where the cache directory should be: not writable
    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path / "read-only"))
    _equal(load_model(str(path)).model, cold)  # dequantised while loading instead
    assert dequantised and not weight_cache.cache_file(path).exists()

    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path / "cache"))
    weight_cache.cache_file(path).write_bytes(b"not safetensors")
    assert weight_cache.cached(path) is None
