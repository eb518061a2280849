"""Safetensors written one tensor at a time read back with safetensors' own reader."""

import io

import pytest
import torch
from safetensors.torch import load

from layerskip.model.streaming import write_safetensors


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_file_reads_back_exactly(dtype):
    torch.manual_seed(0)
    tensors = {name: torch.randn(shape).to(dtype) for name, shape in [("a", (3, 5)), ("b.w", (7,)), ("c", (2, 2, 2))]}
    out = io.BytesIO()
    write_safetensors(out, {k: tuple(v.shape) for k, v in tensors.items()}, dtype, tensors.__getitem__)
    back = load(out.getvalue())
    assert back.keys() == tensors.keys()
    assert all(torch.equal(back[k], v) for k, v in tensors.items())


def test_a_tensor_of_another_shape_is_refused():
    with pytest.raises(ValueError, match="expected"):
        write_safetensors(io.BytesIO(), {"a": (2, 3)}, torch.float32, lambda name: torch.zeros(3, 2))
