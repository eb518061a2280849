"""LoRA through peft on our fused layout, saved as a standard peft adapter with HF module names.

We train LoRA on the fused `wqkv` and `w13`. A LoRA on a fused matrix is exactly a set of
LoRAs on its parts that share A: q_proj gets (A, B[:q]), k_proj (A, B[q:q+kv]), and so on. So
the saved adapter targets q/k/v/o/gate/up/down_proj and loads in peft on transformers'
LlamaForCausalLM as it is; `merge_adapter` folds any such adapter into our fused weights.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from layerskip.errors import LayerSkipError
from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer
from layerskip.training.config import LoraSection

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LAYERSKIP_META = "layerskip.json"  # our extra settings: recommended exit layer, training config
SAVE_DTYPE = torch.float16  # halves the adapter (a repository-sized default); LoRA weights are small

# Our fused module -> its HF parts, in row order.
_HF_PARTS = {
    "attention.wqkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attention.wo": ("self_attn.o_proj",),
    "feed_forward.w13": ("mlp.gate_proj", "mlp.up_proj"),
    "feed_forward.w2": ("mlp.down_proj",),
}


def add_lora(model: Transformer, cfg: LoraSection) -> None:
    """Inject LoRA layers in place and make them the only trainable parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    config = LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules)
    )
    inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Run the base model: every LoRA layer bypassed for the duration."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield
    finally:
        for m in layers:
            m.enable_adapters(True)


def _row_sizes(module: str, cfg: ModelConfig) -> list[int]:
    if module == "attention.wqkv":
        q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        return [q, kv, kv]
    if module == "feed_forward.w13":
        return [cfg.intermediate_size] * 2
    return [-1]


def adapter_state_dict(state: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """The LoRA weights of our (full, unsharded) state dict under peft's names for HF Llama."""
    out = {}
    for i in range(cfg.n_layers):
        for ours, parts in _HF_PARTS.items():
            key = f"layers.{i}.{ours}.lora_A.default.weight"
            match = [k for k in state if k == key or k.endswith("." + key)]
            if not match:
                continue
            a = state[match[0]]
            b = state[match[0].replace("lora_A", "lora_B")]
            sizes = _row_sizes(ours, cfg)
            for hf, b_part in zip(parts, b.split(sizes) if len(parts) > 1 else [b]):
                prefix = f"base_model.model.model.layers.{i}.{hf}"
                out[f"{prefix}.lora_A.weight"] = a.to(SAVE_DTYPE, copy=True).contiguous()
                out[f"{prefix}.lora_B.weight"] = b_part.to(SAVE_DTYPE, copy=True).contiguous()
    return out


def save_adapter(
    state: dict[str, Tensor], model_cfg: ModelConfig, cfg: LoraSection, path: Path, base: str, meta: dict[str, Any]
) -> None:
    """Write adapter_config.json + adapter_model.safetensors (peft format) and layerskip.json."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    targets = sorted({hf.split(".")[-1] for ours in cfg.target_modules for hf in _HF_PARTS[_full(ours)]})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": cfg.rank,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    save_file(adapter_state_dict(state, model_cfg), path / ADAPTER_WEIGHTS)
    (path / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (path / LAYERSKIP_META).write_text(json.dumps(meta, indent=2) + "\n")


def _full(short: str) -> str:
    return next(k for k in _HF_PARTS if k.endswith("." + short))


def read_adapter(path: Path) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Any]]:
    """(peft config, weights, layerskip meta) of an adapter directory."""
    from safetensors.torch import load_file

    if not (path / ADAPTER_CONFIG).is_file() or not (path / ADAPTER_WEIGHTS).is_file():
        raise LayerSkipError(f"{path} is not a LoRA adapter (needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    config = json.loads((path / ADAPTER_CONFIG).read_text())
    if config.get("peft_type") != "LORA":
        raise LayerSkipError(f"{path}: only LoRA adapters are supported, got {config.get('peft_type')}")
    meta_file = path / LAYERSKIP_META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return config, load_file(path / ADAPTER_WEIGHTS), meta


@torch.no_grad()
def merge_adapter(model: Transformer, path: Path) -> dict[str, Any]:
    """Fold a peft LoRA adapter (HF Llama names) into the model's weights; returns its meta."""
    config, tensors, meta = read_adapter(path)
    scale = config["lora_alpha"] / config["r"]
    if config.get("use_rslora"):
        scale = config["lora_alpha"] / config["r"] ** 0.5
    merged = 0
    for i, layer in enumerate(model.layers):
        for ours, parts in _HF_PARTS.items():
            weight = layer.get_submodule(ours).weight
            rows = weight.split(_row_sizes(ours, model.config)) if len(parts) > 1 else [weight]
            for hf, block in zip(parts, rows):
                prefix = _find_prefix(tensors, f"model.layers.{i}.{hf}")
                if prefix is None:
                    continue
                a, b = tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"]
                block += (scale * b.float() @ a.float()).to(block.dtype)
                merged += 1
    if merged == 0:
        raise LayerSkipError(f"{path}: no LoRA weights match this model's layers")
    return meta


def _find_prefix(tensors: dict[str, Tensor], module: str) -> str | None:
    for prefix in (f"base_model.model.{module}", module):
        if f"{prefix}.lora_A.weight" in tensors:
            return prefix
    return None
