import json

import pytest

from layerskip.bench.tuned import load_tuned
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
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "hi", "--max-new-tokens", "4",
                 "--strategy", "self_speculative", "--json"]) == 0
    gen = json.loads(capsys.readouterr().out)
    assert (gen["exit_layer"], gen["num_speculations"]) == (tuned.exit_layer, tuned.num_speculations)
    # tuned in float32: a bfloat16 run falls back to the defaults (k=6, E from the model)
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "hi", "--max-new-tokens", "4", "--dtype",
                 "bfloat16", "--strategy", "self_speculative", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_speculations"] == 6
