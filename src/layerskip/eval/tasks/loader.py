"""Datasets of the local tasks, for lm-eval's `custom_dataset`: a `data_files` path in a task YAML
would be resolved from the working directory, this finds the JSONL next to the YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets


def _jsonl(name: str) -> datasets.DatasetDict:
    lines = Path(__file__).with_name(name).read_text().splitlines()
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([json.loads(x) for x in lines if x.strip()])})


def multiple_choice(**_: Any) -> datasets.DatasetDict:
    return _jsonl("layerskip_mc.jsonl")


def generation(**_: Any) -> datasets.DatasetDict:
    return _jsonl("layerskip_gen.jsonl")
