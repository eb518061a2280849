"""`layerskip merge --adapter DIR --output DIR [--model BASE]`: fold a LoRA adapter into its base
and write a HF model directory that `layerskip generate` and transformers load directly."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", required=True, help="peft LoRA adapter directory (from `layerskip train`)")
    parser.add_argument("--output", required=True, help="directory for the merged model")
    parser.add_argument("--model", default=None, help="base model (default: the embedded SmolLM2-135M-Instruct)")


def run(args: argparse.Namespace) -> int:
    from layerskip.model.loading import load_model
    from layerskip.model.saving import save_pretrained

    loaded = load_model(args.model, adapter=args.adapter)
    save_pretrained(loaded.model, Path(args.output), loaded.tokenizer)
    print(f"merged {args.adapter} into {loaded.name} -> {args.output}")
    return 0
