"""`layerskip eval`: lm-evaluation-harness tasks on our engine, with any generation strategy."""

from __future__ import annotations

import argparse
from typing import Any

from layerskip.commands.common import STRATEGY_FLAGS, add_generation_arguments, add_model_arguments, generation_config
from layerskip.commands.extras import require_extra
from layerskip.eval.harness import HarnessConfig
from layerskip.model.loading import DEFAULT_MODEL


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_generation_arguments(p, only=STRATEGY_FLAGS)  # how tokens are decoded is each task's choice
    p.epilog = "early_exit also scores log-likelihoods at the exit layer; the other strategies at full depth."
    h = p.add_argument_group("lm-eval (same names as lm-eval's own options)")
    h.add_argument("--tasks", required=True,
                   help="comma-separated task names; layerskip_mc and layerskip_gen are shipped with layerskip")
    h.add_argument("--include_path", default=None, help="directory with more task YAMLs")
    h.add_argument("--limit", type=float, default=None, help="documents per task (a fraction when below 1)")
    h.add_argument("--num_fewshot", type=int, default=None)
    h.add_argument("--batch_size", type=int, default=1, help="sequences per forward pass for log-likelihoods")
    h.add_argument("--output_path", default=None, help="directory for the results JSON (lm-eval's layout)")
    h.add_argument("--log_samples", action="store_true", help="also write every request and response")


def run(args: argparse.Namespace) -> int:
    require_extra("eval")
    generation = generation_config(args)  # validated, unset E and k tuned
    cfg = HarnessConfig(
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
        include_path=args.include_path,
        limit=args.limit,
        num_fewshot=args.num_fewshot,
        batch_size=args.batch_size,
        output_path=args.output_path,
        log_samples=args.log_samples,
    )
    model_args = {
        "pretrained": args.model or DEFAULT_MODEL,
        **{name: getattr(generation, name) for name in STRATEGY_FLAGS},
        "dtype": args.dtype,
        "device": args.device,
        "adapter": args.adapter,
        "compile": args.compile,
    }
    from lm_eval.utils import make_table

    from layerskip.eval.harness import evaluate

    results = evaluate(model_args, cfg)
    print(make_table(results))
    print(summary_line(results["config"]["layerskip"]))
    return 0


def summary_line(info: dict[str, Any]) -> str:
    """Depth used for scoring, and speed and acceptance of the generation tasks."""
    line = f"[{info['strategy']}] scored at layer {info['scoring_exit_layer']}/{info['num_layers']}"
    gen = info.get("generation")
    if gen:
        line += f"; generated {gen['new_tokens']} tokens at {gen['tokens_per_second']:.1f} tok/s"
        line += f" ({gen['decode_tokens_per_second']:.1f} tok/s decode)"
        if "acceptance_rate" in gen:
            line += (
                f", exit layer {info['exit_layer']}, k={info['num_speculations']}, acceptance "
                f"{gen['acceptance_rate']:.1%}, mean accepted length {gen['mean_accepted_length']:.2f}"
            )
    return line
