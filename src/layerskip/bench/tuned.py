"""Tuned settings per model: `layerskip tune` writes the chosen E and k to a JSON file keyed by the
resolved model path; `generate`, `bench` and `serve` read it when --exit-layer or
--num-speculations is not given.

Files live in $LAYERSKIP_CACHE/tuned/ (default ~/.cache/layerskip/tuned/).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from layerskip.cache_paths import cache_root
from layerskip.errors import LayerSkipError
from layerskip.generation.config import GenerationConfig
from layerskip.model.loaded import LoadedModel
from layerskip.model.loading import load_model, resolve
from layerskip.model.synthetic import silence_layers


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


def model_key(name: str | None, perfect_draft_from: int | None = None) -> str:
    """The resolved local path of a model (hub ids stay ids: resolving them may download)."""
    is_hub_id = name is not None and name.count("/") == 1 and not Path(name).expanduser().exists()
    key = name if is_hub_id else str(resolve(name).resolve())
    return key if perfect_draft_from is None else f"{key}#perfect-draft-from={perfect_draft_from}"


def tuned_dir() -> Path:
    return cache_root() / "tuned"


def tuned_path(key: str) -> Path:
    return tuned_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def save_tuned(setting: TunedSetting) -> Path:
    path = tuned_path(setting.model_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(setting), indent=2) + "\n")
    return path


def load_tuned(name: str | None, perfect_draft_from: int | None = None) -> TunedSetting | None:
    """The setting `layerskip tune` chose for this model, or None if it was never tuned."""
    key = model_key(name, perfect_draft_from)
    path = tuned_path(key)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        setting = TunedSetting(**{f.name: data[f.name] for f in fields(TunedSetting)})
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise LayerSkipError(f"{path} is not a valid tuned setting ({e}); delete it or rerun `layerskip tune`") from e
    return setting if setting.model_key == key else None


def tuned_values(args: argparse.Namespace) -> dict[str, Any]:
    """exit_layer and num_speculations from the flags, unset ones from the tuned file (else defaults)."""
    e, k = args.exit_layer, args.num_speculations
    if e is None or k is None:
        tuned = load_tuned(args.model, getattr(args, "perfect_draft_from", None))
        if tuned is not None:
            e = tuned.exit_layer if e is None else e
            k = tuned.num_speculations if k is None else k
    return {"exit_layer": e, "num_speculations": GenerationConfig.num_speculations if k is None else k}


def load_for_measurement(args: argparse.Namespace) -> LoadedModel:
    """Load --model; with --perfect-draft-from E, silence layers >= E (a test and benchmark aid)."""
    loaded = load_model(args.model, args.dtype, args.device, adapter=args.adapter, compile=args.compile)
    e = getattr(args, "perfect_draft_from", None)
    if e is not None:
        if not 1 <= e < loaded.config.n_layers:
            raise LayerSkipError(f"--perfect-draft-from must be in 1..{loaded.config.n_layers - 1}, got {e}")
        silence_layers(loaded.model, e)
    return loaded
