import argparse

import pytest

from layerskip.bench.tuned import TunedSetting, load_tuned, model_key, save_tuned, tuned_path, tuned_values
from layerskip.commands.common import add_generation_arguments, add_model_arguments, generation_config
from layerskip.errors import LayerSkipError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def setting(key: str, e: int = 3, k: int = 5) -> TunedSetting:
    return TunedSetting(key, e, k, 0.8, 0.1, False, "qa", 16)


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_model_arguments(p)
    add_generation_arguments(p)
    return p.parse_args(list(argv))


def test_round_trip_keyed_by_resolved_path(tiny_dir, cache):
    key = model_key(str(tiny_dir))
    assert key == str(tiny_dir.resolve())
    path = save_tuned(setting(key))
    assert path.parent == cache / "tuned" and path == tuned_path(key)
    assert load_tuned(str(tiny_dir)) == setting(key)
    assert load_tuned(str(tiny_dir), perfect_draft_from=2) is None  # another (synthetic) model
    assert model_key("org/model") == "org/model"  # a hub id is never resolved (no download)


def test_flags_win_unset_ones_are_tuned(tiny_dir):
    save_tuned(setting(model_key(str(tiny_dir)), e=3, k=5))
    assert tuned_values(parse("--model", str(tiny_dir))) == {"exit_layer": 3, "num_speculations": 5}
    flagged = parse("--model", str(tiny_dir), "--exit-layer", "1")
    assert tuned_values(flagged) == {"exit_layer": 1, "num_speculations": 5}
    cfg = generation_config(parse("--model", str(tiny_dir), "--num-speculations", "2"))
    assert (cfg.exit_layer, cfg.num_speculations) == (3, 2)


def test_untuned_model_keeps_defaults(tiny_dir):
    cfg = generation_config(parse("--model", str(tiny_dir)))
    assert cfg.exit_layer is None and cfg.num_speculations == 6


def test_corrupt_file_is_a_clear_error(tiny_dir):
    path = tuned_path(model_key(str(tiny_dir)))
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(LayerSkipError, match="rerun `layerskip tune`"):
        load_tuned(str(tiny_dir))
