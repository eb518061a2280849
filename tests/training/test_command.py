"""`layerskip train` and `layerskip merge` through the CLI entry point."""

import json

import torch

from layerskip.cli import main
from layerskip.model.loading import load_model
from layerskip.training.config import config_path
from tests.conftest import tiny_tokenizer_overrides


def test_train_command_with_a_shipped_config_name_and_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    assert config_path("train_tiny.yaml").endswith("configs/train_tiny.yaml")
    code = main(["train", "--config", "train_tiny.yaml", f"run.output_dir={out}", "optim.max_steps=2",
                 "run.progress=false", "run.eval_at_start=false"])
    assert code == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert (out / "final" / "model.safetensors").is_file()


def test_train_command_reports_config_errors_on_one_line(tmp_path, capsys):
    assert main(["train", "--config", "train_tiny.yaml", "optim.max_stepz=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "optim.max_stepz" in err and "\n" not in err


def test_merge_command_folds_the_adapter(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "train_tiny.yaml", f"run.output_dir={out}", "optim.max_steps=2",
                 "run.progress=false", "run.eval_at_start=false", *tiny_tokenizer_overrides(tiny_dir),
                 "lora.enabled=true", "lora.rank=2", "data.max_eval_tokens=256"]) == 0
    adapter = out / "final"
    # A base to merge into: the same from-scratch init, exported by a zero-step full run.
    base = tmp_path / "base"
    assert main(["train", "--config", "train_tiny.yaml", f"run.output_dir={base}", "optim.max_steps=1",
                 "optim.lr=1e-12", "run.progress=false", "run.eval_at_start=false", *tiny_tokenizer_overrides(tiny_dir),
                 "data.max_eval_tokens=256"]) == 0
    merged = tmp_path / "merged"
    assert main(["merge", "--model", str(base / "final"), "--adapter", str(adapter), "--output", str(merged)]) == 0
    a = load_model(str(base / "final"), adapter=adapter)
    b = load_model(str(merged))
    tokens = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(a.model(tokens), b.model(tokens))
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 2
