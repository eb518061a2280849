"""Quality and speed metrics over a set of generations."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from layerskip.generation.output import GenerationResult, SpeculationStats

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


@dataclass
class SpeedSummary:
    """Totals over many generations: rates are ratios of sums, so long answers weigh more."""

    num_generations: int
    new_tokens: int
    decode_tokens: int  # tokens after each answer's first (prefill excluded)
    decode_time_s: float
    total_time_s: float
    num_drafted: int
    num_accepted: int
    num_verifications: int

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_time_s if self.decode_time_s > 0 else 0.0

    @property
    def ms_per_token(self) -> float:
        return 1000 * self.decode_time_s / self.decode_tokens if self.decode_tokens else 0.0

    @property
    def total_tokens_per_s(self) -> float:
        """New tokens over wall time, prefill included."""
        return self.new_tokens / self.total_time_s if self.total_time_s > 0 else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self._speculation().acceptance_rate

    @property
    def mean_accepted_length(self) -> float:
        """Tokens per verification, the verifier's own token included."""
        return self._speculation().mean_accepted_length

    def _speculation(self) -> SpeculationStats:
        """The counts as SpeculationStats, which owns the formulas."""
        return SpeculationStats(self.num_drafted, self.num_accepted, self.num_verifications)


def summarize_speed(results: Sequence[GenerationResult]) -> SpeedSummary:
    return SpeedSummary(
        num_generations=len(results),
        new_tokens=sum(r.num_new_tokens for r in results),
        decode_tokens=sum(max(r.num_new_tokens - 1, 0) for r in results),
        decode_time_s=sum(r.decode_time_s for r in results),
        total_time_s=sum(r.total_time_s for r in results),
        num_drafted=sum(r.stats.num_drafted for r in results),
        num_accepted=sum(r.stats.num_accepted for r in results),
        num_verifications=sum(r.stats.num_verifications for r in results),
    )
