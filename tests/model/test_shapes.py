"""The memory rule README's table is computed from equals what loading really allocates."""

import pytest

from layerskip.model.loading import load_model
from layerskip.model.shapes import LAYERSKIP_CHECKPOINTS, loaded_bytes


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8", "int4"])
@pytest.mark.parametrize("fixture", ["tiny_dir", "tiny_tied_llama3_dir"])
def test_loaded_bytes_is_what_the_loaded_model_holds(request, fixture, dtype):
    model = load_model(str(request.getfixturevalue(fixture)), dtype=dtype).model
    tensors = {t.data_ptr(): t for t in (*model.parameters(), *model.buffers())}  # a tied tensor once
    assert sum(t.numel() * t.element_size() for t in tensors.values()) == loaded_bytes(model.config, dtype)


def test_published_parameter_counts():
    """Llama 2 7B has 6.74 B parameters, Llama 3 8B 8.03 B, Llama 3.2 1B 1.24 B (tied)."""
    billions = {name: loaded_bytes(cfg, "float32") / 4e9 for name, cfg in LAYERSKIP_CHECKPOINTS.items()}
    assert round(billions["facebook/layerskip-llama2-7B"], 2) == 6.74
    assert round(billions["facebook/layerskip-llama3-8B"], 2) == 8.03
    assert round(billions["facebook/layerskip-llama3.2-1B"], 2) == 1.24
    assert round(billions["facebook/layerskip-llama2-70B"], 1) == 69.0
