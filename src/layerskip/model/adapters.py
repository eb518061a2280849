"""peft LoRA adapters (HF Llama module names) folded into our fused weights.

A LoRA on a fused matrix is a set of LoRAs on its parts that share A: q_proj is (A, B[:q]),
k_proj (A, B[q:q+kv]), and so on. Merging adds scale * B @ A to each part's rows of the fused
weight, in float32 and before any cast, one weight at a time so the loader can merge as it reads.
Training writes adapters in this layout (training/lora.py); loading and `merge_adapter` read them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from layerskip.errors import LayerSkipError
from layerskip.model.config import ModelConfig

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LAYERSKIP_META = "layerskip.json"  # our extra settings: recommended exit layer, training config

# Our fused module -> its HF parts, in row order.
HF_PARTS = {
    "attention.wqkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attention.wo": ("self_attn.o_proj",),
    "feed_forward.w13": ("mlp.gate_proj", "mlp.up_proj"),
    "feed_forward.w2": ("mlp.down_proj",),
}


def row_sizes(module: str, cfg: ModelConfig) -> list[int]:
    """Rows of each HF part inside our fused `module` (`[-1]`: not fused)."""
    if module == "attention.wqkv":
        q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        return [q, kv, kv]
    if module == "feed_forward.w13":
        return [cfg.intermediate_size] * 2
    return [-1]


@dataclass
class Adapter:
    """A peft LoRA adapter directory read into memory (LoRA weights are small)."""

    path: Path
    config: dict[str, Any]
    tensors: dict[str, Tensor]
    meta: dict[str, Any]  # layerskip.json: recommended exit layer, training config

    @property
    def scale(self) -> float:
        alpha, r = self.config["lora_alpha"], self.config["r"]
        return alpha / r**0.5 if self.config.get("use_rslora") else alpha / r


def read_adapter(path: Path) -> Adapter:
    from safetensors.torch import load_file

    if not (path / ADAPTER_CONFIG).is_file() or not (path / ADAPTER_WEIGHTS).is_file():
        raise LayerSkipError(f"{path} is not a LoRA adapter (needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    config = json.loads((path / ADAPTER_CONFIG).read_text())
    if config.get("peft_type") != "LORA":
        raise LayerSkipError(f"{path}: only LoRA adapters are supported, got {config.get('peft_type')}")
    meta_file = path / LAYERSKIP_META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return Adapter(path, config, load_file(path / ADAPTER_WEIGHTS), meta)


@torch.no_grad()
def merge_weight(adapter: Adapter, name: str, weight: Tensor, cfg: ModelConfig) -> int:
    """Add the adapter's deltas to our weight `name` (e.g. `layers.3.attention.wqkv.weight`) in
    place; returns how many HF parts matched (0 for weights LoRA does not touch)."""
    parts = name.split(".")
    module = ".".join(parts[2:-1])
    if parts[0] != "layers" or parts[-1] != "weight" or module not in HF_PARTS:
        return 0
    hf_parts = HF_PARTS[module]
    blocks = weight.split(row_sizes(module, cfg)) if len(hf_parts) > 1 else [weight]
    merged = 0
    for hf, block in zip(hf_parts, blocks):
        prefix = _find_prefix(adapter.tensors, f"model.layers.{parts[1]}.{hf}")
        if prefix is None:
            continue
        a, b = adapter.tensors[f"{prefix}.lora_A.weight"], adapter.tensors[f"{prefix}.lora_B.weight"]
        block += (adapter.scale * b.float() @ a.float()).to(block)  # block's dtype and device
        merged += 1
    return merged


def require_merged(adapter: Adapter, merged: int) -> None:
    if merged == 0:
        raise LayerSkipError(f"{adapter.path}: no LoRA weights match this model's layers")


def merge_adapter(model: nn.Module, path: Path) -> dict[str, Any]:
    """Fold a peft LoRA adapter into a built model's weights; returns its layerskip meta."""
    adapter = read_adapter(path)
    cfg = model.config
    merged = sum(merge_weight(adapter, name, p, cfg) for name, p in model.named_parameters())
    require_merged(adapter, merged)
    return adapter.meta


def _find_prefix(tensors: dict[str, Tensor], module: str) -> str | None:
    for prefix in (f"base_model.model.{module}", module):
        if f"{prefix}.lora_A.weight" in tensors:
            return prefix
    return None
