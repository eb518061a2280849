"""Quality metrics of a set of answers against their references."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures (rouge-score, with stemming), in [0, 1]."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)
        for key in ROUGE_TYPES:
            totals[key] += scores[key].fmeasure
    n = max(len(predictions), 1)
    return {key: total / n for key, total in totals.items()}


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the SQuAD normalisation)."""
    text = _PUNCT.sub(" ", text.lower())
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def exact_match(prediction: str, reference: str) -> bool:
    """The answer's first non-empty line equals the reference after normalisation; for a numeric
    reference, the first number in that line equals it."""
    lines = [line for line in prediction.strip().splitlines() if line.strip()]
    answer = lines[0] if lines else ""
    ref = reference.strip()
    if _NUMBER.fullmatch(ref):
        found = _NUMBER.search(answer)
        return found is not None and found.group().replace(",", "") == ref.replace(",", "")
    return normalize_answer(answer) == normalize_answer(ref)


def quality(metric: str, predictions: Sequence[str], references: Sequence[str | None]) -> dict[str, float]:
    """The dataset's quality metric(s); empty when it has none or references are missing."""
    if metric == "none" or any(r is None for r in references):
        return {}
    if metric == "rouge":
        return rouge(predictions, references)
    hits = [exact_match(p, r) for p, r in zip(predictions, references, strict=True)]
    return {"exact_match": sum(hits) / max(len(hits), 1)}
