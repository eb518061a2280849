"""`layerskip tune`: pick E and k for a model and prompt set in bounded time and save them where
`generate`, `bench` and `serve` find them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layerskip.bench.report import format_table, write_json
from layerskip.bench.tune import TuneConfig, tune, verdict
from layerskip.bench.tuned import model_key, save_tuned
from layerskip.commands.common import (
    add_dataset_arguments,
    add_model_arguments,
    dataset_from_args,
    load_for_measurement,
    progress_bar,
)
from layerskip.commands.extras import require_extra
from layerskip.generation.config import GenerationConfig

_DEFAULTS = TuneConfig()


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_dataset_arguments(p, default_samples=4)
    p.add_argument("--time-budget", type=float, default=_DEFAULTS.time_budget_s,
                   help="seconds; measuring stops after the prompt that crosses it")
    p.add_argument("--candidates", type=int, default=_DEFAULTS.num_candidates,
                   help="(E, k) settings measured after the analysis has ranked them all")
    p.add_argument("--max-k", type=int, default=_DEFAULTS.max_k)
    p.add_argument("--max-new-tokens", type=int, default=_DEFAULTS.max_new_tokens)
    p.add_argument("--analysis-tokens", type=int, default=_DEFAULTS.analysis_tokens)
    p.add_argument("--tie-tolerance", type=float, default=_DEFAULTS.tie_tolerance,
                   help="measured speedups this close to the best are a tie, settled by the cost model "
                        "with each candidate's measured acceptance (1.0: choose by that alone)")
    p.add_argument("--output-dir", type=Path, default=None, help="also write tune.json here")


def run(args: argparse.Namespace) -> int:
    require_extra("bench")
    cfg = TuneConfig(args.time_budget, args.candidates, args.max_k, args.max_new_tokens, args.analysis_tokens,
                     args.tie_tolerance)
    dataset = dataset_from_args(args)
    loaded = load_for_measurement(args)
    key = model_key(args.model, args.dtype, args.device, args.perfect_draft_from)
    result = tune(loaded, dataset, GenerationConfig(), cfg, key, progress_bar("tune"))
    print(format_table([vars(c) for c in result.candidates], ["exit_layer", "k", "predicted_speedup"]))
    print()
    print(format_table([a.row() for a in result.measured],
                       ["arm", "decode_tokens_per_s", "speedup", "acceptance_rate", "mean_accepted_length"]))
    print()
    print(verdict(result))
    path = save_tuned(result.chosen)
    print(f"saved E={result.chosen.exit_layer}, k={result.chosen.num_speculations} to {path} "
          f"(used when --exit-layer / --num-speculations are not given)")
    if args.output_dir is not None:
        write_json(args.output_dir / "tune.json", result.to_dict())
        print(f"wrote {args.output_dir}/tune.json", file=sys.stderr)
    return 0
