"""Export: the exit recommendation from the cost model, and a strict state-dict load."""

import pytest
import torch

from layerskip.errors import LayerSkipError
from layerskip.generation.costs import memory_bound_costs
from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer
from layerskip.training.export import estimated_speedup, recommend_exit, save_model

CFG = ModelConfig(vocab_size=64, dim=16, n_layers=4, n_heads=2, n_kv_heads=1, intermediate_size=32, max_seq_len=32)


def test_estimated_speedup_is_the_cost_model_round_in_weight_units():
    layer = 16 * (16 + 2 * 8) + 16 * 16 + 3 * 16 * 32  # wqkv + wo + w1/w3/w2
    head = 64 * 16
    costs = memory_bound_costs(CFG, max_tokens=3)
    assert costs.autoregressive_token_s() == 4 * layer + head
    # E=1, k=2, alpha=1: 3 tokens for 3 one-layer drafts, 2 draft heads, 3 layers + head to verify.
    by_hand = 3 * (4 * layer + head) / (3 * layer + 2 * head + 3 * layer + head)
    assert costs.speedup(1, 2, 1.0) == pytest.approx(by_hand)
    assert estimated_speedup(1.0, 1, CFG, max_draft=2) == pytest.approx(max(by_hand, costs.speedup(1, 1, 1.0)))


def test_recommend_exit_only_when_it_beats_plain_decoding():
    assert recommend_exit({1: 0.0, 2: 0.0, 3: 0.0}, CFG) is None
    assert recommend_exit({1: 1.0, 4: 1.0}, CFG) == 1  # the last layer is not an exit
    assert recommend_exit({}, CFG) is None


def test_save_model_reports_state_that_does_not_match(tmp_path):
    state = Transformer(CFG).state_dict()
    save_model(dict(state), CFG, tmp_path / "ok", None, {})
    assert (tmp_path / "ok" / "model.safetensors").is_file()
    missing = {k: v for k, v in state.items() if k != "norm.weight"}
    with pytest.raises(LayerSkipError, match="missing.*norm.weight"):
        save_model(missing, CFG, tmp_path / "missing", None, {})
    with pytest.raises(LayerSkipError, match="unexpected.*extra.weight"):
        save_model({**state, "extra.weight": torch.zeros(1)}, CFG, tmp_path / "extra", None, {})
