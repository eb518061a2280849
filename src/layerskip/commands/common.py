"""Flags shared by the commands that load a model and generate, derived from GenerationConfig."""

from __future__ import annotations

import argparse
from dataclasses import fields

from layerskip.bench.tuned import tuned_values
from layerskip.generation.config import STRATEGIES, GenerationConfig
from layerskip.model.loaded import LoadedModel
from layerskip.model.loading import DEFAULT_MODEL, DTYPES, load_model
from layerskip.model.quantize import QUANT_MODES

_DEFAULTS = {f.name: f.default for f in fields(GenerationConfig) if not callable(f.default_factory)}


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


def add_generation_arguments(p: argparse.ArgumentParser, default_strategy: str = "autoregressive") -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--strategy", choices=STRATEGIES, default=default_strategy)
    g.add_argument("--exit-layer", type=int, default=None,
                   help="E: layers 0..E-1 draft or exit (default: tuned, else the model's recommendation, else L/4)")
    g.add_argument("--num-speculations", type=int, default=None,
                   help=f"k: draft tokens per verification (default: tuned, else {_DEFAULTS['num_speculations']})")
    g.add_argument("--max-new-tokens", type=int, default=_DEFAULTS["max_new_tokens"])
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=_DEFAULTS["temperature"])
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stop", action="append", default=[], metavar="STRING", help="stop string (repeatable)")
    g.add_argument("--ignore-eos", action="store_true", help="generate exactly --max-new-tokens tokens")
    g.add_argument("--draft-threshold", type=float, default=None,
                   help="adaptive: stop drafting when the draft's top probability is below this")
    g.add_argument("--adaptive-k", action="store_true", help="adaptive: adjust k from recent acceptance")
    g.add_argument("--draft-vocab-size", type=int, default=None, metavar="N",
                   help="self-speculative: draft over the N most frequent tokens only (output unchanged)")
    g.add_argument("--draft-vocab-file", default=None, metavar="FILE",
                   help="token ids ranked most frequent first (JSON list or one per line); default: id order")


def generation_config(args: argparse.Namespace, **overrides: object) -> GenerationConfig:
    """A validated GenerationConfig from the shared flags."""
    values = dict(
        strategy=args.strategy,
        exit_layer=args.exit_layer,
        num_speculations=args.num_speculations,
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop_strings=args.stop,
        ignore_eos=args.ignore_eos,
        draft_confidence_threshold=args.draft_threshold,
        adaptive_k=args.adaptive_k,
        draft_vocab_size=args.draft_vocab_size,
        draft_vocab_file=args.draft_vocab_file,
        chat=getattr(args, "chat", False),
    )
    values.update(tuned_values(args))  # unset --exit-layer / --num-speculations: `layerskip tune`'s choice
    values.update(overrides)
    return GenerationConfig(**values)
