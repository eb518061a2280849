"""`layerskip generate`: one prompt, streamed to the terminal, with a stats line or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from layerskip.commands.common import (
    add_generation_arguments,
    add_model_arguments,
    generation_config,
    load_from_args,
)
from layerskip.generation.generate import generate, model_eos_ids
from layerskip.generation.output import ACCEPTED, REJECTED, GenerationResult, TokenCallback
from layerskip.generation.streaming import TextStream
from layerskip.model.loaded import LoadedModel

_COLOURS = {ACCEPTED: "\033[32m", REJECTED: "\033[9;31m"}  # green; red struck through
_MARKERS = {ACCEPTED: ("[+", "]"), REJECTED: ("[-", "]")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--prompt", required=True, help="the prompt (or the user message with --chat)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    add_generation_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    p.add_argument("--show-drafts", action="store_true",
                   help="stream accepted drafts, rejected drafts and verifier tokens distinguishably")


def run(args: argparse.Namespace) -> int:
    cfg = generation_config(args)  # validate flags before the slow model load
    loaded = load_from_args(args)
    if args.json:
        print(json.dumps(generate(loaded, args.prompt, cfg).to_dict()))
        return 0
    callback = terminal_streamer(loaded, sys.stdout, args.show_drafts)
    result = generate(loaded, args.prompt, cfg, callback)
    print(file=sys.stdout, flush=True)
    print(stats_line(result), file=sys.stderr)
    return 0


def terminal_streamer(loaded: LoadedModel, out: TextIO, show_drafts: bool) -> TokenCallback:
    """Print text as it is committed; with show_drafts, mark drafts (colour on a TTY)."""
    stream = TextStream(loaded.tokenizer, model_eos_ids(loaded))
    colour = out.isatty()

    def on_tokens(ids: list[int], kind: str) -> None:
        text = stream.peek(ids) if kind == REJECTED else stream.push(ids)
        if not show_drafts or kind not in _COLOURS:
            if kind != REJECTED:
                out.write(text)
        elif colour:
            out.write(f"{_COLOURS[kind]}{text}\033[0m")
        else:
            left, right = _MARKERS[kind]
            out.write(f"{left}{text}{right}")
        out.flush()

    return on_tokens


def stats_line(r: GenerationResult) -> str:
    line = (
        f"[{r.strategy}] {r.num_new_tokens} new tokens, {r.decode_tokens_per_second:.1f} tok/s decode, "
        f"time to first token {r.time_to_first_token_s * 1000:.0f} ms"
    )
    if r.strategy != "autoregressive":
        line += f", exit layer {r.exit_layer}"
    if len(r.exit_layer_schedule) > 1:  # chosen online (--exit-layer auto): what ran, in order
        line += f" (schedule {schedule_text(r.exit_layer_schedule)})"
    if r.speculative:
        s = r.stats
        line += (
            f", k={r.num_speculations}, acceptance {s.acceptance_rate:.1%} ({s.num_accepted}/{s.num_drafted}),"
            f" mean accepted length {s.mean_accepted_length:.2f}"
        )
    return line


def schedule_text(schedule: list[dict]) -> str:
    """Stretches as `AR x12, E8 k6 x40`: autoregressive or (E, k), and the tokens each produced."""
    return ", ".join(f"AR x{s['tokens']}" if s["exit_layer"] is None
                     else f"E{s['exit_layer']} k{s['num_speculations']} x{s['tokens']}" for s in schedule)
