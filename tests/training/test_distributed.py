"""Two processes under torchrun, FSDP over gloo on CPU: trains, checkpoints, resumes the sharded
state, exports a model that loads. One torchrun start runs both trainings (torchrun_train.py)."""

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import torch

from layerskip.model.loading import load_model
from tests.conftest import tiny_tokenizer_overrides

TINY = str(resources.files("layerskip.configs") / "train_tiny.yaml")
WORKER = str(Path(__file__).with_name("torchrun_train.py"))


def _torchrun(out, steps, tokenizer_overrides):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        WORKER, ",".join(map(str, steps)), "--config", TINY,
        f"run.output_dir={out}", "run.progress=false", "run.save_every=2",
        "optim.batch_size=2", *tokenizer_overrides,
        "run.eval_at_start=false", "data.max_eval_tokens=256",
        "layer_dropout.curriculum=none",  # dropout from the first step: every rank joins every layer
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained") == len(steps)  # only the main process reports
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_torchrun_two_processes_fsdp_trains_resumes_and_exports(tiny_dir, tmp_path):
    out = tmp_path / "run"
    # the longer second run resumes over the same directory
    records = _torchrun(out, [2, 4], tiny_tokenizer_overrides(tiny_dir))
    resume = next(i for i, r in enumerate(records) if r.get("event") == "resume")
    first, second = records[:resume], records[resume:]
    assert first[0]["world"] == 2
    losses = [r["loss"] for r in first if "loss" in r]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert second[0]["step"] == 2 and second[0]["checkpoint"].endswith("step_0000002")
    assert [r["step"] for r in second if "loss" in r][-2:] == [3, 4]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_0000004"
    loaded = load_model(str(out / "final"))
    logits = loaded.model(torch.tensor([loaded.tokenizer("def f(x):").input_ids]))
    assert torch.isfinite(logits).all()
