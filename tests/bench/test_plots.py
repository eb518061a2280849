import numpy as np

from layerskip.bench.analysis import LayerRecord
from layerskip.bench.plots import analysis_figure, grid_figure, save

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_analysis_figure_has_labelled_axes(tmp_path):
    records = [LayerRecord(1, 0.2, 900.0, 0.7, 2), LayerRecord(2, 1.0, 50.0, 1.8, 6),
               LayerRecord(3, 1.0, 50.0, None, None)]
    fig = analysis_figure(records, recommended=2)
    labels = [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]
    assert ("exit layer E", "top-1 agreement with the last layer") in labels
    assert ("exit layer E", "predicted speedup (best k)") in labels
    assert any(y == "perplexity (log scale)" for _, y in labels)
    path = save(fig, tmp_path / "a.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_grid_figure_marks_best_cell(tmp_path):
    grid = np.array([[0.5, 0.7], [1.2, np.nan]])
    fig = grid_figure([4, 8], [2, 4], {"speedup": grid, "acceptance rate": grid / 2}, best=(8, 2))
    heatmaps = [ax for ax in fig.axes if ax.get_xlabel()]
    assert len(heatmaps) == 2
    for ax in heatmaps:
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("speculations k", "exit layer E")
        assert "best: E=8, k=2" in ax.get_title()
        (box,) = ax.patches
        assert box.get_xy() == (-0.5, 0.5)  # column k=2, row E=8
    assert save(fig, tmp_path / "g.png").read_bytes()[:8] == PNG_MAGIC
