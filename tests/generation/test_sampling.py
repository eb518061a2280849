"""Sampling: processed distributions, and losslessness of speculative sampling.

The statistics come from the acceptance rule itself (`self_speculative.accept_sampled`) on a
Markov "model" with a 16-token vocabulary: target rows P[x] and draft rows Q[x], each the processed
distribution (temperature, top-k, top-p) of fixed random logits, the draft's far from the
target's. A round from token x drafts d1 ~ Q[x], d2 ~ Q[d1], is verified against the rows
P[x], P[d1], P[d2] (the target depends on the drafts, as in a real model) and emits d[:n] + [t];
rounds repeat until two tokens are out. Their exact marginals are P[x0] and P[x0] @ P.

A deliberately wrong rule — on rejection, resample from p instead of norm(max(p - q, 0)) — must
exceed 1.5x the bound (measured with 2000 samples: the correct rule gives TV <= 0.04 in all three
settings, the wrong one 0.15 on token 2; the bound is 0.08, as it was end to end). One short
end-to-end run checks that the decoding loop feeds the rule the right rows.
"""

from dataclasses import replace

import pytest
import torch

from layerskip import GenerationConfig, generate_ids
from layerskip.generation import self_speculative
from layerskip.generation.sampling import processed_probs, sample
from layerskip.model.loaded import LoadedModel
from layerskip.model.synthetic import random_model

from ..conftest import char_tokenizer, tiny_config

VOCAB, PROMPT, TV_BOUND = 16, [3, 4, 5], 0.08
SAMPLES, E2E_SAMPLES, E2E_BOUND = 2000, 600, 0.12
SETTINGS = {
    "temperature": dict(temperature=0.9),
    "top_k": dict(temperature=1.0, top_k=6),
    "top_p": dict(temperature=1.0, top_p=0.8),
}


def test_top_k_keeps_k_tokens():
    probs = processed_probs(torch.tensor([0.1, 3.0, 2.0, 1.0, -1.0]), GenerationConfig(do_sample=True, top_k=2))
    assert (probs > 0).tolist() == [False, True, True, False, False]
    assert probs.sum().item() == pytest.approx(1.0)


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    probs = processed_probs(logits, GenerationConfig(do_sample=True, top_p=0.7))
    assert (probs > 0).tolist() == [True, True, False, False]
    assert probs[0].item() == pytest.approx(0.5 / 0.8)


def test_temperature_sharpens():
    logits = torch.tensor([1.0, 2.0])
    cold = processed_probs(logits, GenerationConfig(do_sample=True, temperature=0.5))
    warm = processed_probs(logits, GenerationConfig(do_sample=True, temperature=2.0))
    assert cold[1] > warm[1] > 0.5


