import csv
import json

import pytest

from layerskip.cli import main

pytestmark = pytest.mark.usefixtures("restore_threads")


def read_csv(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_bench_tiny_writes_well_formed_files(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    strategies = "autoregressive,self_speculative,early_exit"
    rc = main(["bench", "--model", str(tiny_dir), "--dataset", "qa", "--num-samples", "2", "--max-new-tokens", "8",
               "--exit-layer", "2", "--num-speculations", "3", "--strategies", strategies,
               "--check", "--threads", "1", "--output-dir", str(out)])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "self_speculative E=2 k=3" in stdout and "equals autoregressive on all 2 prompts" in stdout
    data = json.loads((out / "bench.json").read_text())
    assert data["dataset"] == "qa" and data["metric"] == "exact_match" and data["check"]["equal"] is True
    summary = read_csv(out / "bench_summary.csv")
    assert [r["arm"] for r in summary] == ["autoregressive", "self_speculative E=2 k=3", "early_exit E=2"]
    assert float(summary[0]["speedup"]) == 1.0 and summary[0]["acceptance_rate"] == ""
    assert 0 <= float(summary[1]["acceptance_rate"]) <= 1 and float(summary[1]["mean_accepted_length"]) >= 1
    assert {"decode_tokens_per_s", "ms_per_token", "exact_match"} <= set(summary[0])
    samples = read_csv(out / "bench_samples.csv")
    assert len(samples) == 6 and {s["example_id"] for s in samples} == {"qa-00", "qa-01"}


def test_bench_errors_are_one_line(tiny_dir, tmp_path, capsys):
    args = ["bench", "--model", str(tiny_dir), "--output-dir", str(tmp_path)]
    assert main([*args, "--strategies", "fast"]) == 2
    assert main([*args, "--dataset", "nope.jsonl"]) == 2
    assert main([*args, "--check", "--sample"]) == 2
    err = capsys.readouterr().err
    assert "unknown fast" in err and "neither a file" in err and "needs greedy" in err
