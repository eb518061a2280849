"""Generation settings: the one source of defaults for the API, the CLI and the server."""

from __future__ import annotations

from dataclasses import dataclass, field

from layerskip.errors import LayerSkipError

STRATEGIES = ("autoregressive", "early_exit", "self_speculative")


def is_speculative(strategy: str) -> bool:
    """Whether a run of `strategy` drafts and verifies: the one place that decides it."""
    return strategy == "self_speculative"


@dataclass
class GenerationConfig:
    strategy: str = "autoregressive"
    max_new_tokens: int = 128
    exit_layer: int | None = None  # E: layers 0..E-1 draft / exit; None = model's recommendation
    num_speculations: int = 6  # k: drafts per verification
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)  # added to the model's own
    stop_strings: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    chat: bool = False
    # OpenAI's penalties on the tokens generated so far and biases by token id, added to the
    # logits of drafts and verification alike (sampling.LogitAdjuster).
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    # Adaptive drafting: stop a draft when its top probability falls below this threshold.
    draft_confidence_threshold: float | None = None
    # Adaptive drafting: grow k after a fully accepted draft, shrink it after a rejection.
    adaptive_k: bool = False
    # Cheaper drafts: the early exit scores only the N most frequent tokens; verification keeps
    # the full vocabulary, so the output is unchanged (see generation/draft_vocab.py).
    draft_vocab_size: int | None = None
    draft_vocab_file: str | None = None  # token ids, most frequent first; default ranking: id order

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
        if self.exit_layer is not None and self.exit_layer < 1:
            raise LayerSkipError(f"exit layer must be >= 1, got {self.exit_layer}")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise LayerSkipError(f"{name} must be in [-2, 2], got {getattr(self, name)}")
        if any(i < 0 or not -100 <= b <= 100 for i, b in self.logit_bias.items()):
            raise LayerSkipError("logit_bias maps token ids >= 0 to biases in [-100, 100]")

    @property
    def speculative(self) -> bool:
        return is_speculative(self.strategy)

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0

    def resolve_exit_layer(self, n_layers: int, recommended: int | None) -> int | None:
        """The exit layer for this model, checked against its depth; None for autoregressive."""
        if self.strategy == "autoregressive":
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
