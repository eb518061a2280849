"""Optional `torch.compile` (inductor) of the decoding steps.

Decode, draft and verify are all runs of a layer range, so compiling each TransformerBlock covers
all three. Inductor fuses the element-wise work around the matrix products (norm casts, rotary,
SwiGLU, residual adds); the products stay the packed oneDNN kernels (`packing.packed_linear`, an
opaque op). The first calls of each new shape (prefill, one-token decode, a verification of k+1
tokens) compile, which takes minutes for a 30-layer model on two cores: worth it for a server or
a long benchmark, not for one short generation. Measured in docs/performance.md.
"""

from __future__ import annotations

from layerskip.model.llama import Transformer

# Shapes one generation meets: prefill, one token, a verification of k+1 tokens, each first static
# and then dynamic in the token count; the default limit (8) leaves little room. Passed per call,
# because dynamo's global config is per thread (the server decodes in a worker thread).
RECOMPILE_LIMIT = 32


def compile_layers(model: Transformer) -> Transformer:
    """Compile every block in place (nn.Module.compile); outputs equal eager up to float rounding."""
    for layer in model.layers:
        layer.compile(recompile_limit=RECOMPILE_LIMIT)
    return model
