"""Static KV cache: rollback by position, no re-allocation; exit-query cache slots."""

import torch

from layerskip.model.cache import ExitQueryCache
from layerskip.model.llama import positions


def _decode(model, tokens: list[int], start: int) -> torch.Tensor:
    """Logits of each token fed one at a time from position `start`."""
    out = [model(torch.tensor([[t]]), positions(start + i, 1))[0, -1] for i, t in enumerate(tokens)]
    return torch.stack(out)


@torch.no_grad()
def test_rollback_then_regenerate_matches_fresh_run(tiny):
    model = tiny.model
    prompt, first, second = list(range(3, 20)), [30, 31, 32, 33, 34], [40, 41, 42, 43, 44]
    model.clear_caches()  # both runs attend over a cache of the same length (64), as a fresh one would
    model.setup_caches(64)
    model(torch.tensor([prompt]), positions(0, len(prompt)), from_start=True)
    _decode(model, first, len(prompt))  # fills 5 slots that will become stale
    rolled_back = _decode(model, second, len(prompt))  # roll back 5 tokens: restart at the same position

    model.clear_caches()
    model.setup_caches(64)
    model(torch.tensor([prompt]), positions(0, len(prompt)), from_start=True)
    fresh = _decode(model, second, len(prompt))
    torch.testing.assert_close(rolled_back, fresh, rtol=0, atol=1e-6)


@torch.no_grad()
def test_cached_decode_matches_full_forward(tiny):
    model = tiny.model
    ids = list(range(3, 40))
    model.setup_caches(64)
    prefill = model(torch.tensor([ids[:10]]), positions(0, 10))[0]
    steps = _decode(model, ids[10:], 10)
    full = model(torch.tensor([ids]))[0]
    torch.testing.assert_close(torch.cat([prefill, steps]), full, rtol=1e-4, atol=1e-4)


def test_setup_caches_reuses_buffers_when_large_enough(tiny):
    model = tiny.model
    model.clear_caches()
    model.setup_caches(128, exit_query_len=5)
    k_ptr = model.layers[0].attention.kv_cache.k.data_ptr()
    eq_ptr = model.exit_query_cache.h.data_ptr()
    model.setup_caches(64, exit_query_len=3)
    assert model.layers[0].attention.kv_cache.k.data_ptr() == k_ptr
    assert model.exit_query_cache.h.data_ptr() == eq_ptr
    assert model.cache_len == 128


def test_exit_query_cache_write_read():
    cache = ExitQueryCache(1, 4, 3, torch.float32)
    cache.write(0, torch.ones(1, 2, 3))
    cache.write(2, torch.full((1, 1, 3), 2.0))
    assert cache.read(3).tolist() == [[[1.0] * 3, [1.0] * 3, [2.0] * 3]]
