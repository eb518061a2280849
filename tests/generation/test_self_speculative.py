"""Self-speculative decoding: greedy equality, perfect drafts, shared caches, parameter checks."""

import pytest
import torch

from layerskip import GenerationConfig, LayerSkipError, generate, generate_ids
from layerskip.generation.output import ACCEPTED, REJECTED


def _greedy(lm, prompt_ids, strategy="autoregressive", **kw):
    cfg = GenerationConfig(strategy=strategy, **({"max_new_tokens": 48, "ignore_eos": True} | kw))
    return generate_ids(lm, prompt_ids, cfg)


@pytest.mark.parametrize("exit_layer,k", [(1, 1), (1, 8), (2, 3), (3, 1), (3, 8)])
def test_tiny_greedy_equals_autoregressive(tiny, exit_layer, k):
    for seed in range(3):
        prompt = torch.randint(3, 100, (5 + seed,), generator=torch.Generator().manual_seed(seed)).tolist()
        ar = _greedy(tiny, prompt)
        ss = _greedy(tiny, prompt, "self_speculative", exit_layer=exit_layer, num_speculations=k)
        assert ss.token_ids == ar.token_ids
        assert ss.stats.num_verifications > 0


LONG_PROMPT = list(range(5, 25))


@pytest.fixture(scope="module")
def tiny_ar_400(tiny):
    """The autoregressive reference of the long tests, generated once for the four settings."""
    return _greedy(tiny, LONG_PROMPT, max_new_tokens=400)


@pytest.mark.parametrize("exit_layer,k,extra", [(1, 8, {}), (3, 2, {}), (2, 6, {"adaptive_k": True}),
                                                (2, 5, {"draft_confidence_threshold": 0.3})])
def test_tiny_greedy_equals_autoregressive_at_length(tiny, tiny_ar_400, exit_layer, k, extra):
    """Far past the SmolLM2 tests' 32 tokens: 400 new tokens, near the tiny model's 512 context."""
    ss = _greedy(tiny, LONG_PROMPT, "self_speculative", exit_layer=exit_layer, num_speculations=k,
                 max_new_tokens=400, **extra)
    assert len(tiny_ar_400.token_ids) == 400 and ss.token_ids == tiny_ar_400.token_ids


@pytest.mark.parametrize("adaptive", [{"adaptive_k": True}, {"draft_confidence_threshold": 0.3}])
def test_tiny_adaptive_drafting_stays_lossless(tiny, adaptive):
    prompt = list(range(5, 15))
    ar = _greedy(tiny, prompt)
    ss = _greedy(tiny, prompt, "self_speculative", exit_layer=2, num_speculations=6, **adaptive)
    assert ss.token_ids == ar.token_ids


@pytest.mark.parametrize("exit_layer,k", [(2, 1), (2, 4), (3, 7)])
def test_perfect_draft_accepts_everything(tiny_perfect, exit_layer, k):
    rounds = 5
    res = _greedy(tiny_perfect, [5, 6, 7], "self_speculative", exit_layer=exit_layer, num_speculations=k,
                  max_new_tokens=1 + rounds * (k + 1))
    assert res.stats.acceptance_rate == 1.0
    assert res.stats.mean_accepted_length == k + 1
    assert res.stats.num_verifications == rounds


def test_early_layers_run_once_per_token_and_late_layers_once_per_verification(tiny):
    """The exit-query cache means drafted tokens never go through layers 0..E-1 twice."""
    exit_layer, calls = 2, [0] * tiny.config.n_layers
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + 1))
             for i, layer in enumerate(tiny.model.layers)]
    try:
        res = _greedy(tiny, [5, 6, 7], "self_speculative", exit_layer=exit_layer, num_speculations=4)
    finally:
        for h in hooks:
            h.remove()
    s = res.stats
    assert calls[:exit_layer] == [1 + s.num_drafted + s.num_verifications] * exit_layer  # prefill + drafts
    assert calls[exit_layer:] == [1 + s.num_verifications] * (tiny.config.n_layers - exit_layer)


def test_streamed_tokens_reassemble_the_output(tiny):
    seen, rejected = [], []
    cfg = GenerationConfig(strategy="self_speculative", exit_layer=1, num_speculations=4, max_new_tokens=40,
                           ignore_eos=True)

    def on_tokens(ids, kind):
        (rejected if kind == REJECTED else seen).extend(ids)

    res = generate_ids(tiny, [5, 6, 7], cfg, on_tokens)
    assert seen == res.token_ids
    assert len(rejected) == res.stats.num_drafted - res.stats.num_accepted


