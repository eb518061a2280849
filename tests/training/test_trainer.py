"""The trainer end to end on tiny models trained from scratch on byte-level Python source."""

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from layerskip.model.loading import load_model
from layerskip.training.config import load_config
from layerskip.training.trainer import train

TINY = str(resources.files("layerskip.configs") / "train_tiny.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _records(out: Path) -> dict[int, dict]:
    """Per-step training records of metrics.jsonl (a resumed run's later lines win)."""
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in lines if "loss" in r}


def test_early_exit_loss_makes_early_layers_agree(tmp_path):
    """Same budget and seed, with and without the early-exit loss (layer dropout off in both)."""
    common = ["optim.max_steps=100", "run.eval_every=0", "run.save_every=0", "layer_dropout.p_max=0",
              "run.progress=false", "data.max_eval_tokens=4096"]
    runs = {}
    for enabled in (True, False):
        cfg = load_config(TINY, [*common, f"early_exit.enabled={enabled}", f"run.output_dir={tmp_path / str(enabled)}"])
        runs[enabled] = train(cfg).last_eval
    with_ee, without = runs[True], runs[False]
    for exit_layer in (1, 2, 3, 4):  # measured: +0.13..0.15 agreement, -0.21..-0.71 loss
        assert with_ee[exit_layer]["agreement"] > without[exit_layer]["agreement"] + 0.07
        assert with_ee[exit_layer]["loss"] < without[exit_layer]["loss"] - 0.15
    assert with_ee[6]["loss"] < without[6]["loss"] + 0.1  # the last layer is not clearly worse


def _tiny_args(out: Path) -> list[str]:
    return [f"run.output_dir={out}", "run.progress=false", "run.eval_every=0", "run.save_every=6", "optim.max_steps=16"]


def _run_killed(out: Path, after_step: int) -> subprocess.CompletedProcess:
    """A training run in its own process, SIGKILLed right after the checkpoint of `after_step`."""
    code = (
        "import os, signal, sys\n"
        "from layerskip.training import checkpoint\n"
        "from layerskip.training.config import load_config\n"
        "from layerskip.training.trainer import train\n"
        f"kill_after = {after_step!r}\n"
        "save = checkpoint.Checkpointer.save\n"
        "def save_then_die(self, step, *a):\n"
        "    save(self, step, *a)\n"
        "    if step == kill_after:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "checkpoint.Checkpointer.save = save_then_die\n"
        "train(load_config(sys.argv[1], sys.argv[2:]))\n"
    )
    return subprocess.run([sys.executable, "-c", code, TINY, *_tiny_args(out)], env=ENV, capture_output=True,
                          text=True, timeout=300)


def test_sigkill_after_checkpoint_then_resume_matches_an_uninterrupted_run(tmp_path):
    """Only the killed run needs a process of its own; the uninterrupted and the resumed runs train here."""
    killed = _run_killed(tmp_path / "resumed", after_step=12)
    assert killed.returncode == -9, killed.stderr
    assert (tmp_path / "resumed" / "checkpoints" / "latest").read_text().strip() == "step_0000012"
    train(load_config(TINY, _tiny_args(tmp_path / "resumed")))
    train(load_config(TINY, _tiny_args(tmp_path / "full")))
    want, got = _records(tmp_path / "full"), _records(tmp_path / "resumed")
    assert [got[s]["loss"] for s in range(13, 17)] == [want[s]["loss"] for s in range(13, 17)]
    assert got[16]["exit_loss"] == want[16]["exit_loss"]


def test_full_finetune_export_loads(tmp_path):
    cfg = load_config(TINY, [f"run.output_dir={tmp_path}", "optim.max_steps=3", "run.progress=false",
                             "model.tokenizer=default", "model.init.vocab_size=49152", "optim.batch_size=2",
                             "run.recommended_exit_layer=2",
                             "run.eval_at_start=false", "data.max_eval_tokens=256"])
    result = train(cfg)
    loaded = load_model(str(result.output))
    assert loaded.config.recommended_exit_layer == 2
    config = json.loads((result.output / "config.json").read_text())
    assert config["layerskip"]["training"]["optim"]["max_steps"] == 3


@pytest.mark.parametrize("distill", ["self", "base"])
def test_lora_distillation_run_writes_an_adapter(tmp_path, distill):
    cfg = load_config(TINY, [f"run.output_dir={tmp_path}", "optim.max_steps=3", "run.progress=false",
                             "lora.enabled=true", "early_exit.layers=[2]", "early_exit.distill_weight=0.5",
                             f"early_exit.teacher={distill}", "run.precision=bf16"])
    result = train(cfg)
    assert (result.output / "adapter_model.safetensors").is_file()
    meta = json.loads((result.output / "layerskip.json").read_text())
    assert meta["training"]["early_exit"]["teacher"] == distill
