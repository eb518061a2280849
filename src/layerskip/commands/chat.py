"""`layerskip chat`: a multi-turn conversation in the terminal through the model's chat template.

Replies stream as `generate` streams them (drafts marked with --show-drafts); the history is the
list of messages the template renders each turn. Ctrl-C during a reply stops that reply (what was
shown stays in the history) and returns to the prompt; /reset, /stats, /exit (or Ctrl-D) as listed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import TextIO

from layerskip.commands.common import add_generation_arguments, add_model_arguments, generation_config, load_from_args
from layerskip.commands.generate import stats_line, terminal_streamer
from layerskip.errors import LayerSkipError
from layerskip.generation.config import GenerationConfig
from layerskip.generation.generate import generate
from layerskip.generation.output import REJECTED, GenerationResult
from layerskip.model.loaded import LoadedModel

HELP = "/reset: forget the conversation   /stats: the last reply's figures   /exit: leave (or Ctrl-D)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--system", default=None, help="a system message at the start of every conversation")
    add_generation_arguments(p)
    p.add_argument("--show-drafts", action="store_true",
                   help="stream accepted drafts, rejected drafts and verifier tokens distinguishably")


@dataclass
class Conversation:
    """The messages so far and the figures of the last finished reply."""

    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    last: GenerationResult | None = None

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.last = None


def run(args: argparse.Namespace) -> int:
    cfg = generation_config(args, chat=True)  # validate flags before the slow model load
    loaded = load_from_args(args)
    if not getattr(loaded.tokenizer, "chat_template", None):
        raise LayerSkipError(f"{loaded.name} has no chat template (a base model?); use `layerskip generate`")
    conversation = Conversation(args.system)
    print(HELP, file=sys.stderr)
    while (line := _read(sys.stdout)) is not None:
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            conversation.reset()
            print("(conversation reset)", file=sys.stderr)
        elif line == "/stats":
            print(stats_line(conversation.last) if conversation.last else "(no finished reply yet)", file=sys.stderr)
        elif line.startswith("/"):
            print(f"unknown command {line}; {HELP}", file=sys.stderr)
        elif line:
            reply(loaded, conversation, line, cfg, args.show_drafts, sys.stdout)
    return 0


def _read(out: TextIO) -> str | None:
    """The next user line, stripped; None at end of input. Ctrl-C at the prompt does not leave."""
    while True:
        try:
            return input(">>> ").strip()
        except EOFError:
            print(file=out)
            return None
        except KeyboardInterrupt:
            print("\n(Ctrl-C stops a reply; /exit or Ctrl-D leaves)", file=sys.stderr)


def reply(
    loaded: LoadedModel, conversation: Conversation, text: str, cfg: GenerationConfig, show_drafts: bool,
    out: TextIO,
) -> None:
    """Stream the assistant's reply to `text` and add both to the history; Ctrl-C stops it early."""
    conversation.messages.append({"role": "user", "content": text})
    stream = terminal_streamer(loaded, out, show_drafts)
    shown: list[int] = []

    def on_tokens(ids: list[int], kind: str) -> None:
        if kind != REJECTED:
            shown.extend(ids)
        stream(ids, kind)

    try:
        result = generate(loaded, conversation.messages, cfg, on_tokens)
        conversation.last, answer = result, result.text
    except KeyboardInterrupt:
        answer = loaded.tokenizer.decode(shown, skip_special_tokens=True)
        print("\n(stopped)", end="", file=sys.stderr)
    print(file=out, flush=True)
    conversation.messages.append({"role": "assistant", "content": answer})
