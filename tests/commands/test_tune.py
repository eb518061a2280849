import json
from dataclasses import replace

import pytest

from layerskip.bench.tuned import load_tuned, save_tuned
from layerskip.cli import main

pytestmark = pytest.mark.usefixtures("restore_threads")


def test_tune_writes_what_generate_picks_up(tiny_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAYERSKIP_CACHE", str(tmp_path / "cache"))
    rc = main(["tune", "--model", str(tiny_dir), "--dataset", "qa", "--num-samples", "1", "--max-new-tokens", "6",
               "--max-k", "3", "--candidates", "2", "--analysis-tokens", "24", "--threads", "1",
               "--output-dir", str(tmp_path / "t")])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "self-speculation" in stdout and "pay" in stdout
    tuned = load_tuned(str(tiny_dir), "float32", "cpu")
    assert tuned is not None and 1 <= tuned.exit_layer <= 3 and 1 <= tuned.num_speculations <= 3
    assert json.loads((tmp_path / "t" / "tune.json").read_text())["chosen"]["exit_layer"] == tuned.exit_layer
    # the tuned (E, k) is where the controller starts (autoregressive when tune found nothing pays;
    # the tiny random model's verdict may go either way, so both are checked)
    for beats in (tuned.beats_autoregressive, not tuned.beats_autoregressive):
        save_tuned(replace(tuned, beats_autoregressive=beats))
        assert main(["generate", "--model", str(tiny_dir), "--prompt", "hi", "--max-new-tokens", "4",
                     "--strategy", "self_speculative", "--json"]) == 0
        first = json.loads(capsys.readouterr().out)["exit_layer_schedule"][0]
        start = (tuned.exit_layer, tuned.num_speculations) if beats else (None, None)
        assert (first["exit_layer"], first["num_speculations"]) == start
    # tuned in float32: a bfloat16 run has no starting point, so its controller first probes autoregressively
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "hi", "--max-new-tokens", "4", "--dtype",
                 "bfloat16", "--strategy", "self_speculative", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exit_layer_schedule"][0]["exit_layer"] is None
