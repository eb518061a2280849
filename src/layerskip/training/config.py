"""Training configuration: nested dataclasses read from YAML with strict keys.

Every default lives here; `layerskip train` derives nothing from file names. A misspelt key is
an error rather than a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from layerskip.errors import LayerSkipError


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise LayerSkipError(f"training config: {message}")


@dataclass
class ModelSection:
    """Which model to train: a name/path for `load_model`, or a fresh one built from `init`."""

    name: str | None = None  # None: the embedded default SmolLM2-135M-Instruct
    init: dict[str, Any] | None = None  # ModelConfig fields: train from scratch
    tokenizer: str | None = None  # "bytes", or a model whose tokenizer to use (default: `name`)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _check(self.name is None or self.init is None, "model.name and model.init are exclusive")
        _check(self.dtype in ("float32", "bfloat16"), f"model.dtype must be float32 or bfloat16, got {self.dtype}")


@dataclass
class LoraSection:
    enabled: bool = False
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["wqkv", "wo", "w13", "w2"])

    def __post_init__(self) -> None:
        _check(self.rank > 0, f"lora.rank must be positive, got {self.rank}")
        allowed = {"wqkv", "wo", "w13", "w2"}
        _check(set(self.target_modules) <= allowed, f"lora.target_modules must be among {sorted(allowed)}")


@dataclass
class LayerDropoutSection:
    """p_l,t = S(t) * D(l) * p_max (paper §4.1)."""

    p_max: float = 0.0
    scale: str = "exp"  # D(l): exp | linear | uniform
    curriculum: str = "none"  # S(t): none (continual/fine-tuning) | exp (from scratch)

    def __post_init__(self) -> None:
        _check(0.0 <= self.p_max < 1.0, f"layer_dropout.p_max must be in [0, 1), got {self.p_max}")
        _check(self.scale in ("exp", "linear", "uniform"), f"layer_dropout.scale: unknown {self.scale!r}")
        _check(self.curriculum in ("none", "exp"), f"layer_dropout.curriculum: unknown {self.curriculum!r}")


@dataclass
class EarlyExitSection:
    """Early-exit loss over exits through the shared norm + head (paper §4.2)."""

    enabled: bool = False
    scale: str = "paper"  # per-layer weights e(l): paper | linear | uniform
    e_scale: float = 1.0
    curriculum: str = "none"  # none | rotational | gradual
    rotation: int = 4  # R of the rotational curriculum
    layers: list[int] | None = None  # explicit exits (layer counts 1..L-1); None: all
    distill_weight: float = 0.0  # share of the exit loss that is KL to the teacher's last layer
    teacher: str = "self"  # self: own last layer (detached) | base: the model without its LoRA
    temperature: float = 1.0
    chunk_tokens: int = 1024  # cross-entropy chunk: bounds the logits held at once

    def __post_init__(self) -> None:
        _check(self.scale in ("paper", "linear", "uniform"), f"early_exit.scale: unknown {self.scale!r}")
        _check(self.e_scale >= 0, "early_exit.e_scale must be non-negative")
        curricula = ("none", "rotational", "gradual")
        _check(self.curriculum in curricula, f"early_exit.curriculum: unknown {self.curriculum!r}")
        _check(self.rotation >= 1, "early_exit.rotation must be at least 1")
        _check(0.0 <= self.distill_weight <= 1.0, "early_exit.distill_weight must be in [0, 1]")
        _check(self.teacher in ("self", "base"), f"early_exit.teacher: unknown {self.teacher!r}")
        _check(self.temperature > 0, "early_exit.temperature must be positive")
        _check(self.chunk_tokens > 0, "early_exit.chunk_tokens must be positive")
        _check(self.layers is None or len(self.layers) > 0, "early_exit.layers must not be empty")


@dataclass
class DataSection:
    """Local text/JSONL files (globs) or a HF dataset; `eval` is held out from training."""

    train: list[str] = field(default_factory=list)
    eval: list[str] = field(default_factory=list)
    format: str = "text"  # text: packed files | jsonl: {"text"} packed or {"prompt","response"} | hf
    hf_dataset: str | None = None  # with format hf: "name" or "name:config"
    hf_split: str = "train"
    hf_eval_split: str | None = None
    text_field: str = "text"
    seq_len: int = 256
    max_eval_tokens: int = 4096

    def __post_init__(self) -> None:
        _check(self.format in ("text", "jsonl", "hf"), f"data.format: unknown {self.format!r}")
        _check(self.format != "hf" or bool(self.hf_dataset), "data.format hf needs data.hf_dataset")
        _check(self.seq_len >= 2, "data.seq_len must be at least 2")


@dataclass
class OptimSection:
    lr: float = 2e-5
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 0
    max_steps: int = 100
    batch_size: int = 4  # sequences per micro-batch per process
    grad_accum: int = 1
    clip_grad: float = 1.0  # 0 disables

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr must be positive")
        _check(self.max_steps > 0, "optim.max_steps must be positive")
        _check(self.warmup_steps >= 0, "optim.warmup_steps must be non-negative")
        _check(self.batch_size > 0 and self.grad_accum > 0, "optim.batch_size/grad_accum must be positive")
        _check(len(self.betas) == 2, "optim.betas must have two values")


@dataclass
class RunSection:
    output_dir: str = "runs/train"
    seed: int = 0
    precision: str = "float32"  # float32 | bf16 (autocast)
    threads: int = 0  # torch intra-op threads; 0 leaves the default
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    eval_at_start: bool = True  # the untrained model's numbers, for before/after
    eval_layers: list[int] | None = None  # exits to evaluate; None: all
    save_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2
    resume: bool = True  # continue from the latest checkpoint in output_dir
    recommended_exit_layer: int | None = None  # written to the saved config.json
    progress: bool = True

    def __post_init__(self) -> None:
        _check(self.precision in ("float32", "bf16"), f"run.precision: unknown {self.precision!r}")
        _check(self.keep_checkpoints >= 1, "run.keep_checkpoints must be at least 1")
        _check(self.log_every >= 1, f"run.log_every must be at least 1, got {self.log_every}")
        for name in ("eval_every", "save_every"):
            value = getattr(self, name)
            _check(value >= 0, f"run.{name} must be non-negative (0: only at the end), got {value}")
        _check(self.threads >= 0, f"run.threads must be non-negative (0: the default), got {self.threads}")


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection)
    layer_dropout: LayerDropoutSection = field(default_factory=LayerDropoutSection)
    early_exit: EarlyExitSection = field(default_factory=EarlyExitSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)

    def __post_init__(self) -> None:
        _check(self.data.format == "hf" or bool(self.data.train), "data.train lists no files")
        teacher_base = self.early_exit.enabled and self.early_exit.distill_weight > 0
        teacher_base = teacher_base and self.early_exit.teacher == "base"
        _check(not teacher_base or self.lora.enabled, "early_exit.teacher base needs lora.enabled")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def from_dict(cls: type, raw: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from a dict, rejecting unknown keys with their dotted path."""
    if not isinstance(raw, dict):
        raise LayerSkipError(f"training config: {where or 'top level'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        keys = ", ".join(f"{where}{k}" for k in unknown)
        raise LayerSkipError(f"training config: unknown key(s) {keys}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in raw.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value or {}, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{where}{key}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise LayerSkipError(f"training config: {where or 'top level'}: {e}") from e


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check a YAML scalar/list against a field's type; ints are accepted where floats are."""
    args = typing.get_args(hint)
    if value is None:
        _check(type(None) in args, f"{key} may not be null")
        return None
    base = [a for a in args if a is not type(None)] if args and typing.get_origin(hint) is not list else [hint]
    for t in base:
        origin = typing.get_origin(t)
        if origin is list:
            _check(isinstance(value, list), f"{key} must be a list, got {value!r}")
            (item,) = typing.get_args(t)
            return [_coerce(v, item, key) for v in value]
        if origin is dict and isinstance(value, dict):
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is float and isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t in (str, bool) and isinstance(value, t):
            return value
    raise LayerSkipError(f"training config: {key} has the wrong type: {value!r} (expected {hint})")


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one `a.b.c=value` override (value parsed as YAML) to the raw config dict."""
    if "=" not in override:
        raise LayerSkipError(f"override {override!r} is not of the form key=value")
    path, value = override.split("=", 1)
    keys = path.strip().split(".")
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise LayerSkipError(f"override {override!r}: {k} is not a section")
    node[keys[-1]] = yaml.safe_load(value)


def shipped_configs() -> list[str]:
    """File names of the training configs that ship with the package."""
    return sorted(p.name for p in resources.files("layerskip.configs").iterdir() if p.name.startswith("train_"))


def config_path(name: str) -> str:
    """A path as given, or the shipped config of that name."""
    if Path(name).exists() or name not in shipped_configs():
        return name
    return str(resources.files("layerskip.configs") / name)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML training config (or start empty), apply overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError as e:
            raise LayerSkipError(f"training config not found: {path}") from e
        except yaml.YAMLError as e:
            raise LayerSkipError(f"training config {path} is not valid YAML: {e}") from e
    for o in overrides:
        apply_override(raw, o)
    return from_dict(TrainConfig, raw)
