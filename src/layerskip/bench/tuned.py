"""Tuned settings per model: `layerskip tune` writes the chosen E and k to a JSON file keyed by the
resolved model path, the dtype and the device type; `generate`, `bench`, `serve` and `eval` read it
when --exit-layer or --num-speculations is not given.

Files live in $LAYERSKIP_CACHE/tuned/ (default ~/.cache/layerskip/tuned/).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from layerskip.cache_paths import cache_root, write_text_whole
from layerskip.errors import LayerSkipError
from layerskip.model.loading import resolve


@dataclass
class TunedSetting:
    model_key: str
    exit_layer: int
    num_speculations: int
    speedup: float  # measured self-speculative decode tokens/s over autoregressive
    acceptance_rate: float
    beats_autoregressive: bool
    dataset: str
    max_new_tokens: int


def model_key(name: str | None, dtype: str, device: str, perfect_draft_from: int | None = None) -> str:
    """The resolved local path of a model (hub ids stay ids: resolving them may download), with the
    dtype and device type: an E and k tuned in float32 on a CPU says nothing of int4 or CUDA."""
    is_hub_id = name is not None and name.count("/") == 1 and not Path(name).expanduser().exists()
    key = name if is_hub_id else str(resolve(name).resolve())
    key += f"#dtype={dtype}#device={_device_type(device)}"
    return key if perfect_draft_from is None else f"{key}#perfect-draft-from={perfect_draft_from}"


def _device_type(device: str) -> str:
    """cuda:1 and cuda share a setting; an unknown device is the user's error."""
    try:
        return torch.device(device).type
    except RuntimeError as e:
        raise LayerSkipError(f"unknown device {device!r} (e.g. cpu, cuda, cuda:1)") from e


def tuned_dir() -> Path:
    return cache_root() / "tuned"


def tuned_path(key: str) -> Path:
    return tuned_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def save_tuned(setting: TunedSetting) -> Path:
    path = tuned_path(setting.model_key)
    write_text_whole(path, json.dumps(asdict(setting), indent=2) + "\n")
    return path


def load_tuned(
    name: str | None, dtype: str, device: str, perfect_draft_from: int | None = None
) -> TunedSetting | None:
    """The setting `layerskip tune` chose for this model, dtype and device, or None if never tuned."""
    key = model_key(name, dtype, device, perfect_draft_from)
    path = tuned_path(key)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        setting = TunedSetting(**{f.name: data[f.name] for f in fields(TunedSetting)})
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise LayerSkipError(f"{path} is not a valid tuned setting ({e}); delete it or rerun `layerskip tune`") from e
    return setting if setting.model_key == key else None