def markov_rows(cfg: GenerationConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Target logits and rows P, draft rows Q (all [V, V]) of a fixed random Markov model."""
    g = torch.Generator().manual_seed(0)
    target = 2.0 * torch.randn(VOCAB, VOCAB, generator=g)
    draft = target + 2.0 * torch.randn(VOCAB, VOCAB, generator=g)  # a poor draft: many rejections
    return target, processed_probs(target, cfg), draft, processed_probs(draft, cfg)


def first_two_tokens(rule, cfg: GenerationConfig, target: torch.Tensor, q_rows: torch.Tensor,
                     gen: torch.Generator) -> list[int]:
    """Rounds of k=2 drafts from PROMPT[-1] through `rule` until two tokens are emitted."""
    out, last = [], PROMPT[-1]
    while len(out) < 2:
        drafts = [last]
        for _ in range(2):
            drafts.append(int(sample(q_rows[drafts[-1]], gen)))
        d = self_speculative.Draft(torch.tensor(drafts[1:]), q_rows[drafts[:-1]])
        n, tok = rule(d, target[drafts], cfg, gen)
        out += drafts[1 : n + 1] + [tok]
        last = out[-1]
    return out[:2]


def rule_marginals(rule, cfg: GenerationConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Empirical and exact marginals of the first two tokens."""
    target, p_rows, _, q_rows = markov_rows(cfg)
    gen = torch.Generator().manual_seed(1)
    counts = torch.zeros(2, VOCAB)
    for _ in range(SAMPLES):
        a, b = first_two_tokens(rule, cfg, target, q_rows, gen)
        counts[0, a] += 1
        counts[1, b] += 1
    start = p_rows[PROMPT[-1]]
    return counts[0] / SAMPLES, counts[1] / SAMPLES, start, start @ p_rows


def resample_from_p_on_rejection(d, logits, cfg, generator):
    """WRONG on purpose: ignores the residual distribution norm(max(p - q, 0))."""
    p = processed_probs(logits, cfg)
    if not d.tokens.shape[0]:
        return 0, int(sample(p[0], generator))
    idx = d.tokens[:, None]
    ratio = p[:-1].gather(-1, idx)[:, 0] / d.probs.gather(-1, idx)[:, 0]
    u = torch.rand(d.tokens.shape[0], generator=generator)
    n_acc = int((u < ratio).int().cumprod(0).sum())
    return n_acc, int(sample(p[n_acc], generator))


def _tv(a: torch.Tensor, b: torch.Tensor) -> float:
    return 0.5 * (a - b).abs().sum().item()


def sampling_config(name: str) -> GenerationConfig:
    return GenerationConfig(strategy="self_speculative", exit_layer=1, num_speculations=2, max_new_tokens=3,
                            do_sample=True, ignore_eos=True, **SETTINGS[name])


@pytest.mark.parametrize("name", list(SETTINGS))
def test_acceptance_rule_keeps_the_target_distribution(name):
    emp1, emp2, exact1, exact2 = rule_marginals(self_speculative.accept_sampled, sampling_config(name))
    assert _tv(emp1, exact1) < TV_BOUND and _tv(emp2, exact2) < TV_BOUND


def test_a_wrong_acceptance_rule_fails():
    emp1, emp2, exact1, exact2 = rule_marginals(resample_from_p_on_rejection, sampling_config("temperature"))
    assert max(_tv(emp1, exact1), _tv(emp2, exact2)) > 1.5 * TV_BOUND


@pytest.fixture(scope="module")
def small_vocab() -> LoadedModel:
    """Two layers whose early exit at E=1 is far from the full model: many rejections."""
    model = random_model(tiny_config(vocab_size=VOCAB, n_layers=2, dim=32, n_heads=2, n_kv_heads=1,
                                     intermediate_size=64), seed=3, std=0.5)
    return LoadedModel(model.requires_grad_(False), char_tokenizer(), "small-vocab", None)


def exact_model_marginals(model, cfg: GenerationConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact autoregressive distributions of generated tokens 2 and 3, by enumeration."""
    with torch.no_grad():
        p1 = processed_probs(model(torch.tensor([PROMPT]))[0, -1], cfg)  # [V]
        prefixes = torch.tensor([PROMPT + [a] for a in range(VOCAB)])
        p2_given_1 = processed_probs(model(prefixes)[:, -1], cfg)  # [V, V]
        prefixes = torch.tensor([PROMPT + [a, b] for a in range(VOCAB) for b in range(VOCAB)])
        p3_given_12 = processed_probs(model(prefixes)[:, -1], cfg).view(VOCAB, VOCAB, VOCAB)
    joint12 = p1[:, None] * p2_given_1
    return joint12.sum(0), (joint12[..., None] * p3_given_12).sum((0, 1))


def empirical_marginals(lm, cfg: GenerationConfig, samples: int) -> torch.Tensor:
    """Frequencies of generated tokens 2 and 3 (rows 0 and 1) over seeds 0..samples-1 of generate_ids."""
    counts = torch.zeros(2, VOCAB)
    for seed in range(samples):
        ids = generate_ids(lm, PROMPT, replace(cfg, seed=seed)).token_ids
        counts[0, ids[1]] += 1
        counts[1, ids[2]] += 1
    return counts / samples


def test_decoding_loop_samples_the_target_distribution(small_vocab):
    """End to end: tokens 2 and 3 (decided by the first draft/verify round) of generate_ids."""
    cfg = sampling_config("temperature")
    exact2, exact3 = exact_model_marginals(small_vocab.model, cfg)
    emp2, emp3 = empirical_marginals(small_vocab, cfg, E2E_SAMPLES)
    assert _tv(emp2, exact2) < E2E_BOUND and _tv(emp3, exact3) < E2E_BOUND


def test_seeded_sampling_is_reproducible(tiny):
    cfg = dict(strategy="self_speculative", exit_layer=2, num_speculations=3, max_new_tokens=30,
               do_sample=True, temperature=0.8, top_p=0.9, seed=7, ignore_eos=True)
    a = generate_ids(tiny, [5, 6, 7], GenerationConfig(**cfg)).token_ids
    b = generate_ids(tiny, [5, 6, 7], GenerationConfig(**cfg)).token_ids
    c = generate_ids(tiny, [5, 6, 7], GenerationConfig(**(cfg | {"seed": 8}))).token_ids
    assert a == b and a != c
