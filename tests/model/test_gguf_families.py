"""Qwen2, Qwen3 and Gemma 3 GGUF files as llama.cpp writes them (its tensor names and metadata
keys, Gemma's norms stored as 1 + weight, no rotary interleaving outside Llama) load into the
same model as the weights they were written from."""

import pytest
import torch

from layerskip import load_model
from layerskip.model import loading
from layerskip.model.config import FULL, SLIDING, ModelConfig
from layerskip.model.synthetic import random_model

from .gguf_files import write_gguf

SHAPE = dict(vocab_size=64, dim=32, n_layers=6, n_heads=4, n_kv_heads=2, intermediate_size=48, max_seq_len=64,
             rope_theta=1e6, norm_eps=2**-20)  # GGUF stores eps as float32
CONFIGS = {
    "qwen2": ModelConfig(**SHAPE, family="qwen2"),
    "qwen3": ModelConfig(**SHAPE, family="qwen3", head_dim=12),
    # what llama.cpp's Gemma 3 implies: every 6th layer global, local base 1e4, scale 1/sqrt(head_dim)
    "gemma3": ModelConfig(**SHAPE, family="gemma3_text", tie_word_embeddings=True, head_dim=16, sliding_window=4,
                          layer_types=[SLIDING] * 5 + [FULL], rope_local_theta=1e4, query_pre_attn_scalar=16.0),
}


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_gguf_loads_the_model_it_was_written_from(arch, tmp_path, monkeypatch):
    original = random_model(CONFIGS[arch], seed=7, std=0.2)
    with torch.no_grad():  # norms and biases away from their neutral values
        for name, p in original.named_parameters():
            if "norm" in name or "bias" in name:
                p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / f"{arch}.gguf"
    write_gguf(path, arch, original)
    monkeypatch.setattr(loading, "load_tokenizer", lambda p: None)  # the tiny GGUF has no tokenizer
    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path / "cache"))
    loaded = load_model(str(path)).model
    assert loaded.config == original.config
    assert load_model(str(path)).model.config == original.config  # the config as cached by the first load
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (loaded(ids) - original(ids)).abs().max().item() <= 1e-5
