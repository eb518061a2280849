import csv

import pytest

from layerskip.cli import main

pytestmark = pytest.mark.usefixtures("restore_threads")


def test_sweep_cli_csv_and_png(tiny_dir, tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(["sweep", "--model", str(tiny_dir), "--dataset", "qa", "--num-samples", "1", "--max-new-tokens", "6",
               "--exit-layers", "1,2", "--speculations", "1,3", "--warmup", "0", "--threads", "1",
               "--output-dir", str(out)])
    assert rc == 0
    assert "best: E=" in capsys.readouterr().out
    with (out / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["exit_layer"], r["num_speculations"]) for r in rows} == {("1", "1"), ("1", "3"), ("2", "1"), ("2", "3")}
    assert {"speedup", "acceptance_rate", "mean_accepted_length", "decode_tokens_per_s"} <= set(rows[0])
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "sweep.json").is_file()


def test_sweep_rejects_bad_grid(tiny_dir, tmp_path, capsys):
    args = ["sweep", "--model", str(tiny_dir), "--exit-layers", "9", "--output-dir", str(tmp_path)]
    assert main(args) == 2
    assert "exit layers must be in 1..3" in capsys.readouterr().err