@pytest.mark.parametrize("kw", [
    {"num_speculations": 0},
    {"exit_layer": 0},
    {"exit_layer": 4},  # == L: nothing left to verify with
    {"draft_confidence_threshold": 1.5},
    {"draft_confidence_threshold": -0.1},
])
def test_bad_parameters_raise_clear_errors(tiny, kw):
    with pytest.raises(LayerSkipError):
        generate(tiny, "hello", GenerationConfig(strategy="self_speculative", **({"exit_layer": 2} | kw)))


# --- the real model ---------------------------------------------------------------------------

PLAIN = [
    "def quicksort(arr):",
    "import os\n\ndef list_python_files(path):",
    "Q: What is 17 + 25?\nA:",
]
CHAT = ["Write a haiku about autumn.", "Explain recursion in one sentence."]
# (prompt, chat, exit layer, k, options, new tokens): E = 1 and E = L-1, k = 1 and k >= 8, adaptive
# k and confidence thresholds, every prompt. On this untrained model most drafts are rejected, so
# self-speculation costs 2-6x autoregressive decoding (mostly the k+1-row verifications): the
# setting that accepts most runs 32 tokens, the others 12 (the tiny model's test runs 400).
CASES = [
    (PLAIN[0], False, 29, 1, {}, 32), (PLAIN[0], False, 28, 9, {"adaptive_k": True}, 12),
    (PLAIN[1], False, 1, 8, {}, 12), (PLAIN[1], False, 8, 6, {"draft_confidence_threshold": 0.3}, 12),
    (PLAIN[2], False, 15, 3, {"adaptive_k": True}, 12),
    (CHAT[0], True, 4, 10, {"draft_confidence_threshold": 0.4}, 12),
    (CHAT[1], True, 20, 4, {"draft_confidence_threshold": 0.3}, 12),
]


@pytest.fixture(scope="module")
def smollm2_ar(smollm2):
    """Greedy autoregressive output per (prompt, chat, length), generated once for the settings sharing it."""
    done = {}

    def ar(prompt: str, chat: bool, max_new_tokens: int):
        key = (prompt, chat, max_new_tokens)
        if key not in done:
            done[key] = generate(smollm2, prompt, GenerationConfig(max_new_tokens=max_new_tokens, chat=chat))
        return done[key]

    return ar


@pytest.mark.parametrize("prompt, chat, exit_layer, k, extra, n", CASES)
def test_smollm2_greedy_equals_autoregressive(smollm2, smollm2_ar, prompt, chat, exit_layer, k, extra, n):
    ar = smollm2_ar(prompt, chat, n)
    ss = generate(smollm2, prompt, GenerationConfig(strategy="self_speculative", exit_layer=exit_layer,
                                                    num_speculations=k, max_new_tokens=n, chat=chat, **extra))
    assert ss.token_ids == ar.token_ids
    assert ss.text == ar.text


def _first_fresh_accepted_draft(lm, prompt: str, cfg: GenerationConfig) -> int:
    """A token that arrives as an accepted draft and does not occur earlier in the output."""
    events = []
    generate(lm, prompt, cfg, lambda ids, kind: events.append((ids, kind)))
    seen = set()
    for ids, kind in events:
        for tok in ids:
            if kind == ACCEPTED and tok not in seen and len(seen) > 2:
                return tok
            if kind != REJECTED:
                seen.add(tok)
    raise AssertionError("no accepted draft to stop at")


def test_smollm2_eos_inside_a_draft(smollm2):
    """Declare as EOS a token that self-speculation commits inside an accepted draft: generation must
    stop right there, at the same token as autoregressive decoding, with the rest of the draft dropped."""
    cfg = dict(strategy="self_speculative", exit_layer=29, num_speculations=4, max_new_tokens=24)
    eos = _first_fresh_accepted_draft(smollm2, PLAIN[1], GenerationConfig(**cfg, ignore_eos=True))
    kinds = []
    res = generate(smollm2, PLAIN[1], GenerationConfig(**cfg, eos_token_ids=[eos]),
                   lambda ids, kind: kinds.append((ids, kind)))
    ar = generate(smollm2, PLAIN[1], GenerationConfig(max_new_tokens=24, eos_token_ids=[eos]))
    assert res.finish_reason == ar.finish_reason == "stop"
    assert res.token_ids == ar.token_ids and res.token_ids[-1] == eos
    assert any(kind == ACCEPTED and ids[-1] == eos for ids, kind in kinds)


def test_smollm2_stop_string_inside_a_draft(smollm2):
    prompt = PLAIN[0]
    stop = ["return"]
    ar = generate(smollm2, prompt, GenerationConfig(max_new_tokens=64, stop_strings=stop))
    ss = generate(smollm2, prompt, GenerationConfig(strategy="self_speculative", exit_layer=29,
                                                    num_speculations=8, max_new_tokens=64, stop_strings=stop))
    assert ar.finish_reason == ss.finish_reason == "stop"
    assert ss.token_ids == ar.token_ids and "return" not in ss.text
