"""Eager steps attend over the first `span` cache slots (a power of two that grows with the longest
row), not the whole preallocated cache: the same tokens as reading every slot, in every strategy,
with rows whose positions cross several span sizes."""

from dataclasses import replace

import pytest

from layerskip import GenerationConfig
from layerskip.generation import batch as batch_module
from layerskip.generation.batch import BatchDecoder, BatchPlan
from layerskip.generation.steps import EAGER, MIN_SPAN, attention_span


def test_the_span_is_the_next_power_of_two_within_the_cache():
    assert attention_span(1, 4096) == MIN_SPAN
    assert attention_span(MIN_SPAN, 4096) == MIN_SPAN
    assert attention_span(MIN_SPAN + 1, 4096) == 2 * MIN_SPAN
    assert attention_span(1000, 4096) == 1024
    assert attention_span(3000, 2049) == 2049
    assert attention_span(10, 40) == 40


def _decode(lm, prompts: list[list[int]], cfg: GenerationConfig, whole_cache: bool, monkeypatch) -> list[list[int]]:
    """Every prompt's tokens from one batch with a long cache; `whole_cache`: steps that read all of it."""
    steps = replace(EAGER, compiled=True) if whole_cache else EAGER  # "compiled" steps read the whole cache
    monkeypatch.setattr(batch_module, "steps_for", lambda model, compile: steps)
    mcfg = lm.config
    decoder = BatchDecoder(lm, len(prompts), 512, BatchPlan.of(cfg, mcfg.n_layers, mcfg.recommended_exit_layer))
    ids = [decoder.join(p, cfg) for p in prompts]
    spans = set()
    while decoder.active:
        spans.add(decoder._span(max(decoder.rows[s].pos for s in decoder.active) + 1))
        decoder.step()
    done = decoder.take_finished()
    assert whole_cache or len(spans) >= 2, "the rows must cross a span size"
    return [done[i].token_ids for i in ids]


@pytest.mark.parametrize("strategy", ["autoregressive", "early_exit", "self_speculative"])
def test_reading_the_span_gives_the_tokens_of_reading_the_whole_cache(tiny, strategy, monkeypatch):
    long = tiny.tokenizer("word " * 100).input_ids[: MIN_SPAN + 20]  # past the first span from the start
    prompts = [tiny.tokenizer("def f(x):").input_ids, long, long[: MIN_SPAN - 10]]
    cfg = GenerationConfig(strategy=strategy, exit_layer=2, num_speculations=3, max_new_tokens=90, ignore_eos=True)
    spanned = _decode(tiny, prompts, cfg, False, monkeypatch)
    assert spanned == _decode(tiny, prompts, cfg, True, monkeypatch)
    assert [len(t) for t in spanned] == [90] * 3
