"""`layerskip` command line: each subcommand lives in its own module, imported only when used."""

from __future__ import annotations

import argparse
import importlib
import sys

from layerskip.errors import LayerSkipError

# name -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("layerskip.commands.generate", "generate text (autoregressive, early exit, self-speculative)"),
    "chat": ("layerskip.commands.chat", "multi-turn chat in the terminal (streamed; /reset, /stats, /exit)"),
    "bench": ("layerskip.commands.bench", "benchmark strategies side by side on a dataset"),
    "sweep": ("layerskip.commands.sweep", "sweep exit layer x speculations: CSV and plots"),
    "analyze": ("layerskip.commands.analyze", "per-layer early-exit agreement, perplexity and speedup estimate"),
    "tune": ("layerskip.commands.tune", "pick the exit layer and speculations for a model and prompts"),
    "serve": ("layerskip.commands.serve", "OpenAI-compatible HTTP server"),
    "eval": ("layerskip.commands.eval", "lm-evaluation-harness tasks on our engine"),
    "train": ("layerskip.commands.train", "LayerSkip training: layer dropout + early-exit loss"),
    "merge": ("layerskip.commands.merge", "merge a LoRA adapter into its base model"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layerskip", description="LayerSkip for Llama-family models")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:  # only the chosen command's module (and its imports) is loaded
            importlib.import_module(module).add_arguments(p)
    return parser


def _version() -> str:
    from layerskip import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        return importlib.import_module(COMMANDS[args.command][0]).run(args) or 0
    except LayerSkipError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
