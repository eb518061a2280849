"""Batched generation is lossless per row: every row's greedy tokens equal that prompt's own
single-sequence output, whatever the batch's size, mix of prompt lengths, lengths and EOS, and
whether rows join and leave mid-flight; speculative sampling in a batch keeps each row's
distribution."""

from dataclasses import replace

import pytest
import torch

from layerskip import GenerationConfig, LayerSkipError, generate_batch, generate_batch_ids, generate_ids
from layerskip.generation import self_speculative
from layerskip.generation.batch import BatchDecoder, BatchPlan

from .test_sampling import (
    E2E_BOUND,
    PROMPT,
    VOCAB,
    _tv,
    exact_model_marginals,
    resample_from_p_on_rejection,
    sampling_config,
)
from .test_sampling import small_vocab as small_vocab  # noqa: F401  (fixture)

TEXTS = ["def f(x):", "hello world, this is a longer prompt", "a", "import os\nimport sys\n",
         "xyz = [1, 2, 3]", "The quick brown fox jumps", "for i in range(10):", "#"]


def _configs(strategy: str, n: int, **kw) -> list[GenerationConfig]:
    """Mixed lengths, run to length (EOS ignored)."""
    return [GenerationConfig(strategy=strategy, exit_layer=2, num_speculations=3, max_new_tokens=6 + 5 * i,
                             ignore_eos=True, **kw) for i in range(n)]


def _with_eos(lm, prompts: list[list[int]], cfgs: list[GenerationConfig]) -> list[GenerationConfig]:
    """Every other row stops at an EOS it meets at its own step: its (i+1)-th token made an EOS id."""
    out = []
    for i, (p, c) in enumerate(zip(prompts, cfgs, strict=True)):
        if i % 2:
            tokens = generate_ids(lm, p, c).token_ids
            c = replace(c, ignore_eos=False, eos_token_ids=[tokens[min(i, len(tokens) - 1)]])
        out.append(c)
    return out


@pytest.mark.parametrize("strategy", ["autoregressive", "early_exit", "self_speculative"])
@pytest.mark.parametrize("size", [1, 3, 8])
def test_every_row_equals_its_single_sequence_output(tiny, strategy, size):
    prompts = [tiny.tokenizer(t).input_ids for t in TEXTS[:size]]
    cfgs = _with_eos(tiny, prompts, _configs(strategy, size))
    batch = generate_batch_ids(tiny, prompts, cfgs)
    single = [generate_ids(tiny, p, c) for p, c in zip(prompts, cfgs, strict=True)]
    assert [b.token_ids for b in batch] == [s.token_ids for s in single]
    assert [b.finish_reason for b in batch] == [s.finish_reason for s in single]
    if size == 8:
        assert {b.finish_reason for b in batch} == {"length", "stop"}, "the mix must include EOS stops"


def test_self_speculation_in_a_batch_equals_autoregressive_and_accepts_per_row(tiny):
    prompts = [tiny.tokenizer(t).input_ids for t in TEXTS]
    spec = generate_batch_ids(tiny, prompts, _configs("self_speculative", 8, draft_confidence_threshold=0.3))
    ar = generate_batch_ids(tiny, prompts, _configs("autoregressive", 8))
    assert [s.token_ids for s in spec] == [a.token_ids for a in ar]
    assert len({s.stats.num_accepted for s in spec}) > 1, "rows accept their own numbers of drafts"


def test_rows_joining_and_leaving_mid_flight_change_no_row(tiny):
    prompts = [tiny.tokenizer(t).input_ids for t in TEXTS[:5]]
    cfgs = _configs("self_speculative", 5)
    expected = [generate_ids(tiny, p, c).token_ids for p, c in zip(prompts, cfgs, strict=True)]
    plan = BatchPlan.of(cfgs[0], tiny.config.n_layers, None)
    decoder = BatchDecoder(tiny, 3, 128, plan)
    ids = {decoder.join(prompts[0], cfgs[0]): 0, decoder.join(prompts[1], cfgs[1]): 1}
    cancelled = decoder.join(prompts[2], cfgs[2])
    decoder.step()
    decoder.cancel(cancelled)  # a client left: its row is free for the next request
    ids[decoder.join(prompts[3], cfgs[3])] = 3
    results, waiting = {}, [4]
    while decoder.active or waiting:
        decoder.step()
        results |= decoder.take_finished()
        if waiting and decoder.free:
            ids[decoder.join(prompts[waiting[0]], cfgs[waiting.pop(0)])] = 4
    assert cancelled not in results
    assert {ids[r]: res.token_ids for r, res in results.items()} == {i: expected[i] for i in (0, 1, 3, 4)}


def test_real_model_rows_equal_single_sequences(smollm2):
    """The rows of both strategies equal each prompt's single-sequence autoregressive output (which
    single-sequence self-speculation equals too: test_self_speculative), so one reference serves both."""
    texts = ["def fibonacci(n):", "The capital of France is", "import numpy as np\n"]
    prompts = [smollm2.tokenizer(t).input_ids for t in texts]

    def configs(strategy: str) -> list[GenerationConfig]:
        return [GenerationConfig(strategy=strategy, exit_layer=26, num_speculations=2, max_new_tokens=6 + 4 * i)
                for i in range(len(prompts))]

    single = [generate_ids(smollm2, p, c).token_ids for p, c in zip(prompts, configs("autoregressive"), strict=True)]
    for strategy in ("autoregressive", "self_speculative"):
        assert [b.token_ids for b in generate_batch_ids(smollm2, prompts, configs(strategy))] == single


def test_text_prompts_and_mismatched_settings(tiny):
    out = generate_batch(tiny, ["ab", "cd"], GenerationConfig(max_new_tokens=4, ignore_eos=True))
    assert [len(r.token_ids) for r in out] == [4, 4]
    with pytest.raises(LayerSkipError, match="strategy"):
        generate_batch(tiny, ["ab", "cd"], [GenerationConfig(), GenerationConfig(strategy="early_exit")])
    with pytest.raises(LayerSkipError, match="2 prompts but 1"):
        generate_batch(tiny, ["ab", "cd"], [GenerationConfig()])


def _batched_marginals(model, cfg: GenerationConfig, batches: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Empirical distributions of generated tokens 2 and 3 over 4 independently seeded rows per batch."""
    counts = torch.zeros(2, VOCAB)
    for b in range(batches):
        cfgs = [GenerationConfig(**{**cfg.__dict__, "seed": 4 * b + r}) for r in range(4)]
        for res in generate_batch_ids(model, [PROMPT] * 4, cfgs):
            counts[0, res.token_ids[1]] += 1
            counts[1, res.token_ids[2]] += 1
    return counts / (4 * batches)


def test_speculative_sampling_in_a_batch_keeps_each_rows_distribution(small_vocab, monkeypatch):  # noqa: F811
    cfg = sampling_config("temperature")
    exact2, exact3 = exact_model_marginals(small_vocab.model, cfg)
    emp2, emp3 = _batched_marginals(small_vocab, cfg, 150)
    assert _tv(emp2, exact2) < E2E_BOUND and _tv(emp3, exact3) < E2E_BOUND
    monkeypatch.setattr(self_speculative, "accept_sampled", resample_from_p_on_rejection)  # negative control
    emp2, emp3 = _batched_marginals(small_vocab, cfg, 150)
    assert max(_tv(emp2, exact2), _tv(emp3, exact3)) > E2E_BOUND
