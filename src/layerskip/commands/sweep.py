"""`layerskip sweep`: self-speculation over a grid of E and k against autoregressive; CSV plus PNG
heatmaps of speedup and acceptance with the best cell marked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layerskip.bench.report import format_table, write_csv, write_json
from layerskip.bench.sweep import sweep
from layerskip.commands.common import (
    add_dataset_arguments,
    add_generation_arguments,
    add_model_arguments,
    dataset_from_args,
    generation_config,
    load_for_measurement,
    progress_bar,
)
from layerskip.commands.extras import require_extra
from layerskip.errors import LayerSkipError


def int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_dataset_arguments(p, default_samples=4)
    add_generation_arguments(p)
    p.add_argument("--exit-layers", type=int_list, default=None,
                   help="comma-separated E values (default: 4 evenly spaced layers)")
    p.add_argument("--speculations", type=int_list, default=[2, 4, 6], help="comma-separated k values")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--output-dir", type=Path, required=True)


def default_exit_layers(n_layers: int, count: int = 4) -> list[int]:
    step = max(n_layers // (count + 1), 1)
    return sorted({min(step * (i + 1), n_layers - 1) for i in range(count)})


def run(args: argparse.Namespace) -> int:
    require_extra("bench")
    from layerskip.bench.plots import grid_figure, save

    base = generation_config(args)
    dataset = dataset_from_args(args)
    loaded = load_for_measurement(args)
    exit_layers = args.exit_layers or default_exit_layers(loaded.config.n_layers)
    result = sweep(loaded, dataset, base, exit_layers, args.speculations, args.warmup, progress_bar("sweep"))
    rows = result.rows()
    if not rows:
        raise LayerSkipError("the sweep produced no measurements")
    print(format_table(rows, ["exit_layer", "num_speculations", "decode_tokens_per_s", "speedup",
                              "acceptance_rate", "mean_accepted_length"]))
    best = result.best
    ar = result.report.arms[0].speed.decode_tokens_per_s
    print(f"autoregressive {ar:.1f} tok/s; best: E={best['exit_layer']}, k={best['num_speculations']} at "
          f"{best['speedup']:.2f}x (acceptance {best['acceptance_rate']:.0%})")
    out = args.output_dir
    write_csv(out / "sweep.csv", rows)
    write_json(out / "sweep.json", {"model": loaded.name, "perfect_draft_from": args.perfect_draft_from,
                                    **result.report.to_dict()})
    grids = {"speedup": result.grid("speedup"), "acceptance rate": result.grid("acceptance_rate")}
    save(grid_figure(result.exit_layers, result.ks, grids, (best["exit_layer"], best["num_speculations"])),
         out / "sweep.png")
    print(f"wrote {out}/sweep.csv, sweep.json, sweep.png", file=sys.stderr)
    return 0
