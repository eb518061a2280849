"""`layerskip bench`: strategies side by side on a dataset, interleaved, with speed, acceptance,
quality and (with --check) greedy equality of self-speculative and autoregressive outputs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layerskip.bench.report import format_table, write_csv, write_json
from layerskip.bench.runner import BenchReport, run_benchmark, sample_row
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
from layerskip.generation.config import STRATEGIES

TABLE_COLUMNS = ["arm", "new_tokens", "decode_tokens_per_s", "ms_per_token", "speedup", "acceptance_rate",
                 "mean_accepted_length"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_dataset_arguments(p, default_samples=8)
    add_generation_arguments(p)
    p.add_argument("--strategies", default="autoregressive,self_speculative",
                   help=f"comma-separated, from {', '.join(STRATEGIES)} (replaces --strategy)")
    p.add_argument("--warmup", type=int, default=1, help="batches of prompts run unrecorded before measuring")
    p.add_argument("--batch-size", type=int, default=1,
                   help="prompts generated together (batched decoding); reports aggregate tokens/s")
    p.add_argument("--check", action="store_true",
                   help="also check that greedy self-speculative output equals autoregressive, prompt by prompt")
    p.add_argument("--output-dir", type=Path, required=True)


def parse_strategies(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown or not names:
        given = ", ".join(unknown) or "(none given)"
        raise LayerSkipError(f"--strategies: unknown {given}; use {', '.join(STRATEGIES)}")
    return list(dict.fromkeys(names))


def run(args: argparse.Namespace) -> int:
    require_extra("bench")
    configs = [generation_config(args, strategy=s) for s in parse_strategies(args.strategies)]
    dataset = dataset_from_args(args)
    loaded = load_for_measurement(args)
    report = run_benchmark(loaded, dataset, configs, args.warmup, args.check, progress_bar("bench"), args.batch_size)
    report.extra = {"model": loaded.name, "perfect_draft_from": args.perfect_draft_from,
                    "max_new_tokens": args.max_new_tokens, "greedy": configs[0].greedy, "batch_size": args.batch_size}
    write_outputs(report, args.output_dir)
    columns = TABLE_COLUMNS + (["aggregate_tokens_per_s"] if args.batch_size > 1 else [])
    print(format_table([a.row() for a in report.arms], columns + list(report.arms[0].quality)))
    print(f"wrote {args.output_dir}/bench.json, bench_summary.csv, bench_samples.csv", file=sys.stderr)
    return print_check(report)


def write_outputs(report: BenchReport, out: Path) -> None:
    write_json(out / "bench.json", report.to_dict())
    write_csv(out / "bench_summary.csv", [a.row() for a in report.arms])
    write_csv(out / "bench_samples.csv", [sample_row(s) for s in report.samples])


def print_check(report: BenchReport) -> int:
    """Print the equality check; exit status 1 when some outputs differ."""
    if report.mismatches is None:
        return 0
    if not report.mismatches:
        n = len({s.example_id for s in report.samples})
        print(f"check: greedy self-speculative output equals autoregressive on all {n} prompts")
        return 0
    print(f"check: {len(report.mismatches)} output(s) differ from autoregressive:")
    for m in report.mismatches:
        print(f"  prompt {m.example_id} [{m.arm}] first difference at new token {m.first_difference}")
        print(f"    autoregressive: {m.autoregressive_text[:120]!r}")
        print(f"    {m.arm}: {m.text[:120]!r}")
    return 1
