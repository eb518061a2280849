import json
import sys
import types

import pytest

from layerskip.bench.data import BUILTIN, load_dataset
from layerskip.errors import LayerSkipError


@pytest.mark.parametrize("name", list(BUILTIN))
def test_builtin_sets_load_offline(name):
    ds = load_dataset(name)
    assert len(ds.examples) >= 8
    assert all(e.prompt.strip() and e.reference for e in ds.examples)
    assert len({e.id for e in ds.examples}) == len(ds.examples)
    assert ds.metric == BUILTIN[name][1]


def test_num_samples_and_metric_override():
    ds = load_dataset("qa", num_samples=3, metric="rouge")
    assert len(ds.examples) == 3 and ds.metric == "rouge"
    with pytest.raises(LayerSkipError):
        load_dataset("qa", num_samples=0)
    with pytest.raises(LayerSkipError):
        load_dataset("qa", metric="bleu")


def test_local_files_with_custom_fields(tmp_path):
    rows = [{"q": "What is 2+2?", "a": "4"}, {"q": "Capital of Italy?", "a": "Rome"}]
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "set.json").write_text(json.dumps(rows))
    (tmp_path / "set.csv").write_text("q,a\nWhat is 2+2?,4\nCapital of Italy?,Rome\n")
    for path in ("set.jsonl", "set.json", "set.csv"):
        ds = load_dataset(str(tmp_path / path), prompt_field="q", reference_field="a")
        assert [(e.prompt, e.reference) for e in ds.examples] == [(r["q"], r["a"]) for r in rows]
        assert ds.metric == "rouge"
    no_refs = load_dataset(str(jsonl), prompt_field="q", reference_field="missing")
    assert no_refs.metric == "none"


def test_bad_inputs_are_clear(tmp_path):
    with pytest.raises(LayerSkipError, match="neither a file"):
        load_dataset("no-such-set")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\nnot json\n')
    with pytest.raises(LayerSkipError, match="line 2"):
        load_dataset(str(bad))
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"prompt": "x"}\n')
    with pytest.raises(LayerSkipError, match="no field 'text'"):
        load_dataset(str(ok), prompt_field="text")


def test_hf_dataset_unreachable_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(LayerSkipError, match="cannot load HF dataset"):
        load_dataset("gsm8k", num_samples=2)


def test_hf_formats_and_n_shot(monkeypatch):
    rows = [{"question": f"q{i}", "answer": f"work\n#### {i}"} for i in range(6)]
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda *a, **k: rows))
    ds = load_dataset("gsm8k", num_samples=2, n_shot=2)
    assert ds.metric == "exact_match" and len(ds.examples) == 2
    e = ds.examples[0]
    assert e.prompt.count("Question:") == 3 and e.prompt.endswith("Answer:")
    assert e.reference == e.id  # the answer after ####
    shots = {line for line in e.prompt.splitlines() if line.startswith("Question:")}
    assert f"Question: q{e.id}" in shots
