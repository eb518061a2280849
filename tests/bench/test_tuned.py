import pytest

from layerskip.bench.tuned import TunedSetting, load_tuned, model_key, save_tuned, tuned_path
from layerskip.errors import LayerSkipError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def setting(key: str, e: int = 3, k: int = 5) -> TunedSetting:
    return TunedSetting(key, e, k, 0.8, 0.1, False, "qa", 16)


def test_round_trip_keyed_by_resolved_path(tiny_dir, cache):
    key = model_key(str(tiny_dir), "float32", "cpu")
    assert key.startswith(str(tiny_dir.resolve()) + "#")
    path = save_tuned(setting(key))
    assert path.parent == cache / "tuned" and path == tuned_path(key)
    assert load_tuned(str(tiny_dir), "float32", "cpu") == setting(key)
    assert load_tuned(str(tiny_dir), "float32", "cpu", perfect_draft_from=2) is None  # another (synthetic) model
    assert model_key("org/model", "float32", "cpu").startswith("org/model#")  # a hub id is never resolved


def test_a_setting_tuned_in_float32_on_cpu_applies_to_nothing_else(tiny_dir):
    save_tuned(setting(model_key(str(tiny_dir), "float32", "cpu")))
    assert load_tuned(str(tiny_dir), "float32", "cpu") is not None
    assert load_tuned(str(tiny_dir), "int4", "cpu") is None
    assert load_tuned(str(tiny_dir), "bfloat16", "cpu") is None
    assert load_tuned(str(tiny_dir), "float32", "cuda") is None
    # the device type is what counts: every CUDA device shares one setting
    assert model_key(str(tiny_dir), "float32", "cuda:1") == model_key(str(tiny_dir), "float32", "cuda")


def test_unknown_device_is_a_clear_error(tiny_dir):
    with pytest.raises(LayerSkipError, match="unknown device 'gpu0'"):
        model_key(str(tiny_dir), "float32", "gpu0")


def test_corrupt_file_is_a_clear_error(tiny_dir):
    path = tuned_path(model_key(str(tiny_dir), "float32", "cpu"))
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(LayerSkipError, match="rerun `layerskip tune`"):
        load_tuned(str(tiny_dir), "float32", "cpu")
