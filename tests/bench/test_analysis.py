import pytest

from layerskip.bench.analysis import analyze, layer_statistics, text_ids
from layerskip.bench.data import load_dataset
from layerskip.generation.costs import memory_bound_costs
from tests.conftest import PERFECT_FROM


def test_perfect_draft_agreement_is_one_from_e(tiny_perfect):
    """Memory-bound costs (no timing): the cheapest perfect draft, E=2, is the one recommended."""
    costs = memory_bound_costs(tiny_perfect.config, max_tokens=5)
    result = analyze(tiny_perfect, load_dataset("code", num_samples=2), max_tokens=64, max_k=4, costs=costs)
    assert [r.layer for r in result.records] == [1, 2, 3, 4]
    for r in result.records[PERFECT_FROM - 1 :]:
        assert r.agreement == 1.0
    assert result.records[0].agreement < 1.0  # a random layer 1 is no perfect draft
    ppl = [r.perplexity for r in result.records[PERFECT_FROM - 1 :]]
    assert max(ppl) == pytest.approx(min(ppl))  # identical logits from E on
    assert result.records[-1].predicted_speedup is None
    assert result.num_tokens == sum(len(ids) for ids in text_ids(tiny_perfect, load_dataset("code", 2), 64))
    d = result.to_dict()
    assert {"layer", "agreement", "perplexity", "predicted_speedup", "best_k"} <= set(d["records"][0])
    assert result.recommended_exit_layer == PERFECT_FROM
    assert result.predicted_speedup == max(r.predicted_speedup for r in result.records[:-1]) > 1.0
    best = result.record(PERFECT_FROM)
    assert result.recommended_k == best.best_k
    assert best.predicted_speedup == costs.speedup(PERFECT_FROM, best.best_k, 1.0)


def test_layer_statistics_last_layer_agrees_with_itself(tiny):
    agreement, perplexity, n = layer_statistics(tiny.model, [[1, 5, 9, 20, 33], [1, 7]])
    assert agreement[-1] == 1.0 and n == 7
    assert all(0 <= a <= 1 for a in agreement) and all(p > 1 for p in perplexity)
