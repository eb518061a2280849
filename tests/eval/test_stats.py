from layerskip.eval.stats import generation_figures
from layerskip.generation.output import GenerationTotals, SpeculationStats

BASE = {"requests", "new_tokens", "tokens_per_second", "decode_tokens_per_second", "total_time_s"}


def test_figures_are_ratios_of_the_totals():
    t = GenerationTotals(num_generations=2, new_tokens=12, decode_tokens=10, decode_time_s=2.0, total_time_s=3.0,
                         stats=SpeculationStats(8, 6, 4))
    d = generation_figures(t)
    assert set(d) == BASE | {"acceptance_rate", "mean_accepted_length", "num_drafted", "num_accepted",
                             "num_verifications"}
    assert (d["requests"], d["tokens_per_second"], d["decode_tokens_per_second"]) == (2, 4.0, 5.0)
    assert (d["acceptance_rate"], d["mean_accepted_length"]) == (0.75, 2.5)


def test_no_acceptance_figures_without_verifications():
    assert set(generation_figures(GenerationTotals(num_generations=1, new_tokens=3))) == BASE
