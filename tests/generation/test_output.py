"""Stop-string cutting, and speculation figures summed over generations: rates are ratios of sums."""

import pytest

from layerskip.generation.output import GenerationResult, GenerationTotals, SpeculationStats, cut_at_stop_strings


def result(n_tokens: int, decode_s: float, drafted: int = 0, accepted: int = 0, verifications: int = 0):
    return GenerationResult(
        text="", token_ids=list(range(n_tokens)), prompt_tokens=3, finish_reason="length",
        strategy="self_speculative", exit_layer=2, num_speculations=4, time_to_first_token_s=0.5,
        decode_time_s=decode_s, total_time_s=decode_s + 0.5,
        stats=SpeculationStats(drafted, accepted, verifications, 0.25, 0.5),
    )


def test_cut_at_the_earliest_stop_string():
    assert cut_at_stop_strings("a. b! c", ["!", "."]) == "a"
    assert cut_at_stop_strings("abc", []) == "abc"
    assert cut_at_stop_strings("\nfoo\nbar", ["\n"]) == ""
    # from index 1 (the benchmark's answers): a leading stop does not empty the answer
    assert cut_at_stop_strings("\nfoo\nbar", ["\n"], start=1) == "\nfoo"
    assert cut_at_stop_strings(" Paris\nQuestion: x", ["\n"], start=1) == " Paris"


def test_stats_add_every_counter():
    total = SpeculationStats(8, 6, 4, 0.25, 0.5) + SpeculationStats(12, 3, 6, 1.0, 2.0)
    assert total == SpeculationStats(20, 9, 10, 1.25, 2.5)
    assert total.acceptance_rate == pytest.approx(9 / 20)
    assert total.mean_accepted_length == pytest.approx((9 + 10) / 10)
    assert SpeculationStats().mean_accepted_length == 0.0 and SpeculationStats().acceptance_rate == 0.0


def test_decode_tokens_exclude_the_first():
    assert result(11, 2.0).decode_tokens == 10 and result(11, 2.0).decode_tokens_per_second == 5.0
    assert result(1, 2.0).decode_tokens == 0 and result(0, 2.0).decode_tokens == 0
    assert result(0, 2.0).decode_tokens_per_second == 0.0


def test_totals_are_ratios_of_sums():
    t = GenerationTotals.of([result(11, 1.0, 8, 6, 4), result(21, 4.0, 12, 3, 6), result(0, 0.0)])
    assert (t.num_generations, t.new_tokens, t.decode_tokens) == (3, 32, 30)
    assert t.decode_tokens_per_s == pytest.approx(30 / 5.0)
    assert t.ms_per_token == pytest.approx(1000 * 5.0 / 30)
    assert t.total_tokens_per_s == pytest.approx(32 / 6.5)
    assert t.stats == SpeculationStats(20, 9, 10, 0.75, 1.5)
    empty = GenerationTotals()
    assert (empty.decode_tokens_per_s, empty.ms_per_token, empty.total_tokens_per_s) == (0.0, 0.0, 0.0)
