"""Sampling: processed distributions, and losslessness of speculative sampling end to end.

The lossless test compares the empirical distribution of generated tokens 2 and 3 under
self-speculation with the exact autoregressive distribution, computed by enumerating every
prefix on a model with a 16-token vocabulary. Token 1 comes from the prefill; tokens 2 and 3
are decided by the acceptance rule of the first draft/verify round.

A deliberately wrong rule — on rejection, resample from p instead of norm(max(p - q, 0)) — is
run as a negative case and must exceed 1.5x the bound (measured with 2000 seeded samples: the
correct rule gives TV 0.03 on token 2, the wrong one 0.18; the bound is 0.08).
"""

import pytest
import torch

from layerskip import GenerationConfig, generate_ids
from layerskip.generation import self_speculative
from layerskip.generation.sampling import processed_probs, sample
from layerskip.model.loaded import LoadedModel
from layerskip.model.synthetic import random_model

from ..conftest import char_tokenizer, tiny_config

VOCAB, PROMPT, SAMPLES, TV_BOUND = 16, [3, 4, 5], 2000, 0.08
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


@pytest.fixture(scope="module")
def small_vocab() -> LoadedModel:
    """Two layers whose early exit at E=1 is far from the full model: many rejections."""
    model = random_model(tiny_config(vocab_size=VOCAB, n_layers=2, dim=32, n_heads=2, n_kv_heads=1,
                                     intermediate_size=64), seed=3, std=0.5)
    return LoadedModel(model.requires_grad_(False), char_tokenizer(), "small-vocab", None)


def exact_marginals(model, cfg: GenerationConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact autoregressive distributions of generated tokens 2 and 3, by enumeration."""
    with torch.no_grad():
        p1 = processed_probs(model(torch.tensor([PROMPT]))[0, -1], cfg)  # [V]
        prefixes = torch.tensor([PROMPT + [a] for a in range(VOCAB)])
        p2_given_1 = processed_probs(model(prefixes)[:, -1], cfg)  # [V, V]
        prefixes = torch.tensor([PROMPT + [a, b] for a in range(VOCAB) for b in range(VOCAB)])
        p3_given_12 = processed_probs(model(prefixes)[:, -1], cfg).view(VOCAB, VOCAB, VOCAB)
    joint12 = p1[:, None] * p2_given_1
    return joint12.sum(0), (joint12[..., None] * p3_given_12).sum((0, 1))


def empirical_marginals(lm, cfg: GenerationConfig) -> tuple[torch.Tensor, torch.Tensor]:
    counts = torch.zeros(2, VOCAB)
    for seed in range(SAMPLES):
        cfg.seed = seed
        ids = generate_ids(lm, PROMPT, cfg).token_ids
        counts[0, ids[1]] += 1
        counts[1, ids[2]] += 1
    return counts[0] / SAMPLES, counts[1] / SAMPLES


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


@pytest.mark.parametrize("name", list(SETTINGS))
def test_speculative_sampling_matches_autoregressive_distribution(small_vocab, name):
    cfg = GenerationConfig(strategy="self_speculative", exit_layer=1, num_speculations=2, max_new_tokens=3,
                           do_sample=True, ignore_eos=True, **SETTINGS[name])
    exact2, exact3 = exact_marginals(small_vocab.model, cfg)
    emp2, emp3 = empirical_marginals(small_vocab, cfg)
    assert _tv(emp2, exact2) < TV_BOUND and _tv(emp3, exact3) < TV_BOUND


def test_a_wrong_acceptance_rule_fails(small_vocab, monkeypatch):
    monkeypatch.setattr(self_speculative, "accept_sampled", resample_from_p_on_rejection)
    cfg = GenerationConfig(strategy="self_speculative", exit_layer=1, num_speculations=2, max_new_tokens=3,
                           do_sample=True, ignore_eos=True, **SETTINGS["temperature"])
    exact2, exact3 = exact_marginals(small_vocab.model, cfg)
    emp2, emp3 = empirical_marginals(small_vocab, cfg)
    assert max(_tv(emp2, exact2), _tv(emp3, exact3)) > 1.5 * TV_BOUND


def test_seeded_sampling_is_reproducible(tiny):
    cfg = dict(strategy="self_speculative", exit_layer=2, num_speculations=3, max_new_tokens=30,
               do_sample=True, temperature=0.8, top_p=0.9, seed=7, ignore_eos=True)
    a = generate_ids(tiny, [5, 6, 7], GenerationConfig(**cfg)).token_ids
    b = generate_ids(tiny, [5, 6, 7], GenerationConfig(**cfg)).token_ids
    c = generate_ids(tiny, [5, 6, 7], GenerationConfig(**(cfg | {"seed": 8}))).token_ids
    assert a == b and a != c
