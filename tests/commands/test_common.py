"""The shared flags: derived from GenerationConfig, filled in from tuned settings."""

import argparse
from dataclasses import fields

import pytest

from layerskip.bench.tuned import TunedSetting, model_key, save_tuned
from layerskip.commands.common import (
    STRATEGY_FLAGS,
    add_dataset_arguments,
    add_generation_arguments,
    add_model_arguments,
    generation_config,
    load_for_measurement,
    tuned_values,
)
from layerskip.errors import LayerSkipError
from layerskip.generation.config import GenerationConfig


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path / "cache"))


def parse(*argv: str, only=None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_model_arguments(p)
    add_generation_arguments(p, only=only)
    return p.parse_args(list(argv))


def tune(tiny_dir, e=3, k=5, dtype="float32"):
    save_tuned(TunedSetting(model_key(str(tiny_dir), dtype, "cpu"), e, k, 0.8, 0.1, False, "qa", 16))


def test_defaults_are_generation_configs():
    """No flag given: the config equals GenerationConfig() (E and k untuned)."""
    assert generation_config(parse()) == GenerationConfig()


def test_every_documented_field_is_a_flag_of_its_type():
    cfg = generation_config(parse(
        "--strategy", "self_speculative", "--max-new-tokens", "7", "--exit-layer", "2", "--num-speculations", "3",
        "--sample", "--temperature", "0.5", "--top-k", "4", "--top-p", "0.9", "--seed", "11", "--stop", "a",
        "--stop", "b", "--ignore-eos", "--draft-threshold", "0.2", "--adaptive-k", "--draft-vocab-size", "50",
        "--draft-vocab-file", "ids.json",
    ))
    assert cfg == GenerationConfig(
        strategy="self_speculative", max_new_tokens=7, exit_layer=2, num_speculations=3, do_sample=True,
        temperature=0.5, top_k=4, top_p=0.9, seed=11, stop_strings=["a", "b"], ignore_eos=True,
        draft_confidence_threshold=0.2, adaptive_k=True, draft_vocab_size=50, draft_vocab_file="ids.json",
    )
    documented = {f.name for f in fields(GenerationConfig) if "help" in f.metadata}
    assert documented == set(vars(parse())) - {"model", "dtype", "device", "adapter", "compile"}


def test_bad_values_are_argparse_errors(capsys):
    with pytest.raises(SystemExit):
        parse("--top-k", "x")
    with pytest.raises(SystemExit):
        parse("--strategy", "fast")
    assert "invalid int value" in capsys.readouterr().err


def test_only_the_strategy_flags():
    args = parse("--strategy", "early_exit", "--exit-layer", "2", only=STRATEGY_FLAGS)
    assert not hasattr(args, "temperature") and not hasattr(args, "max_new_tokens")
    cfg = generation_config(args)
    assert (cfg.strategy, cfg.exit_layer, cfg.max_new_tokens) == ("early_exit", 2, GenerationConfig.max_new_tokens)


def test_flags_win_unset_ones_are_tuned(tiny_dir):
    tune(tiny_dir, e=3, k=5)
    assert tuned_values(parse("--model", str(tiny_dir))) == {"exit_layer": 3, "num_speculations": 5}
    assert tuned_values(parse("--model", str(tiny_dir), "--exit-layer", "1")) == {"exit_layer": 1,
                                                                                  "num_speculations": 5}
    cfg = generation_config(parse("--model", str(tiny_dir), "--num-speculations", "2"))
    assert (cfg.exit_layer, cfg.num_speculations) == (3, 2)


def test_tuned_values_follow_dtype(tiny_dir):
    tune(tiny_dir, e=3, k=5, dtype="int8")
    assert tuned_values(parse("--model", str(tiny_dir))) == {"exit_layer": None, "num_speculations": 6}
    assert tuned_values(parse("--model", str(tiny_dir), "--dtype", "int8")) == {"exit_layer": 3,
                                                                                "num_speculations": 5}


def test_perfect_draft_from_is_checked_against_the_model(tiny_dir):
    p = argparse.ArgumentParser()
    add_model_arguments(p)
    add_dataset_arguments(p, default_samples=1)
    with pytest.raises(LayerSkipError, match=r"must be in 1\.\.3, got 4"):
        load_for_measurement(p.parse_args(["--model", str(tiny_dir), "--perfect-draft-from", "4"]))
