"""Optional `torch.compile` of the decoding steps, applied from outside the model.

A decode, draft or verify step has the same shapes at every position (the model attends over its
whole preallocated cache through a mask), so each compiles once per shape and layer range:
`fullgraph=True`, `dynamic=False`. On CUDA the step is captured as a CUDA graph
(`mode="reduce-overhead"`): one launch per step instead of hundreds of small kernels, which is what
decides speed at batch 1. On CPU inductor fuses the element-wise work around the matrix products
(the products stay the packed oneDNN kernels, `packing.packed_linear`, an opaque op). Prefill, a new
length per prompt, stays eager. Compiling takes seconds to minutes on the first calls: worth it for
a server or a long benchmark, not for one short generation. Measured in docs/performance.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_map

# Variants one process meets: a few layer ranges (E may change) times a few verification lengths
# (the last rounds and stopped drafts verify fewer rows). Passed per call, because dynamo's global
# config is per thread (the server decodes in a worker thread).
RECOMPILE_LIMIT = 64


def compile_step(fn: Callable[..., Any], device_type: str, backend: str = "inductor") -> Callable[..., Any]:
    """`fn` compiled whole; on CUDA with inductor, as CUDA graphs whose outputs are copied out."""
    cuda_graphs = device_type == "cuda" and backend == "inductor"
    compiled = torch.compile(
        fn,
        fullgraph=True,
        dynamic=False,
        backend=backend,
        mode="reduce-overhead" if cuda_graphs else None,
        recompile_limit=RECOMPILE_LIMIT,
        isolate_recompiles=True,  # each model's steps count their own variants
    )
    if not cuda_graphs:
        return compiled

    def replay(*args: Any) -> Any:
        # A graph's outputs live in memory the next replay overwrites: start a new step, copy them out.
        torch.compiler.cudagraph_mark_step_begin()
        return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, compiled(*args))

    return replay
