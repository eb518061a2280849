"""Loading by directory, GGUF and short name, and clear errors for bad inputs."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from layerskip.errors import LayerSkipError
from layerskip.model import loading
from layerskip.model.loading import default_model_path, load_model, resolve
from layerskip.model.weights import unpermute_rotary


def test_default_model_is_the_embedded_gguf():
    assert resolve(None) == default_model_path() == resolve("smollm2-135m-instruct")
    assert default_model_path().suffix == ".gguf"


def test_unpermute_rotary_inverts_gguf_interleaving():
    n_heads, head_dim, dim = 2, 8, 5
    w = np.arange(n_heads * head_dim * dim, dtype=np.float32).reshape(n_heads * head_dim, dim)
    # GGUF conversion: per head, rows (first half, second half) are interleaved pairwise.
    gguf = w.reshape(n_heads, 2, head_dim // 2, dim).swapaxes(1, 2).reshape(w.shape)
    np.testing.assert_array_equal(unpermute_rotary(gguf, n_heads), w)


def test_sharded_safetensors_directory(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    shard_dir = tmp_path / "sharded"
    shutil.copytree(tiny_dir, shard_dir)
    sd = load_file(shard_dir / "model.safetensors")
    (shard_dir / "model.safetensors").unlink()
    names = sorted(sd)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate([names[:half], names[half:]]):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: sd[n] for n in part}, shard_dir / fname)
        weight_map |= {n: fname for n in part}
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    a, b = load_model(str(shard_dir)).model, load_model(str(tiny_dir)).model
    assert all((a.state_dict()[k] == b.state_dict()[k]).all() for k in a.state_dict())


@pytest.fixture
def broken_dir(tiny_dir, tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(tiny_dir, d)
    return d


def test_truncated_safetensors(broken_dir):
    f = broken_dir / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(LayerSkipError, match="corrupt or truncated"):
        load_model(str(broken_dir))


def test_unsupported_architecture(broken_dir):
    cfg = json.loads((broken_dir / "config.json").read_text())
    cfg |= {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}
    (broken_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LayerSkipError, match="unsupported architecture"):
        load_model(str(broken_dir))


def test_missing_path():
    with pytest.raises(LayerSkipError, match="not found"):
        load_model("/no/such/model")


def test_truncated_gguf(tmp_path):
    """Cut inside the vocabulary's metadata (at 2 MB, past it, the reader parsed 49152 strings first: 4 s)."""
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(default_model_path().read_bytes()[:200_000])
    with pytest.raises(LayerSkipError, match="GGUF"):
        load_model(str(bad))


def test_unknown_hub_id_offline_is_one_line_error(tmp_path):
    """End to end through the CLI, as a user would hit it: offline, a hub id not in the cache."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "layerskip.cli", "generate", "--model", "nobody/no-such-model", "--prompt", "hi"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "nobody/no-such-model" in proc.stderr


def test_gguf_tokenizer_cache_is_written_whole_and_a_damaged_one_converted_again(tmp_path, monkeypatch):
    """Concurrent first loads (pytest-xdist workers) once read a cache directory another was still
    writing: config saved, tokenizer.json not yet. A damaged directory is converted again, and a
    save only ever renames a complete directory into place. HF's conversion (~8 s) is stood in for
    by the session's converted tokenizer; the real one runs in every cold first load."""
    from transformers import AutoTokenizer

    gguf = default_model_path()
    converted = loading.load_tokenizer(gguf)
    read, conversions = AutoTokenizer.from_pretrained, []

    def from_pretrained(path, **kwargs):
        if "gguf_file" in kwargs:
            conversions.append(path)
            return converted
        return read(path, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", from_pretrained)
    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path))
    cache = loading._tokenizer_cache_dir(gguf)
    cache.mkdir(parents=True)
    (cache / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    tok = loading.load_tokenizer(gguf)
    assert len(conversions) == 1 and tok("hello world").input_ids
    assert (cache / "tokenizer.json").is_file()
    loading._save_tokenizer(tok, cache)  # a second writer finds the cache already in place
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name]
    assert loading.load_tokenizer(gguf)("hello world").input_ids == tok("hello world").input_ids
    assert len(conversions) == 1  # read back from the cache, not converted again

