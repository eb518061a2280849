"""Auto-tuning of E and k in bounded time: the per-layer analysis and the cost model rank every
(E, k); the best few are then measured against autoregressive, interleaved prompt by prompt,
until the prompts or the time budget run out."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from layerskip.bench.analysis import Analysis, analyze
from layerskip.bench.data import Dataset
from layerskip.bench.runner import ArmSummary, ProgressCallback, Sample, make_arms, run_arms, summarize
from layerskip.bench.tuned import TunedSetting
from layerskip.errors import LayerSkipError
from layerskip.generation.config import GenerationConfig
from layerskip.generation.costs import LayerCosts, acceptance_from_mean_length, measure_costs
from layerskip.model.loaded import LoadedModel


@dataclass
class TuneConfig:
    time_budget_s: float = 300.0  # measuring stops after the prompt that crosses it
    num_candidates: int = 3  # (E, k) pairs measured, each with a different E
    max_k: int = 6
    max_new_tokens: int = 32
    analysis_tokens: int = 128  # tokens of each text the analysis reads
    tie_tolerance: float = 0.1  # measured speedups this close to the best count as a tie

    def __post_init__(self) -> None:
        if self.time_budget_s <= 0:
            raise LayerSkipError(f"time budget must be positive, got {self.time_budget_s}")
        for name in ("num_candidates", "max_k", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise LayerSkipError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.tie_tolerance <= 1:
            raise LayerSkipError(f"tie tolerance must be in [0, 1], got {self.tie_tolerance}")
        if self.analysis_tokens < 2:
            raise LayerSkipError(f"analysis_tokens must be >= 2, got {self.analysis_tokens}")


@dataclass
class Candidate:
    exit_layer: int
    k: int
    predicted_speedup: float


@dataclass
class TuneResult:
    analysis: Analysis
    candidates: list[Candidate]
    measured: list[ArmSummary]  # autoregressive first, then the candidates
    num_prompts: int  # prompts measured before the budget ran out
    chosen: TunedSetting
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": vars(self.chosen),
            "num_prompts": self.num_prompts,
            "elapsed_s": self.elapsed_s,
            "candidates": [vars(c) for c in self.candidates],
            "measured": [a.row() for a in self.measured],
            "analysis": self.analysis.to_dict(),
        }


def rank_candidates(analysis: Analysis, max_k: int, n: int) -> list[Candidate]:
    """The n (E, k) pairs with the highest predicted speedup, at most one k per E."""
    costs = analysis.costs
    best_per_e = []
    for r in analysis.records[:-1]:
        k = max(range(1, max_k + 1), key=lambda k, r=r: costs.speedup(r.layer, k, r.agreement))
        best_per_e.append(Candidate(r.layer, k, costs.speedup(r.layer, k, r.agreement)))
    return sorted(best_per_e, key=lambda c: c.predicted_speedup, reverse=True)[:n]


def choose(
    candidates: list[Candidate], measured: dict[tuple[int, int], ArmSummary], costs: LayerCosts, tol: float
) -> Candidate:
    """The fastest measured candidate. Speedups within `tol` of the best are a tie (timing noise on a
    shared machine is that large); ties go to the cost model fed with each one's measured acceptance,
    which does not depend on timing."""
    top = max(measured[(c.exit_layer, c.k)].speedup for c in candidates)
    close = [c for c in candidates if measured[(c.exit_layer, c.k)].speedup >= top * (1 - tol)]

    def modelled(c: Candidate) -> float:
        alpha = acceptance_from_mean_length(measured[(c.exit_layer, c.k)].speed.stats.mean_accepted_length, c.k)
        return costs.speedup(c.exit_layer, c.k, alpha)

    return max(close, key=modelled)


def tune(
    loaded: LoadedModel,
    dataset: Dataset,
    base: GenerationConfig,
    cfg: TuneConfig,
    model_key: str,
    on_progress: ProgressCallback | None = None,
    costs: LayerCosts | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TuneResult:
    """Analyse, prune to the best predicted candidates, measure them; returns the chosen setting.
    `costs` (measured here when None) must cover 1..max_k+1 tokens; `clock` keeps the time budget."""
    start = clock()
    costs = costs if costs is not None else measure_costs(loaded.model, cfg.max_k + 1, repeats=3)
    analysis = analyze(loaded, dataset, cfg.analysis_tokens, cfg.max_k, costs)
    candidates = rank_candidates(analysis, cfg.max_k, cfg.num_candidates)
    base = replace(base, max_new_tokens=cfg.max_new_tokens)
    configs = [replace(base, strategy="autoregressive")]
    configs += [replace(base, strategy="self_speculative", exit_layer=c.exit_layer, num_speculations=c.k)
                for c in candidates]
    arms = make_arms(loaded, configs)
    samples: dict[str, list[Sample]] = {a.name: [] for a in arms}
    done = 0
    for i, example in enumerate(dataset.examples):
        one = replace(dataset, examples=[example])
        for name, new in run_arms(loaded, one, arms, warmup=1 if i == 0 else 0).items():
            samples[name] += new
        done += 1
        if on_progress is not None:
            on_progress(done, len(dataset.examples))
        if clock() - start > cfg.time_budget_s:
            break
    measured_dataset = replace(dataset, examples=dataset.examples[:done])
    summaries = summarize(measured_dataset, arms, samples)
    by_cell = {(s.exit_layer, s.num_speculations): s for s in summaries[1:]}
    best = choose(candidates, by_cell, costs, cfg.tie_tolerance)
    cell = by_cell[(best.exit_layer, best.k)]
    chosen = TunedSetting(
        model_key=model_key,
        exit_layer=best.exit_layer,
        num_speculations=best.k,
        speedup=cell.speedup,
        acceptance_rate=cell.speed.stats.acceptance_rate,
        beats_autoregressive=cell.speedup > 1.0,
        dataset=dataset.name,
        max_new_tokens=cfg.max_new_tokens,
    )
    return TuneResult(analysis, candidates, summaries, done, chosen, clock() - start)


def verdict(result: TuneResult) -> str:
    """One plain sentence on whether self-speculation pays, with the numbers."""
    c = result.chosen
    measured = (f"E={c.exit_layer}, k={c.num_speculations}: {c.speedup:.2f}x autoregressive decode speed, "
                f"acceptance {c.acceptance_rate:.0%}, over {result.num_prompts} prompt(s)")
    if c.beats_autoregressive:
        return f"self-speculation pays on this model: {measured}"
    return (f"self-speculation does NOT pay on this model: the best setting measured, {measured}. "
            "Use --strategy autoregressive (a model trained with LayerSkip is needed for a speedup).")
