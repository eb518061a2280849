import math

import pytest
import torch

from layerskip.training.config import LayerDropoutSection
from layerskip.training.layer_dropout import apply_with_dropout, depth_scale, drop_rates, time_scale


def test_depth_scale_formulas():
    n = 8
    assert depth_scale("exp", 0, n) == 0.0
    assert depth_scale("exp", n - 1, n) == pytest.approx(1.0)
    assert depth_scale("exp", 3, n) == pytest.approx(math.exp(3 * math.log(2) / (n - 1)) - 1)
    assert [depth_scale("linear", layer, 5) for layer in range(5)] == [0, 0.25, 0.5, 0.75, 1.0]
    assert all(depth_scale("uniform", layer, n) == 1.0 for layer in range(n))


def test_time_scale_formulas():
    assert time_scale("none", 7, 100) == 1.0
    assert time_scale("exp", 0, 100) == 0.0
    assert time_scale("exp", 99, 100) == pytest.approx(1.0)
    assert time_scale("exp", 40, 101) == pytest.approx(math.exp(40 * math.log(2) / 100) - 1)


def test_drop_rates_combine_s_d_and_pmax():
    cfg = LayerDropoutSection(p_max=0.2, scale="exp", curriculum="exp")
    rates = drop_rates(cfg, 4, step=50, total_steps=101)
    s = math.exp(50 * math.log(2) / 100) - 1
    assert rates == pytest.approx([s * depth_scale("exp", i, 4) * 0.2 for i in range(4)])
    assert drop_rates(cfg, 4, step=0, total_steps=101) == [0.0] * 4


def test_empirical_drop_rate_matches_p_per_sequence():
    torch.manual_seed(0)
    computed = []

    def layer(x):
        computed.append(x.shape[0])
        return x + 1

    batch, trials, p = 64, 200, 0.3
    h = torch.zeros(batch, 3, 2)
    kept = 0
    for _ in range(trials):
        out = apply_with_dropout(layer, h, p)
        rows_changed = (out[:, 0, 0] == 1).sum().item()
        assert rows_changed == computed[-1]  # exactly the kept sequences were computed
        assert ((out[:, 0, 0] == 0) | (out[:, 0, 0] == 1)).all()  # whole sequences skip or not
        kept += rows_changed
    assert 1 - kept / (batch * trials) == pytest.approx(p, abs=0.015)


def test_no_dropout_is_identity_path():
    h = torch.randn(2, 3, 4)
    assert torch.equal(apply_with_dropout(lambda x: x * 2, h, 0.0), h * 2)
