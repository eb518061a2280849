"""Flags and helpers shared by the measurement commands: bench, sweep, analyze and tune."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch

from layerskip.bench.data import METRICS, Dataset, load_dataset


def add_dataset_arguments(p: argparse.ArgumentParser, default_samples: int) -> None:
    """Flags shared by bench, sweep, analyze and tune."""
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
