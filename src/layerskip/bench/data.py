"""Prompt sets for measurement: built-in offline sets, local JSONL/JSON/CSV files, and HF datasets
(when reachable) in the prompt formats the LayerSkip paper used.

Every set comes with the quality metric that fits its references: ROUGE for summaries and code,
exact match for short factual answers.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from layerskip.errors import LayerSkipError

METRICS = ("rouge", "exact_match", "none")


@dataclass
class Example:
    id: str
    prompt: str
    reference: str | None = None


@dataclass
class Dataset:
    name: str
    examples: list[Example]
    metric: str = "none"
    stop_strings: list[str] = field(default_factory=list)  # where an answer naturally ends

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise LayerSkipError(f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        if not self.examples:
            raise LayerSkipError(f"dataset {self.name!r} has no examples")


# name -> (file under layerskip/data/datasets, metric, stop strings)
BUILTIN: dict[str, tuple[str, str, list[str]]] = {
    "code": ("code.jsonl", "rouge", ["\ndef ", "\nclass "]),
    "summarization": ("summarization.jsonl", "rouge", ["\n"]),
    "qa": ("qa.jsonl", "exact_match", ["\n"]),
}


def load_dataset(
    spec: str,
    num_samples: int | None = None,
    prompt_field: str = "prompt",
    reference_field: str = "reference",
    metric: str | None = None,
    n_shot: int = 0,
    seed: int = 0,
) -> Dataset:
    """A built-in name, a local .jsonl/.json/.csv file, or a HF dataset name (see HF_FORMATS)."""
    if spec in BUILTIN:
        filename, default_metric, stops = BUILTIN[spec]
        text = resources.files("layerskip").joinpath("data", "datasets", filename).read_text(encoding="utf-8")
        ds = Dataset(spec, _records_to_examples(_parse_jsonl(text, spec), "prompt", "reference"), default_metric, stops)
    elif spec in HF_FORMATS:
        ds = _load_hf(spec, num_samples, n_shot, seed)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            choices = ", ".join([*BUILTIN, *HF_FORMATS])
            raise LayerSkipError(f"dataset {spec!r} is neither a file nor one of: {choices}")
        records = _read_file(path)
        examples = _records_to_examples(records, prompt_field, reference_field)
        has_refs = all(e.reference is not None for e in examples)
        ds = Dataset(path.stem, examples, "rouge" if has_refs else "none")
    if metric is not None:
        ds.metric = metric
        ds.__post_init__()
    if num_samples is not None:
        if num_samples < 1:
            raise LayerSkipError(f"num_samples must be >= 1, got {num_samples}")
        ds.examples = ds.examples[:num_samples]
    return ds


def _parse_jsonl(text: str, where: str) -> list[dict[str, Any]]:
    records = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise LayerSkipError(f"{where} line {i} is not valid JSON: {e}") from e
    return records


def _read_file(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return _parse_jsonl(text, str(path))
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LayerSkipError(f"{path} is not valid JSON: {e}") from e
        if not isinstance(data, list):
            raise LayerSkipError(f"{path} must hold a JSON list of records")
        return data
    if path.suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    raise LayerSkipError(f"{path}: unsupported dataset format {path.suffix!r} (use .jsonl, .json or .csv)")


def _records_to_examples(records: list[dict[str, Any]], prompt_field: str, reference_field: str) -> list[Example]:
    examples = []
    for i, r in enumerate(records):
        if not isinstance(r, dict) or prompt_field not in r:
            raise LayerSkipError(f"record {i} has no field {prompt_field!r} (set --prompt-field)")
        ref = r.get(reference_field)
        examples.append(Example(str(r.get("id", i)), str(r[prompt_field]), None if ref is None else str(ref)))
    return examples


def _summary(article: str, summary: str) -> tuple[str, str]:
    return f"Article: {article}\nSummary:", summary.replace(" .", ".")


def _gsm8k(r: dict[str, Any]) -> tuple[str, str]:
    return f"Question: {r['question']}\nAnswer:", r["answer"].split("####")[-1].strip()


# HF datasets: (hub path, config, split, record -> (prompt, reference), metric, stop strings)
_HFFormat = tuple[str, str | None, str, Callable[[dict[str, Any]], tuple[str, str]], str, list[str]]
HF_FORMATS: dict[str, _HFFormat] = {
    "cnn_dailymail": ("abisee/cnn_dailymail", "3.0.0", "test",
                      lambda r: _summary(r["article"], r["highlights"]), "rouge", ["\n"]),
    "xsum": ("EdinburghNLP/xsum", None, "test", lambda r: _summary(r["document"], r["summary"]), "rouge", ["\n"]),
    "openai_humaneval": ("openai/openai_humaneval", None, "test",
                         lambda r: (r["prompt"], r["canonical_solution"]), "rouge", ["\ndef ", "\nclass ", "\nif "]),
    "gsm8k": ("openai/gsm8k", "main", "test", _gsm8k, "exact_match", ["\n\n", "Question:"]),
}


def _load_hf(name: str, num_samples: int | None, n_shot: int, seed: int) -> Dataset:
    """Load a HF dataset; n-shot examples come from the start of the same split, shuffled by seed."""
    try:
        import datasets
    except ImportError as e:
        raise LayerSkipError(f"dataset {name!r} needs the `datasets` package: pip install datasets") from e
    path, config, split, fmt, metric, stops = HF_FORMATS[name]
    try:
        rows = datasets.load_dataset(path, config, split=split)
    except Exception as e:  # offline, missing from the cache, hub errors of every kind
        raise LayerSkipError(
            f"cannot load HF dataset {path!r} ({type(e).__name__}: not in the local cache, hub unreachable?); "
            f"use a built-in set ({', '.join(BUILTIN)}) or a local file instead"
        ) from e
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    shots = [fmt(rows[i]) for i in order[:n_shot]]
    prefix = "".join(f"{p} {ref}\n\n" for p, ref in shots)
    chosen = order[n_shot : n_shot + num_samples] if num_samples else order[n_shot:]
    examples = []
    for i in chosen:
        prompt, ref = fmt(rows[i])
        examples.append(Example(str(i), prefix + prompt, ref))
    return Dataset(name, examples, metric, stops)
