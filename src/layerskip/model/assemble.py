"""Build a model from a checkpoint one tensor at a time, holding the weights once.

The model is created on the meta device (no memory). Each of our tensors is then read from the
checkpoint (`checkpoint.TensorSource`), renamed and fused (`weights.Mapping`), merged with a LoRA
adapter in float32 when there is one, cast to the target dtype, moved to the target device and
assigned; a weight-only quantised Linear is quantised as soon as its weight arrives. The peak is
the model as loaded plus the parts of one fused weight: never the checkpoint twice, never a
float32 copy of the model, and on a GPU host memory holds one checkpoint tensor at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from layerskip.errors import LayerSkipError
from layerskip.model.adapters import Adapter, merge_weight, require_merged
from layerskip.model.checkpoint import TensorSource
from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer
from layerskip.model.quantize import quantize_slot
from layerskip.model.weights import Mapping


@dataclass(frozen=True)
class Target:
    """What the loaded weights become: dtype and device, weight-only quantisation, LoRA merge."""

    dtype: torch.dtype
    device: torch.device
    quant: str | None = None  # "int8" / "int4": Linear weights quantised, the rest in `dtype`
    adapter: Adapter | None = None


@torch.no_grad()
def assemble(cfg: ModelConfig, source: TensorSource, mapping: Mapping, target: Target) -> Transformer:
    """The model of `cfg` with every weight read from `source` through `mapping`, in eval mode."""
    with torch.device("meta"):
        model = Transformer(cfg)
    merged = 0
    for name, parts in mapping.parts.items():
        weight = _read(source, mapping, parts, target)
        if target.adapter is not None:
            merged += merge_weight(target.adapter, name, weight, cfg)
        _assign(model, name, weight.to(target.dtype), target.quant)
    if cfg.tie_word_embeddings:  # one tensor for both, as in the checkpoint
        model.output.weight = model.tok_embeddings.weight
        if target.quant:
            quantize_slot(model, "output", target.quant)
    if target.adapter is not None:
        require_merged(target.adapter, merged)
    _require_all_assigned(model)
    return model.eval().requires_grad_(False)


def _read(source: TensorSource, mapping: Mapping, parts: tuple[str, ...], target: Target) -> Tensor:
    """One of our tensors on the target device: float32 when an adapter merges into it, else
    already in the target dtype (each part is cast before the parts are joined)."""
    dtype = torch.float32 if target.adapter is not None else target.dtype
    tensors = [mapping.prepare(p, source.get(p)).to(target.device).to(dtype) for p in parts]
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _assign(model: Transformer, name: str, tensor: Tensor, quant: str | None) -> None:
    module_name, leaf = name.rsplit(".", 1)
    module = model.get_submodule(module_name)
    setattr(module, leaf, nn.Parameter(tensor, requires_grad=False))
    if quant and isinstance(module, nn.Linear):
        quantize_slot(model, module_name, quant)


def _require_all_assigned(model: Transformer) -> None:
    """The mapping must cover every parameter: a meta tensor left over would fail at first use."""
    missing = [name for name, p in model.named_parameters() if p.is_meta]
    if missing:
        raise LayerSkipError(f"checkpoint gave no tensor for {missing[0]!r} (not a Llama model?)")
