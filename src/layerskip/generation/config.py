"""Generation settings: the one source of defaults for the API, the CLI and the server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from layerskip.errors import LayerSkipError

STRATEGIES = ("autoregressive", "early_exit", "self_speculative")
AUTO = "auto"  # --exit-layer auto: self-speculation chooses E, k and the draft head online (controller.py)


def is_speculative(strategy: str) -> bool:
    """Whether a run of `strategy` drafts and verifies: the one place that decides it."""
    return strategy == "self_speculative"


def exit_layer_arg(text: str) -> int | str:
    """An exit layer as typed: a number, or "auto"."""
    if text == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise LayerSkipError(f"exit layer must be a number or {AUTO!r}, got {text!r}") from None


def _flag(default: object, help: str, **cli: object) -> Any:
    """A field that is also a CLI flag: `help` and any argparse options (flag, metavar, choices,
    default_help, group) are kept in the field's metadata, where commands/ reads them."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass
class GenerationConfig:
    """Fields with `help` metadata are the shared generation flags of the CLI (commands/common.py);
    group "strategy" marks those that choose how drafts are made, which `eval` takes too."""

    strategy: str = _flag("autoregressive", "decoding strategy", choices=STRATEGIES, group="strategy")
    max_new_tokens: int = _flag(128, "tokens to generate at most")
    # None or "auto" for self-speculation: chosen online, between rounds (stored as None).
    exit_layer: int | str | None = _flag(
        None, "E: layers 0..E-1 draft or exit; 'auto' (self-speculation): chosen while decoding", group="strategy",
        metavar="E|auto", type=exit_layer_arg,
        default_help="self_speculative: auto from the tuned setting; early_exit: the model's recommendation, else L/4")
    num_speculations: int = _flag(6, "k: draft tokens per verification (auto: the most it may choose)",
                                  group="strategy")
    # Where the exit-layer controller starts: (E, k) from `layerskip tune`; E None starts
    # autoregressive. None: the model's recommended exit layer, else autoregressive with probing.
    auto_start: tuple[int | None, int] | None = None
    do_sample: bool = _flag(False, "sample instead of greedy decoding", flag="--sample")
    temperature: float = _flag(1.0, "softmax temperature when sampling")
    top_k: int | None = _flag(None, "sample from the k most likely tokens only")
    top_p: float | None = _flag(None, "sample from the smallest nucleus of this probability only")
    seed: int | None = _flag(None, "random seed of sampling")
    eos_token_ids: list[int] = field(default_factory=list)  # added to the model's own
    stop_strings: list[str] = field(default_factory=list, metadata={
        "help": "stop string (repeatable)", "flag": "--stop", "metavar": "STRING"})
    ignore_eos: bool = _flag(False, "generate exactly --max-new-tokens tokens")
    chat: bool = False
    # OpenAI's penalties on the tokens generated so far and biases by token id, added to the
    # logits of drafts and verification alike (sampling.LogitAdjuster).
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    # Adaptive drafting: stop a draft when its top probability falls below this threshold.
    draft_confidence_threshold: float | None = _flag(
        None, "adaptive: stop drafting when the draft's top probability is below this",
        flag="--draft-threshold", group="strategy")
    # Adaptive drafting: grow k after a fully accepted draft, shrink it after a rejection.
    adaptive_k: bool = _flag(False, "adaptive: adjust k from recent acceptance", group="strategy")
    # Cheaper drafts: the early exit scores only the N most frequent tokens; verification keeps
    # the full vocabulary, so the output is unchanged (see generation/draft_vocab.py).
    draft_vocab_size: int | None = _flag(
        None, "self-speculative: draft over the N most frequent tokens only (output unchanged)",
        metavar="N", group="strategy")
    draft_vocab_file: str | None = _flag(
        None, "token ids ranked most frequent first (JSON list or one per line); default: id order",
        metavar="FILE", group="strategy")

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise LayerSkipError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.max_new_tokens < 1:
            raise LayerSkipError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.num_speculations < 1:
            raise LayerSkipError(f"num_speculations (k) must be >= 1, got {self.num_speculations}")
        if self.temperature < 0:
            raise LayerSkipError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise LayerSkipError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise LayerSkipError(f"top_k must be >= 1, got {self.top_k}")
        t = self.draft_confidence_threshold
        if t is not None and not 0 <= t <= 1:
            raise LayerSkipError(f"draft confidence threshold must be in [0, 1], got {t}")
        if self.draft_vocab_size is not None and self.draft_vocab_size < 1:
            raise LayerSkipError(f"draft vocabulary size must be >= 1, got {self.draft_vocab_size}")
        if self.exit_layer == AUTO:
            if self.strategy == "early_exit":
                raise LayerSkipError("early_exit needs a fixed exit layer ('auto' is for self_speculative)")
            self.exit_layer = None
        elif self.exit_layer is not None and (not isinstance(self.exit_layer, int) or self.exit_layer < 1):
            raise LayerSkipError(f"exit layer must be >= 1 or {AUTO!r}, got {self.exit_layer!r}")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise LayerSkipError(f"{name} must be in [-2, 2], got {getattr(self, name)}")
        if any(i < 0 or not -100 <= b <= 100 for i, b in self.logit_bias.items()):
            raise LayerSkipError("logit_bias maps token ids >= 0 to biases in [-100, 100]")

    @property
    def speculative(self) -> bool:
        return is_speculative(self.strategy)

    @property
    def auto_exit(self) -> bool:
        """Self-speculation with E, k and the draft head chosen online (no fixed exit layer)."""
        return self.speculative and self.exit_layer is None

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0

    def resolve_exit_layer(self, n_layers: int, recommended: int | None) -> int | None:
        """The exit layer for this model, checked against its depth; None for autoregressive and
        for self-speculation that chooses it online."""
        if self.strategy == "autoregressive" or self.auto_exit:
            return None
        e = self.exit_layer if self.exit_layer is not None else recommended
        if e is None:
            e = max(1, n_layers // 4)
        if self.strategy == "early_exit" and not 1 <= e <= n_layers:
            raise LayerSkipError(f"exit layer must be in 1..{n_layers} for this model, got {e}")
        if self.strategy == "self_speculative" and not 1 <= e <= n_layers - 1:
            raise LayerSkipError(
                f"exit layer must be in 1..{n_layers - 1} for self-speculation on this model "
                f"({n_layers} layers), got {e}"
            )
        return e
