import math

import pytest

from layerskip.bench.data import load_dataset
from layerskip.bench.sweep import sweep
from layerskip.errors import LayerSkipError
from layerskip.generation.config import GenerationConfig


def test_sweep_grid_on_tiny(tiny):
    base = GenerationConfig(max_new_tokens=8)
    result = sweep(tiny, load_dataset("qa", num_samples=1), base, [3, 1], [2, 1], warmup=0)
    assert result.exit_layers == [1, 3] and result.ks == [1, 2]
    rows = result.rows()
    assert {(r["exit_layer"], r["num_speculations"]) for r in rows} == {(1, 1), (1, 2), (3, 1), (3, 2)}
    grid = result.grid("speedup")
    assert grid.shape == (2, 2) and not any(math.isnan(x) for x in grid.flat)
    assert result.best["speedup"] == grid.max()
    assert result.report.arms[0].strategy == "autoregressive"


def test_sweep_checks_the_grid(tiny):
    with pytest.raises(LayerSkipError, match="1..3"):
        sweep(tiny, load_dataset("qa", num_samples=1), GenerationConfig(), [4], [2])
