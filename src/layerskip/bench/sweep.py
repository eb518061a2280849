"""Sweep self-speculation over a grid of exit layers E and speculations k, each cell measured
against autoregressive on the same prompts in the same interleaved run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from layerskip.bench.data import Dataset
from layerskip.bench.runner import BenchReport, ProgressCallback, run_benchmark
from layerskip.errors import LayerSkipError
from layerskip.generation.config import GenerationConfig, is_speculative
from layerskip.model.loaded import LoadedModel


@dataclass
class SweepResult:
    exit_layers: list[int]
    ks: list[int]
    report: BenchReport

    def rows(self) -> list[dict[str, Any]]:
        """One record per cell (self-speculative arms only)."""
        return [a.row() for a in self.report.arms if is_speculative(a.strategy)]

    def grid(self, column: str) -> np.ndarray:
        """A [len(E), len(k)] array of one column (NaN where missing)."""
        out = np.full((len(self.exit_layers), len(self.ks)), np.nan)
        for row in self.rows():
            value = row[column]
            out[self.exit_layers.index(row["exit_layer"]), self.ks.index(row["num_speculations"])] = (
                np.nan if value is None else value
            )
        return out

    @property
    def best(self) -> dict[str, Any]:
        """The fastest cell."""
        return max(self.rows(), key=lambda r: r["speedup"] or 0.0)


def check_grid(exit_layers: Sequence[int], ks: Sequence[int], n_layers: int) -> None:
    if not exit_layers or not ks:
        raise LayerSkipError("the sweep needs at least one exit layer and one k")
    bad = [e for e in exit_layers if not 1 <= e < n_layers]
    if bad:
        raise LayerSkipError(f"exit layers must be in 1..{n_layers - 1} for this model, got {bad}")
    if any(k < 1 for k in ks):
        raise LayerSkipError(f"k must be >= 1, got {list(ks)}")


def sweep(
    loaded: LoadedModel,
    dataset: Dataset,
    base: GenerationConfig,
    exit_layers: Sequence[int],
    ks: Sequence[int],
    warmup: int = 1,
    on_progress: ProgressCallback | None = None,
) -> SweepResult:
    """Autoregressive plus one self-speculative arm per (E, k), all interleaved prompt by prompt."""
    exit_layers, ks = sorted(set(exit_layers)), sorted(set(ks))
    check_grid(exit_layers, ks, loaded.config.n_layers)
    configs = [replace(base, strategy="autoregressive")]
    configs += [replace(base, strategy="self_speculative", exit_layer=e, num_speculations=k)
                for e in exit_layers for k in ks]
    report = run_benchmark(loaded, dataset, configs, warmup, on_progress=on_progress)
    return SweepResult(exit_layers, ks, report)
