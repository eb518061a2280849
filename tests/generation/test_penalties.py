"""Frequency/presence penalties and logit_bias: OpenAI's definitions, and self-speculation stays
lossless with respect to the penalised distribution. Greedy: token-identical to autoregressive
(and a verification that forgets the drafts is not). Sampling: the exact distribution of
generated tokens 2 and 3 under a presence penalty, by enumeration as in test_sampling.py, within
its TV bound with 1000 seeded samples (measured: 0.042 and 0.048; -2 makes the penalty strong, so
a target without it is far off)."""

import pytest
import torch

from layerskip import GenerationConfig, LayerSkipError, generate_ids
from layerskip.generation.sampling import LogitAdjuster, processed_probs

from .test_sampling import PROMPT, VOCAB, empirical_marginals
from .test_sampling import small_vocab as small_vocab  # noqa: F401  (the same fixture)

PENALTIES = dict(frequency_penalty=0.7, presence_penalty=0.5, logit_bias={7: 1.5, 9: -3.0})


def test_adjustment_follows_openai_definitions():
    cfg = GenerationConfig(frequency_penalty=0.5, presence_penalty=0.25, logit_bias={3: 2.0})
    adjust = LogitAdjuster(cfg, 5, "cpu")
    adjust.commit([1, 1, 2])
    logits = torch.zeros(5)
    assert adjust(logits).tolist() == [0.0, -1.25, -0.75, 2.0, 0.0]
    assert adjust(logits, drafts=[torch.tensor(4)]).tolist() == [0.0, -1.25, -0.75, 2.0, -0.75]
    assert adjust(torch.zeros(2), columns=torch.tensor([3, 1])).tolist() == [2.0, -1.25]  # a reduced draft head


def test_verification_row_i_sees_drafts_before_it():
    adjust = LogitAdjuster(GenerationConfig(**PENALTIES), 12, "cpu")
    adjust.commit([7, 3])
    logits, drafts = torch.randn(4, 12), torch.tensor([3, 5, 3])
    rows = adjust.rows(logits, drafts)
    for i in range(4):
        assert torch.equal(rows[i], adjust(logits[i], drafts=list(drafts[:i])))


def test_inactive_adjustment_is_free():
    logits = torch.randn(3, 8)
    adjust = LogitAdjuster(GenerationConfig(), 8, "cpu")
    adjust.commit([1])
    row = logits[0]
    assert adjust.rows(logits, torch.tensor([1, 2])) is logits and adjust(row) is row


@pytest.mark.parametrize("bad", [{"frequency_penalty": 2.5}, {"presence_penalty": -3}, {"logit_bias": {1: 200}},
                                 {"logit_bias": {-1: 1.0}}])
def test_out_of_range_values_are_refused(bad):
    with pytest.raises(LayerSkipError):
        GenerationConfig(**bad)


def _greedy(lm, prompt, strategy="autoregressive", **kw):
    cfg = GenerationConfig(strategy=strategy, max_new_tokens=40, ignore_eos=True, **(PENALTIES | kw))
    return generate_ids(lm, prompt, cfg).token_ids


@pytest.mark.parametrize("exit_layer,k,extra", [(1, 3, {}), (2, 4, {"draft_vocab_size": 40}),
                                                (3, 2, {"adaptive_k": True})])
def test_greedy_self_speculation_equals_autoregressive_with_penalties(tiny, exit_layer, k, extra):
    for prompt in ([5, 6, 7], list(range(10, 22))):
        ar = _greedy(tiny, prompt)
        assert ar != _greedy(tiny, prompt, frequency_penalty=0, presence_penalty=0, logit_bias={})
        assert _greedy(tiny, prompt, "self_speculative", exit_layer=exit_layer, num_speculations=k, **extra) == ar


def test_perfect_drafts_with_penalties(tiny_perfect, monkeypatch):
    """Every draft accepted, so each row's penalty decides a token: right rows give autoregressive
    decoding's tokens, rows that forget the drafts before them (WRONG on purpose) do not."""
    prompt = [5, 6, 7]
    ar = _greedy(tiny_perfect, prompt)
    assert _greedy(tiny_perfect, prompt, "self_speculative", exit_layer=2, num_speculations=6) == ar
    rows = LogitAdjuster.rows
    monkeypatch.setattr(LogitAdjuster, "rows", lambda self, logits, drafts: rows(self, logits, drafts[:0]))
    assert _greedy(tiny_perfect, prompt, "self_speculative", exit_layer=2, num_speculations=6) != ar


def test_a_large_negative_bias_removes_a_token(tiny):
    plain = _greedy(tiny, [5, 6, 7], frequency_penalty=0, presence_penalty=0, logit_bias={})
    common = max(set(plain), key=plain.count)
    for strategy in ("autoregressive", "self_speculative"):
        biased = _greedy(tiny, [5, 6, 7], strategy, exit_layer=2, frequency_penalty=0, presence_penalty=0,
                         logit_bias={common: -100})
        assert common not in biased


SAMPLES, TV_BOUND, PRESENCE = 1000, 0.08, -2.0


def exact_marginals(model, cfg: GenerationConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact autoregressive distributions of generated tokens 2 and 3 under cfg's presence penalty."""
    eye = torch.eye(VOCAB)
    with torch.no_grad():
        p1 = processed_probs(model(torch.tensor([PROMPT]))[0, -1], cfg)
        logits2 = model(torch.tensor([PROMPT + [a] for a in range(VOCAB)]))[:, -1]
        p2_given_1 = processed_probs(logits2 - cfg.presence_penalty * eye, cfg)  # [a, V]
        logits3 = model(torch.tensor([PROMPT + [a, b] for a in range(VOCAB) for b in range(VOCAB)]))[:, -1]
        seen = ((eye[:, None] + eye[None, :]) > 0).float().view(VOCAB * VOCAB, VOCAB)
        p3_given_12 = processed_probs(logits3 - cfg.presence_penalty * seen, cfg).view(VOCAB, VOCAB, VOCAB)
    joint12 = p1[:, None] * p2_given_1
    return joint12.sum(0), (joint12[..., None] * p3_given_12).sum((0, 1))


def tv_to_exact(lm) -> tuple[float, float]:
    cfg = GenerationConfig(strategy="self_speculative", exit_layer=1, num_speculations=2, max_new_tokens=3,
                           do_sample=True, temperature=0.9, ignore_eos=True, presence_penalty=PRESENCE)
    exact2, exact3 = exact_marginals(lm.model, cfg)
    emp = empirical_marginals(lm, cfg, SAMPLES)
    return 0.5 * (emp[0] - exact2).abs().sum().item(), 0.5 * (emp[1] - exact3).abs().sum().item()


def test_speculative_sampling_with_a_presence_penalty_matches_autoregressive(small_vocab):
    assert max(tv_to_exact(small_vocab)) < TV_BOUND


def test_the_exact_distribution_depends_on_the_penalty(small_vocab):
    """So the TV test above can fail: without the penalty the target is far from the penalised one."""
    plain = exact_marginals(small_vocab.model, GenerationConfig(do_sample=True, temperature=0.9))[1]
    penalised = exact_marginals(small_vocab.model, GenerationConfig(do_sample=True, temperature=0.9,
                                                                  presence_penalty=PRESENCE))[1]
    assert 0.5 * (plain - penalised).abs().sum().item() > 2 * TV_BOUND
