import pytest

from layerskip.errors import LayerSkipError
from layerskip.generation.costs import (
    LayerCosts,
    acceptance_from_mean_length,
    expected_tokens_per_round,
    measure_costs,
)
from layerskip.model.packing import lay_out_layers


def unit_costs(n_layers: int = 10, max_tokens: int = 5, call_s: float = 0.0) -> LayerCosts:
    """A layer costs 1 s whatever the token count; the head is free."""
    return LayerCosts(n_layers, [1.0] * max_tokens, [0.0] * max_tokens, call_s, 16, 1000, 1e6)


@pytest.mark.parametrize(("alpha", "k", "expected"), [(0.0, 4, 1.0), (1.0, 4, 5.0), (0.5, 2, 1.75), (0.8, 1, 1.8)])
def test_expected_tokens_per_round(alpha, k, expected):
    assert expected_tokens_per_round(alpha, k) == pytest.approx(expected)


def test_expected_tokens_rejects_bad_alpha():
    with pytest.raises(LayerSkipError):
        expected_tokens_per_round(1.5, 3)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.77, 1.0])
def test_acceptance_from_mean_length_inverts(alpha):
    k = 5
    assert acceptance_from_mean_length(expected_tokens_per_round(alpha, k), k) == pytest.approx(alpha, abs=1e-6)


def test_round_and_speedup_arithmetic():
    c = unit_costs()
    # AR token: 10 layers. Round E=2, k=4: 5 drafts x 2 layers + 8 verify layers = 18.
    assert c.autoregressive_token_s() == 10
    assert c.round_s(2, 4) == 18
    assert c.speedup(2, 4, 1.0) == pytest.approx(5 * 10 / 18)
    assert c.speedup(2, 4, 0.0) == pytest.approx(10 / 18)
    alpha = c.break_even_alpha(2, 4)
    assert c.speedup(2, 4, alpha) == pytest.approx(1.0, abs=1e-6)
    assert c.autoregressive_bound_tokens_per_s() == pytest.approx(1000)


def test_layers_laid_out_for_verifications_cost_their_own_times():
    """From `laid_from` on a layer costs verify_layer_s (one-token passes through it included)."""
    c = unit_costs()
    c.verify_layer_s, c.relayout_s = [2.0, 0.25, 0.25, 0.25, 0.25], 3.0
    # E=2, k=4: drafts 5 x 2 plain layers; verification 8 layers over 5 tokens at 0.25.
    assert c.round_s(2, 4, laid_from=2) == 10 + 8 * 0.25
    assert c.round_s(2, 4, laid_from=1) == 5 * (1 + 2.0) + 8 * 0.25  # layer 1's one-token drafts cost 2
    assert c.autoregressive_s(laid_from=6) == 6 + 4 * 2.0 and c.autoregressive_s() == c.autoregressive_token_s()
    assert c.relayout_s_between(None, 2) == 8 * 3.0 and c.relayout_s_between(4, 2) == 2 * 3.0
    assert c.relayout_s_between(2, None) == 8 * 3.0 and c.relayout_s_between(None, None) == 0
    c.verify_layer_s = None  # the same layout: laid_from changes nothing
    assert c.round_s(2, 4, laid_from=2) == c.round_s(2, 4) == 18


def test_break_even_none_when_never_pays():
    c = unit_costs(call_s=1.0)
    # AR token: 1 + 10. Round: 2 draft calls of 1 + 9, verify 1 + 1: 22 s for at most 2 tokens.
    assert c.speedup(9, 1, 1.0) == pytest.approx(1.0)
    assert c.break_even_alpha(9, 1) is None


def test_bounds_are_checked():
    c = unit_costs(max_tokens=3)
    with pytest.raises(LayerSkipError):
        c.round_s(2, 5)  # verification of 6 tokens was not measured
    with pytest.raises(LayerSkipError):
        c.round_s(10, 1)  # E must leave a layer to verify


def test_measure_costs_on_tiny(tiny):
    c = measure_costs(tiny.model, 3, context=8, repeats=2, bandwidth=False)
    assert c.n_layers == 4 and c.max_tokens == 3
    assert all(t > 0 for t in c.layer_s + c.head_s) and c.call_s > 0
    assert c.read_bandwidth_bytes_per_s is None and c.autoregressive_bound_tokens_per_s() is None
    layers = sum(v.numel() * 4 for k, v in tiny.model.state_dict().items() if k.startswith("layers."))
    assert c.weight_bytes == layers + 4 * (105 * 64 + 64)  # + head and final norm
    assert c.to_dict()["autoregressive_token_s"] == pytest.approx(c.autoregressive_token_s())
    # The verification layout is timed where it differs (float32 at batch 1 on an AVX2 CPU), and
    # layer 0 is laid back out for one row afterwards.
    assert (c.verify_layer_s is None) == (c.relayout_s == 0.0)
    assert c.verify_layer_s is None or (len(c.verify_layer_s) == 3 and all(t > 0 for t in c.verify_layer_s))
    assert not lay_out_layers([tiny.model.layers[0]], 1)
