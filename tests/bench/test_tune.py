"""Auto-tuning without timing: costs are given (memory-bound or made up) and the time budget runs
on a fake clock, so the same inputs always choose the same setting."""

import pytest

from layerskip.bench.data import load_dataset
from layerskip.bench.tune import Candidate, TuneConfig, TuneResult, choose, tune, verdict
from layerskip.bench.tuned import TunedSetting
from layerskip.errors import LayerSkipError
from layerskip.generation.config import GenerationConfig
from layerskip.generation.costs import LayerCosts, memory_bound_costs
from layerskip.generation.output import SpeculationStats
from tests.conftest import PERFECT_FROM


class FakeClock:
    """Advances `step` seconds per reading."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_tune_config_is_validated():
    with pytest.raises(LayerSkipError):
        TuneConfig(time_budget_s=0)
    with pytest.raises(LayerSkipError):
        TuneConfig(max_k=0)
    with pytest.raises(LayerSkipError):
        TuneConfig(tie_tolerance=2)


class _Speed:
    def __init__(self, mean_len):
        self.stats = SpeculationStats(num_drafted=4, num_accepted=int(mean_len - 1), num_verifications=1)


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


def test_tune_perfect_draft_picks_e_at_or_below(tiny_perfect):
    """Every measured speedup counts as a tie, so measured acceptance and the cost model decide."""
    cfg = TuneConfig(num_candidates=3, max_k=4, max_new_tokens=8, analysis_tokens=32, tie_tolerance=1.0)
    costs = LayerCosts(4, [1e-3] * 5, [1e-4] * 5, 1e-4, 16, 1, None)
    result = tune(tiny_perfect, load_dataset("qa", num_samples=2), GenerationConfig(), cfg, "tiny#perfect", costs=costs,
                  clock=FakeClock(0.0))
    assert result.analysis.record(PERFECT_FROM).agreement == 1.0
    assert result.chosen.exit_layer <= PERFECT_FROM
    assert result.chosen.model_key == "tiny#perfect" and result.num_prompts == 2
    assert result.chosen.acceptance_rate == 1.0
    assert [a.strategy for a in result.measured] == ["autoregressive"] + ["self_speculative"] * 3
    assert set(result.to_dict()) == {"chosen", "num_prompts", "elapsed_s", "candidates", "measured", "analysis"}


def test_the_budget_stops_after_the_prompt_that_crosses_it(tiny_perfect):
    """One reading at the start and one after each prompt, 10 s apart: a 25 s budget is crossed
    after the third prompt of five."""
    cfg = TuneConfig(time_budget_s=25, num_candidates=1, max_k=2, max_new_tokens=4, analysis_tokens=16)
    clock = FakeClock(10.0)
    result = tune(tiny_perfect, load_dataset("qa", num_samples=5), GenerationConfig(), cfg, "tiny",
                  costs=memory_bound_costs(tiny_perfect.config, 3), clock=clock)
    assert result.num_prompts == 3
    assert result.elapsed_s == 40.0  # the final reading
    assert all(a.speed.num_generations == 3 for a in result.measured)


def _result(speedup: float) -> TuneResult:
    chosen = TunedSetting("m", 3, 2, speedup, 0.5, speedup > 1.0, "qa", 8)
    return TuneResult(None, [], [], 2, chosen, 1.0)


def test_verdict_says_whether_it_pays():
    assert verdict(_result(1.4)).startswith("self-speculation pays on this model: E=3, k=2: 1.40x")
    no = verdict(_result(0.6))
    assert "does NOT pay" in no and "0.60x" in no and "--strategy autoregressive" in no


@pytest.mark.slow
def test_tune_smollm2_says_self_speculation_does_not_pay(smollm2):
    """Not trained with LayerSkip: early layers rarely agree with the last, so neither the cost model
    (memory-bound costs) nor the acceptance measured on a prompt gives a speedup."""
    cfg = TuneConfig(time_budget_s=1.0, num_candidates=1, max_k=2, max_new_tokens=8, analysis_tokens=32)
    costs = memory_bound_costs(smollm2.config, cfg.max_k + 1)
    result = tune(smollm2, load_dataset("code", num_samples=2), GenerationConfig(), cfg, "smollm2", costs=costs,
                  clock=FakeClock(2.0))
    assert result.num_prompts == 1  # the budget stops measuring after the first prompt
    assert max(r.agreement for r in result.analysis.records[:10]) < 0.2
    assert result.analysis.recommended_exit_layer is None  # the cost model agrees before measuring
    c = result.chosen
    assert costs.speedup(c.exit_layer, c.num_speculations, c.acceptance_rate) < 1.0  # and after
