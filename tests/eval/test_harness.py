"""`layerskip eval` end to end on the embedded SmolLM2 with the shipped tasks, and `python -m
layerskip.eval` (lm-eval's own CLI) on a tiny model."""

import json
import subprocess
import sys

import pytest

import layerskip.eval.lm
from layerskip.cli import main
from layerskip.eval.harness import TASKS_DIR


@pytest.fixture
def loads(monkeypatch, smollm2):
    """Serve the session's SmolLM2 instead of loading it again; record what was asked for."""
    calls = []

    def load(name, dtype, device, adapter=None, compile=False):
        calls.append((name, dtype, device, adapter, compile))
        return smollm2

    monkeypatch.setattr(layerskip.eval.lm, "load_model", load)
    return calls


def test_eval_self_speculative_writes_lm_eval_results_and_speculation_figures(loads, tmp_path, capsys):
    rc = main([
        "eval", "--tasks", "layerskip_mc,layerskip_gen", "--limit", "3", "--batch_size", "4",
        "--strategy", "self_speculative", "--exit-layer", "6", "--num-speculations", "3",
        "--output_path", str(tmp_path), "--log_samples",
    ])
    assert rc == 0
    assert loads == [("smollm2-135m-instruct", "float32", "cpu", None, False)]
    (results_file,) = tmp_path.glob("*/results_*.json")
    results = json.loads(results_file.read_text())
    assert 0 <= results["results"]["layerskip_mc"]["acc,none"] <= 1
    assert 0 <= results["results"]["layerskip_gen"]["exact_match,none"] <= 1
    assert results["n-samples"]["layerskip_mc"]["effective"] == 3
    info = results["config"]["layerskip"]
    assert (info["strategy"], info["exit_layer"], info["num_speculations"]) == ("self_speculative", 6, 3)
    assert info["scoring_exit_layer"] == 30
    assert info["generation"]["requests"] == 3 and 0 <= info["generation"]["acceptance_rate"] <= 1
    for task in ("layerskip_mc", "layerskip_gen"):
        (samples,) = tmp_path.glob(f"*/samples_{task}_*.jsonl")
        assert len(samples.read_text().splitlines()) == 3
    out = capsys.readouterr().out
    assert "layerskip_gen" in out and "acceptance" in out


def test_eval_early_exit_reports_accuracy_at_the_exit(loads, capsys):
    assert main(["eval", "--tasks", "layerskip_mc", "--limit", "3", "--strategy", "early_exit", "--exit-layer", "8",
                 "--batch_size", "8"]) == 0
    out = capsys.readouterr().out
    assert "acc" in out and "[early_exit] scored at layer 8/30" in out


@pytest.mark.parametrize("argv, message", [
    (["--limit", "0"], "limit"),
    (["--log_samples"], "output_path"),
    (["--include_path", "/no/such/dir"], "include_path"),
])
def test_eval_bad_options_fail_before_loading(loads, capsys, argv, message):
    assert main(["eval", "--tasks", "layerskip_mc", *argv]) == 2
    assert message in capsys.readouterr().err and not loads


# `python -m layerskip.eval` in a fresh interpreter, except that lm-eval's task index leaves out
# lm-eval's own ~14,000 task files (parsing them took 12 of this test's 21 s): only --include_path
# is read, as in `layerskip eval`.
RUN_WITHOUT_LM_EVAL_TASKS = (
    "import runpy, sys\n"
    "from lm_eval.tasks import TaskManager\n"
    "init = TaskManager.__init__\n"
    "TaskManager.__init__ = lambda self, *a, **k: init(self, *a, **{**k, 'include_defaults': False})\n"
    "runpy.run_module('layerskip.eval', run_name='__main__', alter_sys=True)\n"
)


def test_lm_eval_cli_runs_the_layerskip_model(tiny_dir, tmp_path):
    """lm-eval's own CLI (through `python -m layerskip.eval`, which registers the model)."""
    args = f"pretrained={tiny_dir},strategy=self_speculative,exit_layer=2,num_speculations=3"
    proc = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_LM_EVAL_TASKS, "run", "--model", "layerskip", "--model_args", args,
         "--tasks", "layerskip_mc", "layerskip_gen", "--include_path", str(TASKS_DIR), "--limit", "2",
         "--device", "cpu", "--output_path", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (results_file,) = tmp_path.glob("*/results_*.json")
    results = json.loads(results_file.read_text())
    assert set(results["results"]) == {"layerskip_mc", "layerskip_gen"}
    assert results["config"]["layerskip"]["generation"]["requests"] == 2
