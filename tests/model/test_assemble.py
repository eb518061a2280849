"""Loading tensor by tensor: the same weights, logits and greedy tokens as the whole-checkpoint
loader it replaced (the saved float32 model, cast, then quantised), with at most the parts of one
fused weight alive at a time."""

import weakref

import pytest
import torch

from layerskip import GenerationConfig, generate_ids, load_model
from layerskip.model import checkpoint
from layerskip.model.config import RopeScaling
from layerskip.model.quantize import ACTIVATION_DTYPE, quantize
from layerskip.model.synthetic import random_model
from tests.conftest import tiny_config

LLAMA3 = dict(tie_word_embeddings=True, rope_theta=500000.0, rope_scaling=RopeScaling(
    factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64))
FIXTURES = {"tiny_dir": (0, {}), "tiny_tied_llama3_dir": (1, LLAMA3)}  # how conftest made each


def whole_checkpoint_load(fixture: str, dtype: str) -> torch.nn.Module:
    """What the previous loader produced: every weight in float32, cast, then quantised."""
    seed, overrides = FIXTURES[fixture]
    model = random_model(tiny_config(**overrides), seed=seed, std=0.2).requires_grad_(False)
    if dtype in ("int8", "int4"):
        return quantize(model, dtype)
    return model.to(getattr(torch, dtype))


@pytest.mark.parametrize("fixture", list(FIXTURES))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_same_weights_logits_and_tokens_as_whole_checkpoint_loading(request, fixture, dtype):
    lm = load_model(str(request.getfixturevalue(fixture)), dtype=dtype)
    ref = whole_checkpoint_load(fixture, dtype)
    new_sd, ref_sd = lm.model.state_dict(), ref.state_dict()
    assert new_sd.keys() == ref_sd.keys()
    for name, t in ref_sd.items():
        assert new_sd[name].dtype == t.dtype and torch.equal(new_sd[name], t), name
    ids = torch.arange(3, 40)[None]
    with torch.no_grad():
        assert torch.equal(lm.model(ids), ref(ids))
    cfg = GenerationConfig(max_new_tokens=12)
    ref_lm = type(lm)(ref, lm.tokenizer, lm.name, lm.path)
    assert generate_ids(lm, [5, 6, 7], cfg).token_ids == generate_ids(ref_lm, [5, 6, 7], cfg).token_ids


def test_tied_head_stays_one_tensor(tiny_tied_llama3_dir):
    model = load_model(str(tiny_tied_llama3_dir), dtype="bfloat16").model
    assert model.output.weight is model.tok_embeddings.weight
    quantised = load_model(str(tiny_tied_llama3_dir), dtype="int8").model
    assert quantised.tok_embeddings.weight.dtype == ACTIVATION_DTYPE  # the head alone is quantised
    assert quantised.output.weight.dtype == torch.int8


@pytest.mark.parametrize("dtype", ["bfloat16", "int8", "int4"])
def test_at_most_one_fused_weight_of_the_checkpoint_is_alive(tiny_dir, monkeypatch, dtype):
    """Each checkpoint tensor is read once and released before the next weight is read: the
    largest number alive at once is the three parts of one q/k/v weight, not the checkpoint."""
    read, peak = [], 0
    get = checkpoint.SafetensorsSource.get

    def counting_get(self, name):
        nonlocal peak
        t = get(self, name)
        read.append(weakref.ref(t))
        peak = max(peak, sum(r() is not None for r in read))
        return t

    monkeypatch.setattr(checkpoint.SafetensorsSource, "get", counting_get)
    load_model(str(tiny_dir), dtype=dtype)
    assert len(read) == 3 + 4 * 9  # embedding, norm, head; per layer q, k, v, o, gate, up, down, 2 norms
    assert peak <= 3
