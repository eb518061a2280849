"""Optional `torch.compile` (inductor) of the decoding steps.

Decode, draft and verify are all runs of a layer range, so compiling each TransformerBlock covers
all three. Inductor fuses the element-wise work around the matrix products (norm casts, rotary,
SwiGLU, residual adds); the products stay the packed oneDNN kernels (`packing.packed_linear`, an
opaque op). The first calls of each new shape (prefill, one-token decode, a verification of k+1
tokens) compile, which takes minutes for a 30-layer model on two cores: worth it for a server or
a long benchmark, not for one short generation. Measured in docs/performance.md.
"""

from __future__ import annotations

import torch

from layerskip.model.llama import Transformer


def compile_layers(model: Transformer) -> Transformer:
    """Compile every block in place (nn.Module.compile); outputs equal eager up to float rounding."""
    # Every block is a distinct module: allow one compiled entry per layer and shape.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 4 * model.n_layers)
    for layer in model.layers:
        layer.compile()
    return model
