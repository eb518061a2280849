"""Weight-only int8/int4: the quantised layers reproduce their dequantised weights, a quantised model
tracks the float one, and greedy self-speculation stays token-identical to autoregressive."""

import pytest
import torch

from layerskip import GenerationConfig, generate_ids, load_model
from layerskip.model.quantize import Int4Linear, Int8Linear, quantize
from layerskip.model.synthetic import silence_layers


def _dequantized_int4(w: torch.Tensor, group: int) -> torch.Tensor:
    g = w.view(w.shape[0], -1, group)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = torch.where(hi > lo, (hi - lo) / 15, torch.ones_like(hi))
    return (torch.round((g - lo) / scale).clamp(0, 15) * scale + lo).view_as(w)


@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
def test_quantised_linear_matches_its_dequantised_weight(cls):
    torch.manual_seed(0)
    w, x = torch.randn(96, 128), torch.randn(2, 5, 128)
    layer = cls.from_float(w)
    if cls is Int8Linear:
        ref_w = torch.round(w / (w.abs().amax(1, keepdim=True) / 127)) * (w.abs().amax(1, keepdim=True) / 127)
    else:
        ref_w = _dequantized_int4(w, layer.group_size)
    ref = x @ ref_w.t()
    y = layer(x.bfloat16()).float()
    assert y.shape == (2, 5, 96)
    assert (y - ref).abs().max() <= 0.02 * ref.abs().max()


@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
def test_rows_is_the_layer_restricted_to_those_outputs(cls):
    torch.manual_seed(1)
    layer = cls.from_float(torch.randn(64, 64))
    ids = torch.tensor([3, 17, 40, 63])
    x = torch.randn(3, 64).bfloat16()
    reduced, full = layer.rows(ids)(x).float(), layer(x)[:, ids].float()
    if cls is Int8Linear:
        assert torch.equal(reduced, full)
    else:  # int4 rows are read back and packed again: equal up to bfloat16 rounding of the scales
        assert (reduced - full).abs().max() <= 0.02 * full.abs().max()


def test_int4_keeps_zeroed_weights_exactly_zero():
    """silence_layers before quantisation must still give an identity layer (perfect drafts)."""
    layer = Int4Linear.from_float(torch.zeros(32, 64))
    assert torch.equal(layer(torch.randn(4, 64).bfloat16()), torch.zeros(4, 32, dtype=torch.bfloat16))


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantised_model_tracks_float_and_self_speculation_is_lossless(tiny_dir, mode):
    ref = load_model(str(tiny_dir))
    lm = load_model(str(tiny_dir))
    quantize(lm.model, mode)
    assert lm.model.tok_embeddings.weight.dtype == torch.bfloat16
    ids = torch.arange(3, 40)[None]
    with torch.no_grad():
        low, full = lm.model(ids).float(), ref.model(ids)
    # The tiny model's random weights (std 0.2) amplify errors layer by layer; int4 of a random
    # Gaussian matrix keeps ~8 % noise per weight, int8 ~0.5 %.
    cosine = torch.nn.functional.cosine_similarity(low.flatten(), full.flatten(), dim=0)
    assert cosine > {"int8": 0.99, "int4": 0.75}[mode]
    prompt = [5, 6, 7, 8]
    ar = generate_ids(lm, prompt, GenerationConfig(max_new_tokens=40, ignore_eos=True))
    ss = generate_ids(lm, prompt, GenerationConfig(strategy="self_speculative", exit_layer=2, num_speculations=4,
                                                   max_new_tokens=40, ignore_eos=True))
    assert ss.token_ids == ar.token_ids


def test_quantised_perfect_draft_accepts_everything(tiny_dir):
    lm = load_model(str(tiny_dir))
    quantize(silence_layers(lm.model, 2), "int4")
    cfg = GenerationConfig(strategy="self_speculative", exit_layer=2, num_speculations=4, max_new_tokens=21,
                           ignore_eos=True)
    assert generate_ids(lm, [5, 6, 7], cfg).stats.acceptance_rate == 1.0


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_layers_silenced_after_quantising_are_the_identity(tiny_dir, mode):
    """A perfect-draft model made from an already quantised one: exit at E equals the final logits."""
    lm = load_model(str(tiny_dir), dtype=mode)
    silence_layers(lm.model, 2)
    ids = torch.arange(3, 30)[None]
    with torch.no_grad():
        assert torch.equal(lm.model(ids, end_layer=2), lm.model(ids))
    cfg = GenerationConfig(strategy="self_speculative", exit_layer=2, num_speculations=4, max_new_tokens=11)
    assert generate_ids(lm, [5, 6, 7], cfg).stats.acceptance_rate == 1.0
