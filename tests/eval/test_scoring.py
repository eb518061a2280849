"""Batched, right-padded scoring equals scoring each sequence alone, at any exit layer."""

import pytest
import torch

from layerskip.eval.scoring import score_continuations


def _reference(model, context, continuation, exit_layer=None):
    """log p(continuation | context) from one unpadded forward pass."""
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logprobs = model(ids[:, :-1], end_layer=exit_layer).float().log_softmax(-1)[0, len(context) - 1 :]
    target = torch.tensor(continuation)
    return logprobs.gather(-1, target[:, None]).sum().item(), bool((logprobs.argmax(-1) == target).all())


def _requests(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ctx_len, cont_len = torch.randint(1, 30, (2,), generator=g).tolist()
        ids = torch.randint(3, 100, (ctx_len + cont_len % 5 + 1,), generator=g).tolist()
        out.append((ids[:ctx_len], ids[ctx_len:]))
    return out


@pytest.mark.parametrize("exit_layer", [None, 1, 3])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_batched_scores_equal_unbatched_reference(tiny, exit_layer, batch_size):
    requests = _requests()
    scores = score_continuations(tiny.model, requests, exit_layer=exit_layer, batch_size=batch_size)
    for (ctx, cont), s in zip(requests, scores):
        logprob, greedy = _reference(tiny.model, ctx, cont, exit_layer)
        assert s.logprob == pytest.approx(logprob, abs=1e-4)
        assert s.is_greedy == greedy


def test_early_exit_scores_differ_from_full_depth(tiny):
    requests = _requests()
    full = score_continuations(tiny.model, requests)
    early = score_continuations(tiny.model, requests, exit_layer=1)
    assert all(abs(a.logprob - b.logprob) > 1e-3 for a, b in zip(full, early))


def test_shared_input_scores_each_continuation(tiny):
    """Multiple choice with one-token answers: one forward pass, every answer its own score."""
    ctx = [5, 6, 7, 8]
    requests = [(ctx, [t]) for t in range(3, 13)]
    calls = []
    scores = score_continuations(tiny.model, requests, batch_size=4, on_batch=calls.append)
    assert calls == [10]  # one input, ten requests
    for (c, cont), s in zip(requests, scores):
        assert s.logprob == pytest.approx(_reference(tiny.model, c, cont)[0], abs=1e-4)
    assert sum(s.is_greedy for s in scores) <= 1


def test_greedy_continuation_is_flagged(tiny):
    ctx = [5, 6, 7]
    with torch.no_grad():
        nxt = tiny.model(torch.tensor([ctx]))[0, -1].argmax().item()
    scores = score_continuations(tiny.model, [(ctx, [nxt]), (ctx, [nxt + 1 if nxt < 100 else 3])])
    assert [s.is_greedy for s in scores] == [True, False]


def test_long_inputs_are_cut_from_the_left(tiny):
    ctx, cont = list(range(3, 40)), [41, 42, 43]
    cut = score_continuations(tiny.model, [(ctx, cont)], max_length=10)[0]
    kept = (ctx + cont)[-11:]
    assert cut.logprob == pytest.approx(_reference(tiny.model, kept[:-3], cont)[0], abs=1e-4)


def test_empty_request_is_rejected(tiny):
    with pytest.raises(ValueError):
        score_continuations(tiny.model, [([], [5])])
