"""`layerskip train --config FILE.yaml [key=value ...]`: the trainer behind a YAML config.

Run it under `torchrun --nproc_per_node N -m layerskip.cli train ...` to shard with FSDP.
"""

from __future__ import annotations

import argparse
import json

from layerskip.commands.extras import require_extra
from layerskip.training.config import config_path, load_config, shipped_configs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True,
        help=f"YAML training config: a path, or a shipped one ({', '.join(shipped_configs())})",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. optim.max_steps=50 lora.rank=8")


def run(args: argparse.Namespace) -> int:
    from layerskip.training.trainer import train  # torch and the model: only when training

    config = load_config(config_path(args.config), args.overrides)
    if config.lora.enabled:  # full fine-tuning needs no extra
        require_extra("train")
    result = train(config)
    if not result.main_process:
        return 0
    summary = {str(e): round(v["agreement"], 4) for e, v in result.last_eval.items()}
    print(f"trained {result.steps} steps -> {result.output}")
    if summary:
        print(f"held-out top-1 agreement with the last layer: {json.dumps(summary)}")
    return 0
