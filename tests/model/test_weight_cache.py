"""The dequantised-GGUF cache, on a tiny Q8_0 GGUF written here: the first load writes it, later
loads read it without dequantising, every path gives the same weights (and the right ones), and
a corrupt cache file is a miss, not an error."""

import json
import os

import pytest
import torch

from layerskip import load_model
from layerskip.model import checkpoint, loading, weight_cache
from layerskip.model.synthetic import random_model
from tests.conftest import tiny_config

from .gguf_files import write_gguf


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """A tiny random model as a llama GGUF: Q8_0 matrices, float32 norms, untied head."""
    import gguf

    model = random_model(tiny_config(), seed=3, std=0.2)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_gguf(path, "llama", model, gguf.GGMLQuantizationType.Q8_0)
    return path, model


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Same tensors, `b`'s cast to `a`'s dtype (exact when b is the float32 load)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name].to(sa[name].dtype)), name


def test_gguf_cache_round_trip_and_corrupt_file(tiny_gguf, tmp_path, monkeypatch):
    path, original = tiny_gguf
    monkeypatch.setattr(loading, "load_tokenizer", lambda p: None)  # the tiny GGUF has no tokenizer
    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path / "cache"))
    assert weight_cache.cached(path) is None
    cold = load_model(str(path)).model
    assert weight_cache.cache_file(path).is_file()
    for name, ref in original.state_dict().items():  # Q8_0: within half a step of each block's scale
        assert (cold.state_dict()[name] - ref).abs().max() <= ref.abs().max() / 200, name

    dequantised = []
    array = checkpoint.GGUFSource.array
    monkeypatch.setattr(checkpoint.GGUFSource, "array", lambda self, n: dequantised.append(n) or array(self, n))
    _equal(load_model(str(path)).model, cold)
    warm_bf16 = load_model(str(path), dtype="bfloat16").model
    assert dequantised == []  # warm loads read the cache only
    assert warm_bf16.tok_embeddings.weight.dtype == torch.bfloat16
    _equal(warm_bf16, cold)

    (tmp_path / "read-only").write_text("")  # a file where the cache directory should be: not writable
    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path / "read-only"))
    _equal(load_model(str(path)).model, cold)  # dequantised while loading instead
    assert dequantised and not weight_cache.cache_file(path).exists()

    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path / "cache"))
    weight_cache.cache_file(path).write_bytes(b"not safetensors")
    assert weight_cache.cached(path) is None


def test_gguf_config_is_parsed_once_then_read_from_the_cache(tiny_gguf, tmp_path, monkeypatch):
    path, original = tiny_gguf
    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path))
    parsed = loading.load_config(path)
    (cached,) = (tmp_path / "configs").iterdir()
    with monkeypatch.context() as mp:
        mp.setattr(checkpoint, "gguf_reader", lambda p: pytest.fail("parsed the GGUF again"))
        assert loading.load_config(path) == parsed
    cached.write_text("{")  # damaged: derived again, and saved whole
    assert loading.load_config(path) == parsed
    assert loading.ModelConfig.from_hf(json.loads(cached.read_text())) == parsed
    assert parsed.n_layers == original.config.n_layers


def test_a_first_load_parses_the_gguf_once_and_keeps_no_reader(tiny_gguf, tmp_path, monkeypatch):
    """gguf-py decodes the whole vocabulary to reach the config or the tensors; a first load
    (nothing cached) takes both from one parse, and drops it after: its memory map holds the file."""
    from gguf import GGUFReader

    path, original = tiny_gguf
    monkeypatch.setattr(loading, "load_tokenizer", lambda p: None)  # the tiny GGUF has no tokenizer
    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path))
    checkpoint.release_gguf_reader()  # an earlier test's load_config kept one
    parses = []
    monkeypatch.setattr("gguf.GGUFReader", lambda p: parses.append(p) or GGUFReader(p))
    loaded = load_model(str(path)).model.state_dict()
    assert {k: v.shape for k, v in loaded.items()} == {k: v.shape for k, v in original.state_dict().items()}
    assert parses == [path]
    assert checkpoint._reader.cache_info().currsize == 0
    checkpoint.gguf_reader(path)
    checkpoint.gguf_reader(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # written again: parsed again
    checkpoint.gguf_reader(path)
    assert len(parses) == 3
    checkpoint.release_gguf_reader()
