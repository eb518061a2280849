import pytest

from layerskip.bench.cost_model import LayerCosts
from layerskip.bench.data import load_dataset
from layerskip.bench.tune import Candidate, TuneConfig, choose, tune, verdict
from layerskip.errors import LayerSkipError
from layerskip.generation.config import GenerationConfig
from layerskip.model.loading import load_model
from layerskip.model.synthetic import silence_layers

PERFECT_FROM = 2


def test_tune_config_is_validated():
    with pytest.raises(LayerSkipError):
        TuneConfig(time_budget_s=0)
    with pytest.raises(LayerSkipError):
        TuneConfig(max_k=0)
    with pytest.raises(LayerSkipError):
        TuneConfig(tie_tolerance=2)


class _Speed:
    def __init__(self, mean_len):
        self.mean_accepted_length = mean_len


class _Arm:
    def __init__(self, speedup, mean_len):
        self.speedup, self.speed = speedup, _Speed(mean_len)


def test_choose_ties_go_to_the_cost_model():
    costs = LayerCosts(10, [1.0] * 5, [0.0] * 5, 0.0, 16, 1, None)
    cands = [Candidate(2, 4, 2.5), Candidate(3, 4, 2.0)]
    # Both accept everything; E=3 measured 5 % faster (noise): a tie, the cheaper E=2 wins.
    assert choose(cands, {(2, 4): _Arm(1.9, 5.0), (3, 4): _Arm(2.0, 5.0)}, costs, 0.1).exit_layer == 2
    # A clear measured win is kept.
    assert choose(cands, {(2, 4): _Arm(1.2, 5.0), (3, 4): _Arm(2.0, 5.0)}, costs, 0.1).exit_layer == 3


def test_tune_perfect_draft_picks_e_at_or_below(tiny_dir):
    """Timing-independent: memory-bound costs are given (a layer costs the same for 1..k+1 tokens)
    and every measured speedup counts as a tie, so measured acceptance and the cost model decide."""
    loaded = load_model(str(tiny_dir))
    silence_layers(loaded.model, PERFECT_FROM)
    cfg = TuneConfig(num_candidates=3, max_k=4, max_new_tokens=8, analysis_tokens=32, tie_tolerance=1.0)
    costs = LayerCosts(4, [1e-3] * 5, [1e-4] * 5, 1e-4, 16, 1, None)
    result = tune(loaded, load_dataset("qa", num_samples=2), GenerationConfig(), cfg, "tiny#perfect", costs=costs)
    assert result.analysis.record(PERFECT_FROM).agreement == 1.0
    assert result.chosen.exit_layer <= PERFECT_FROM
    assert result.chosen.model_key == "tiny#perfect" and result.num_prompts == 2
    assert result.chosen.acceptance_rate == 1.0
    assert [a.strategy for a in result.measured] == ["autoregressive"] + ["self_speculative"] * 3
    assert set(result.to_dict()) == {"chosen", "num_prompts", "elapsed_s", "candidates", "measured", "analysis"}


@pytest.mark.slow
def test_tune_smollm2_says_self_speculation_does_not_pay(smollm2):
    cfg = TuneConfig(time_budget_s=1.0, num_candidates=1, max_k=2, max_new_tokens=8, analysis_tokens=32)
    result = tune(smollm2, load_dataset("code", num_samples=2), GenerationConfig(), cfg, "smollm2")
    assert result.num_prompts == 1  # the budget stops measuring after the first prompt
    assert max(r.agreement for r in result.analysis.records[:10]) < 0.2  # not trained with LayerSkip
    assert result.analysis.recommended_exit_layer is None  # the cost model agrees before measuring
    assert not result.chosen.beats_autoregressive and result.chosen.speedup < 1.0
    assert "does NOT pay" in verdict(result)
