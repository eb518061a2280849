"""The dequantised-GGUF cache: written on first load, read back to the same weights, and a
corrupt cache file is a miss, not an error."""

import torch

from layerskip import load_model
from layerskip.model import weight_cache
from layerskip.model.loading import default_model_path


def test_gguf_cache_round_trip_and_corrupt_file(smollm2, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path))
    path = default_model_path()
    assert weight_cache.load(path) is None
    first = load_model()
    assert weight_cache.cache_file(path).is_file()
    second = load_model()
    for (name, a), b in zip(smollm2.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(first.model.output.weight, second.model.output.weight)
    weight_cache.cache_file(path).write_bytes(b"not safetensors")
    assert weight_cache.load(path) is None
