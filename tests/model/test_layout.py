"""The decoding layout: float32 weights transposed in memory by setup_caches, nothing else changes."""

import torch

from layerskip.model.synthetic import random_model

from ..conftest import tiny_config


def test_setup_caches_transposes_float32_weights_and_keeps_values_and_ties():
    model = random_model(tiny_config(tie_word_embeddings=True), std=0.2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.arange(3, 30)[None]
    with torch.no_grad():
        ref = model(ids)
        model.setup_caches(64)
        out = model(ids)
    w = model.layers[0].feed_forward.w13.weight
    assert w.stride() == (1, w.shape[0])
    assert model.output.weight is model.tok_embeddings.weight
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(ref, out)
    model.to(torch.bfloat16).setup_caches(64)
    assert model.layers[0].feed_forward.w13.weight.is_contiguous()
