"""PNG plots (matplotlib, Agg backend: no display needed). Builders return the figure so that
callers and tests can inspect it; `save` writes and closes it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def analysis_figure(records: Sequence[Any], recommended: int | None) -> Figure:
    """Agreement and perplexity per exit layer, and the predicted speedup per E."""
    layers = [r.layer for r in records]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    ax1.plot(layers, [r.agreement for r in records], "o-", color="tab:blue", label="top-1 agreement")
    ax1.set_xlabel("exit layer E")
    ax1.set_ylabel("top-1 agreement with the last layer")
    ax1.set_ylim(0, 1.05)
    ppl = ax1.twinx()
    ppl.semilogy(layers, [r.perplexity for r in records], "s--", color="tab:red", label="perplexity")
    ppl.set_ylabel("perplexity (log scale)")
    ax1.set_title("early exit vs final layer")
    ax1.legend(handles=ax1.lines + ppl.lines, loc="center left")
    spec = [r for r in records if r.predicted_speedup is not None]
    ax2.bar([r.layer for r in spec], [r.predicted_speedup for r in spec], color="tab:green")
    ax2.axhline(1.0, color="black", linewidth=1, linestyle=":")
    if recommended is not None:
        best = next(r for r in spec if r.layer == recommended)
        ax2.annotate(f"E={best.layer}, k={best.best_k}", (best.layer, best.predicted_speedup),
                     ha="center", va="bottom")
    ax2.set_xlabel("exit layer E")
    ax2.set_ylabel("predicted speedup (best k)")
    ax2.set_title("cost model: self-speculative / autoregressive")
    return fig


def grid_figure(exit_layers: Sequence[int], ks: Sequence[int], values: dict[str, np.ndarray],
                best: tuple[int, int]) -> Figure:
    """One heatmap per metric over E (rows) x k (columns); the best cell outlined in each."""
    fig, axes = plt.subplots(1, len(values), figsize=(5.5 * len(values), 4.5), squeeze=False, layout="constrained")
    bi, bj = exit_layers.index(best[0]), ks.index(best[1])
    for ax, (title, grid) in zip(axes[0], values.items()):
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
        fig.colorbar(im, ax=ax)
        mid = np.nanmean([np.nanmin(grid), np.nanmax(grid)])
        for i in range(len(exit_layers)):
            for j in range(len(ks)):
                if not np.isnan(grid[i, j]):
                    colour = "black" if grid[i, j] > mid else "white"  # readable on viridis
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color=colour, fontsize=9)
        ax.add_patch(plt.Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set_yticks(range(len(exit_layers)), [str(e) for e in exit_layers])
        ax.set_xlabel("speculations k")
        ax.set_ylabel("exit layer E")
        ax.set_title(f"{title} (best: E={best[0]}, k={best[1]})")
    return fig
