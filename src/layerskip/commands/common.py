"""Flags and argparse glue shared by the commands: the model flags, the generation flags (derived
from GenerationConfig's fields), the dataset flags of the measuring commands, and tuned E and k
(for self-speculation without a fixed E: the online controller's starting point)."""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable
from dataclasses import Field, fields
from typing import Any

import torch

from layerskip.bench.data import METRICS, Dataset, load_dataset
from layerskip.bench.tuned import load_tuned
from layerskip.errors import LayerSkipError
from layerskip.generation.config import AUTO, GenerationConfig
from layerskip.model.loaded import LoadedModel
from layerskip.model.loading import DEFAULT_MODEL, DTYPES, load_model
from layerskip.model.quantize import QUANT_MODES
from layerskip.model.synthetic import silence_layers

TUNED = ("exit_layer", "num_speculations")  # unset on the command line: `layerskip tune`'s choice
STRATEGY_FLAGS = tuple(f.name for f in fields(GenerationConfig) if f.metadata.get("group") == "strategy")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default=None,
        help=f"hub id, local HF directory or .gguf file (default: embedded {DEFAULT_MODEL})",
    )
    p.add_argument("--dtype", choices=[*DTYPES, *QUANT_MODES], default="float32",
                   help="weights and activations; int8/int4: weight-only quantised, bfloat16 activations (CPU)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--adapter", default=None, help="a LoRA adapter directory (from `layerskip train`) merged at load")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the layers: ~1.1x faster decoding after 10-60 s of compiling (CPU)")


def load_from_args(args: argparse.Namespace) -> LoadedModel:
    """The model the flags of `add_model_arguments` name."""
    return load_model(args.model, args.dtype, args.device, adapter=args.adapter, compile=args.compile)


def _flag_fields(only: tuple[str, ...] | None) -> list[Field]:
    return [f for f in fields(GenerationConfig) if "help" in f.metadata and (only is None or f.name in only)]


def _add_flag(g: argparse._ArgumentGroup, f: Field, hint: type, default: object) -> None:
    """One GenerationConfig field as a flag: a bool is a switch, a list repeats, else typed."""
    meta = f.metadata
    name = meta.get("flag", "--" + f.name.replace("_", "-"))
    help_text = meta["help"]
    if f.name in TUNED:
        help_text += f" (default: tuned, else {meta.get('default_help', f.default)})"
    options: dict[str, Any] = {"dest": f.name, "help": help_text}
    if hint is bool:
        options["action"] = "store_true"
    elif typing.get_origin(hint) is list:
        options |= {"action": "append", "default": [], "type": typing.get_args(hint)[0]}
    else:
        scalar = meta.get("type") or next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))
        options |= {"type": scalar, "default": default}
    options |= {k: meta[k] for k in ("metavar", "choices") if k in meta}
    g.add_argument(name, **options)


def add_generation_arguments(
    p: argparse.ArgumentParser, default_strategy: str = GenerationConfig.strategy, only: tuple[str, ...] | None = None
) -> None:
    """GenerationConfig's flag fields (or `only` those), under its names, types and defaults;
    E and k default to None so that tuned values can fill them in."""
    g = p.add_argument_group("generation")
    hints = typing.get_type_hints(GenerationConfig)
    for f in _flag_fields(only):
        default = default_strategy if f.name == "strategy" else None if f.name in TUNED else f.default
        _add_flag(g, f, hints[f.name], default)


def tuned_values(args: argparse.Namespace, strategy: str | None = None) -> dict[str, Any]:
    """exit_layer and num_speculations from the flags, unset ones from the tuned file (else defaults).
    Self-speculation without a fixed E chooses it online: the tuned (E, k) is where it starts
    (E None where tune found that nothing beats autoregressive), k at least the tuned one."""
    e, k = args.exit_layer, args.num_speculations
    auto = (strategy or getattr(args, "strategy", None)) == "self_speculative" and e in (None, AUTO)
    tuned = None
    if e is None or k is None or auto:
        tuned = load_tuned(args.model, args.dtype, args.device, getattr(args, "perfect_draft_from", None))
    if auto:
        start = None if tuned is None else (tuned.exit_layer if tuned.beats_autoregressive else None,
                                            tuned.num_speculations)
        k = k if k is not None else max(GenerationConfig.num_speculations, start[1] if start else 0)
        return {"exit_layer": AUTO, "num_speculations": k, "auto_start": start}
    if tuned is not None:
        e = tuned.exit_layer if e is None else e
        k = tuned.num_speculations if k is None else k
    return {"exit_layer": e, "num_speculations": GenerationConfig.num_speculations if k is None else k}


def generation_config(args: argparse.Namespace, **overrides: object) -> GenerationConfig:
    """A validated GenerationConfig from the flags `add_generation_arguments` added, tuned E and k."""
    values = {f.name: getattr(args, f.name) for f in _flag_fields(None) if hasattr(args, f.name)}
    values["chat"] = getattr(args, "chat", False)
    values |= tuned_values(args, overrides.get("strategy"))
    values |= overrides
    return GenerationConfig(**values)


def add_dataset_arguments(p: argparse.ArgumentParser, default_samples: int) -> None:
    """Flags shared by the measuring commands: bench, sweep, analyze and tune."""
    d = p.add_argument_group("dataset")
    d.add_argument("--dataset", default="code",
                   help="built-in set (code, summarization, qa), a .jsonl/.json/.csv file, or a HF dataset "
                        "(cnn_dailymail, xsum, openai_humaneval, gsm8k)")
    d.add_argument("--num-samples", type=int, default=default_samples)
    d.add_argument("--prompt-field", default="prompt", help="field of a local file that holds the prompt")
    d.add_argument("--reference-field", default="reference", help="field of a local file that holds the reference")
    d.add_argument("--metric", choices=METRICS, default=None,
                   help="quality metric (default: the dataset's)")
    d.add_argument("--n-shot", type=int, default=0, help="in-context examples for HF datasets")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 gives steadier timings on a machine shared with other jobs)")
    p.add_argument("--perfect-draft-from", type=int, default=None, metavar="E",
                   help="test/benchmark aid: silence layers >= E after loading, so drafts from E on are perfect")


def dataset_from_args(args: argparse.Namespace) -> Dataset:
    """The dataset the flags name (and --threads applied: every measuring command calls this first)."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return load_dataset(args.dataset, args.num_samples, args.prompt_field, args.reference_field, args.metric,
                        args.n_shot, getattr(args, "seed", None) or 0)


def load_for_measurement(args: argparse.Namespace) -> LoadedModel:
    """Load --model; with --perfect-draft-from E, silence layers >= E (a test and benchmark aid)."""
    loaded = load_from_args(args)
    e = args.perfect_draft_from
    if e is not None:
        if not 1 <= e < loaded.config.n_layers:
            raise LayerSkipError(f"--perfect-draft-from must be in 1..{loaded.config.n_layers - 1}, got {e}")
        silence_layers(loaded.model, e)
    return loaded


def progress_bar(desc: str) -> Callable[[int, int], None]:
    """A tqdm progress callback for the runner (on stderr)."""
    from tqdm import tqdm

    bar = None

    def on_progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return on_progress
