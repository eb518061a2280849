"""The decoding layout: pack_for_decoding packs linear weights for oneDNN (the tied head is
transposed in float32 instead), outputs do not change beyond float rounding, unpack restores the
exact plain weights; generation applies it from outside the model (prepare_for_decoding)."""

import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from layerskip.generation.steps import prepare_for_decoding
from layerskip.model import packing
from layerskip.model.packing import PackedLinear, decoding_linear, pack_for_decoding, unpack
from layerskip.model.saving import save_pretrained
from layerskip.model.synthetic import random_model

from ..conftest import tiny_config


@pytest.fixture
def force_pack(monkeypatch):
    """Pack float32 whatever the CPU, so the packed path is tested on every machine."""
    monkeypatch.setattr(packing, "_packable", lambda w: w.dtype == torch.float32 and w.device.type == "cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packing_keeps_outputs_and_unpack_restores_exact_weights(dtype):
    model = random_model(tiny_config(tie_word_embeddings=True), std=0.2).to(dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.arange(3, 30)[None]
    with torch.no_grad():
        ref = model(ids).float()
        pack_for_decoding(model, tied=model.tok_embeddings.weight)
        out = model(ids).float()
    # packed only where it was measured faster (AVX-512, bfloat16 kernels); elsewhere plain
    packs = packing._packable(model.layers[0].feed_forward.w13.weight)
    assert isinstance(model.layers[0].feed_forward.w13, PackedLinear) == packs
    assert isinstance(model.output, nn.Linear), "a head tied to the embedding is not packed twice"
    assert model.output.weight is model.tok_embeddings.weight
    if dtype == torch.float32:
        w = model.output.weight
        assert w.stride() == (1, w.shape[0])
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    assert torch.allclose(ref, out, atol=tol, rtol=tol)
    unpack(model)
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
    assert before.keys() == model.state_dict().keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_untied_head_is_packed_and_a_packed_model_saves_its_plain_weights(tmp_path, force_pack):
    model = random_model(tiny_config(tie_word_embeddings=False), std=0.2)
    head = model.output.weight.detach().clone()
    pack_for_decoding(model, tied=model.tok_embeddings.weight)
    assert isinstance(model.output, PackedLinear)
    save_pretrained(model, tmp_path)
    assert torch.equal(load_file(tmp_path / "model.safetensors")["lm_head.weight"], head)


def test_packed_layers_refuse_training(force_pack):
    layer = decoding_linear(torch.randn(8, 4))
    with pytest.raises(RuntimeError, match="unpack"):
        layer(torch.randn(2, 4, requires_grad=True))


def test_reduced_rows_of_a_packed_head_match_the_dense_rows():
    w = torch.randn(50, 16)
    ids = torch.tensor([3, 7, 41])
    x = torch.randn(1, 2, 16)
    reduced = PackedLinear(w).rows(ids)
    torch.testing.assert_close(reduced(x), x @ w[ids].T, atol=1e-5, rtol=1e-5)


def test_a_packed_model_deep_copies(force_pack):
    model = random_model(tiny_config(tie_word_embeddings=False), std=0.2)
    ids = torch.arange(3, 20)[None]
    pack_for_decoding(model, tied=model.tok_embeddings.weight)
    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(model)(ids), model(ids))


def test_state_dict_of_a_packed_model_has_the_plain_weights(force_pack):
    model = random_model(tiny_config(tie_word_embeddings=False), std=0.2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pack_for_decoding(model, tied=model.tok_embeddings.weight)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_packing_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("LAYERSKIP_NO_PACK", "1")
    model = random_model(tiny_config(), std=0.2)
    pack_for_decoding(model, tied=model.tok_embeddings.weight)
    assert not any(isinstance(m, PackedLinear) for m in model.modules())


def test_generation_lays_the_weights_out_from_outside_the_model(force_pack):
    model = random_model(tiny_config(tie_word_embeddings=False), std=0.2)
    model.setup_caches(32)
    assert not any(isinstance(m, PackedLinear) for m in model.modules()), "the model does not pack itself"
    prepare_for_decoding(model, 32)
    assert isinstance(model.output, PackedLinear) and model.cache_len == 32


def test_the_layout_follows_the_rows_of_each_product_and_goes_back():
    model = random_model(tiny_config(tie_word_embeddings=True), std=0.2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.arange(3, 30)[None]
    w = model.output.weight
    with torch.no_grad():
        ref = model(ids)
        pack_for_decoding(model, tied=w, rows=8)  # a batch of 8: oneDNN wherever it runs float32
        assert isinstance(model.layers[0].feed_forward.w13, PackedLinear) == torch.backends.mkldnn.is_available()
        assert model.output.weight is w and w.is_contiguous(), "the tied head: contiguous for many rows"
        torch.testing.assert_close(model(ids), ref, atol=1e-4, rtol=1e-4)
        pack_for_decoding(model, tied=w, rows=1)  # back to one row: plain again unless packed anyway
        packs = packing._packable(model.layers[0].feed_forward.w13.weight)
        assert isinstance(model.layers[0].feed_forward.w13, PackedLinear) == packs
        assert w.stride() == (1, w.shape[0])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_layers_only_verifications_run_are_laid_out_for_their_rows():
    """A fixed exit E: drafts run layers < E one row at a time, verifications layers >= E over k+1
    rows, so on a CPU whose one-row and many-row kernels differ each part gets its own layout."""
    model = random_model(tiny_config(n_layers=4, tie_word_embeddings=True), std=0.2)
    multi = packing._packs(model.layers[0].feed_forward.w13.weight, 7)
    single = packing._packs(model.layers[0].feed_forward.w13.weight, 1)
    with torch.no_grad():
        prepare_for_decoding(model, 32, exit_query_len=7, exit_layer=2)
    kinds = [isinstance(layer.feed_forward.w13, PackedLinear) for layer in model.layers]
    assert kinds == [single, single, multi, multi]
    assert type(model.output) is packing.ColumnLinear  # a float32 tied head: the verification's layout
    with torch.no_grad():  # a decoder that starts autoregressively: the head for one row, layers as before
        prepare_for_decoding(model, 32, exit_query_len=7, exit_layer=2, head_verifies=False)
    assert type(model.output) is nn.Linear and model.output.weight.stride() == (1, model.output.weight.shape[0])
    assert [isinstance(layer.feed_forward.w13, PackedLinear) for layer in model.layers] == kinds
