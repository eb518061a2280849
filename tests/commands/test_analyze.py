import json

import pytest

from layerskip.cli import main

pytestmark = pytest.mark.usefixtures("restore_threads")


def test_analyze_perfect_draft_from_cli(tiny_dir, tmp_path, capsys):
    out = tmp_path / "a"
    rc = main(["analyze", "--model", str(tiny_dir), "--dataset", "qa", "--num-samples", "3", "--max-k", "3",
               "--perfect-draft-from", "2", "--threads", "1", "--output-dir", str(out)])
    assert rc == 0
    assert "agreement" in capsys.readouterr().out
    data = json.loads((out / "analysis.json").read_text())
    records = data["records"]
    assert [r["layer"] for r in records] == [1, 2, 3, 4]
    assert all(r["agreement"] == 1.0 for r in records if r["layer"] >= 2)
    assert data["perfect_draft_from"] == 2 and "layer_s" in data["costs"]
    assert (out / "analysis.png").read_bytes()[:4] == b"\x89PNG"


def test_perfect_draft_from_is_checked(tiny_dir, tmp_path, capsys):
    args = ["analyze", "--model", str(tiny_dir), "--perfect-draft-from", "4", "--output-dir", str(tmp_path)]
    assert main(args) == 2
    assert "--perfect-draft-from must be in 1..3" in capsys.readouterr().err
