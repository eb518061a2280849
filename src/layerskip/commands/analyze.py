"""`layerskip analyze`: per-layer early-exit agreement and perplexity, the predicted speedup per E,
and the recommended E; a table, a PNG and a JSON file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layerskip.bench.analysis import analyze
from layerskip.bench.report import format_table, write_json
from layerskip.commands.common import (
    add_dataset_arguments,
    add_model_arguments,
    dataset_from_args,
    load_for_measurement,
)
from layerskip.commands.extras import require_extra


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_dataset_arguments(p, default_samples=8)
    p.add_argument("--max-tokens", type=int, default=256, help="tokens of each text to read")
    p.add_argument("--max-k", type=int, default=8, help="largest k the speedup estimate considers")
    p.add_argument("--output-dir", type=Path, required=True)


def run(args: argparse.Namespace) -> int:
    require_extra("bench")
    from layerskip.bench.plots import analysis_figure, save

    dataset = dataset_from_args(args)
    loaded = load_for_measurement(args)
    result = analyze(loaded, dataset, args.max_tokens, args.max_k)
    rows = [vars(r) for r in result.records]
    print(format_table(rows, ["layer", "agreement", "perplexity", "predicted_speedup", "best_k"]))
    c = result.costs
    print(f"\n{result.num_tokens} tokens; one layer {c.layer_s[0] * 1e3:.2f} ms, head {c.head_s[0] * 1e3:.2f} ms "
          f"per token; autoregressive {1 / c.autoregressive_token_s():.1f} tok/s predicted", end="")
    bound = c.autoregressive_bound_tokens_per_s()
    print(f", memory-bound ceiling {bound:.1f} tok/s" if bound else "")
    if result.recommended_exit_layer is None:
        print(f"no exit layer is predicted to beat autoregressive (best {result.predicted_speedup:.2f}x): "
              "the early layers rarely agree with the last one")
    else:
        print(f"recommended: E={result.recommended_exit_layer}, k={result.recommended_k} "
              f"(predicted {result.predicted_speedup:.2f}x)")
    write_json(args.output_dir / "analysis.json", {"model": loaded.name, "dataset": dataset.name,
                                                   "perfect_draft_from": args.perfect_draft_from,
                                                   **result.to_dict()})
    save(analysis_figure(result.records, result.recommended_exit_layer), args.output_dir / "analysis.png")
    print(f"wrote {args.output_dir}/analysis.json, analysis.png", file=sys.stderr)
    return 0
