"""LoRA through peft on our fused layout, saved as a standard peft adapter with HF module names.

We train LoRA on the fused `wqkv` and `w13`. A LoRA on a fused matrix is exactly a set of
LoRAs on its parts that share A: q_proj gets (A, B[:q]), k_proj (A, B[q:q+kv]), and so on. So
the saved adapter targets q/k/v/o/gate/up/down_proj and loads in peft on transformers'
LlamaForCausalLM as it is; `model.adapters.merge_adapter` folds any such adapter into our fused weights.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from layerskip.model.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, HF_PARTS, LAYERSKIP_META, row_sizes
from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer
from layerskip.training.config import LoraSection

SAVE_DTYPE = torch.float16  # halves the adapter (a repository-sized default); LoRA weights are small


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


def adapter_state_dict(state: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """The LoRA weights of our (full, unsharded) state dict under peft's names for HF Llama."""
    out = {}
    for i in range(cfg.n_layers):
        for ours, parts in HF_PARTS.items():
            key = f"layers.{i}.{ours}.lora_A.default.weight"
            match = [k for k in state if k == key or k.endswith("." + key)]
            if not match:
                continue
            a = state[match[0]]
            b = state[match[0].replace("lora_A", "lora_B")]
            sizes = row_sizes(ours, cfg)
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
    targets = sorted({hf.split(".")[-1] for ours in cfg.target_modules for hf in HF_PARTS[_full(ours)]})
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
    return next(k for k in HF_PARTS if k.endswith("." + short))
