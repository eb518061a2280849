"""Where decoding loops put tokens: stop conditions, callbacks, timing and statistics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass, field
from typing import Any

from layerskip.generation.config import is_speculative

# Kinds of emitted tokens, so a streamer can show drafts apart from verifier tokens.
TARGET = "target"  # chosen by the full model (or the exit layer for early exit)
ACCEPTED = "accepted"  # drafted by the early layers and accepted by the verifier
REJECTED = "rejected"  # drafted and rejected: shown when streaming drafts, never part of the output

TokenCallback = Callable[[list[int], str], None]


def cut_at_stop_strings(text: str, stop_strings: list[str], start: int = 0) -> str:
    """The text before the earliest stop string found at or after index `start`."""
    cut = len(text)
    for stop in stop_strings:
        i = text.find(stop, start)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


@dataclass
class SpeculationStats:
    """Draft and verification counts of one generation, or summed over many (`+`): the rates are
    ratios of sums, so long answers weigh more."""

    num_drafted: int = 0
    num_accepted: int = 0
    num_verifications: int = 0
    draft_time_s: float = 0.0
    verify_time_s: float = 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted / self.num_drafted if self.num_drafted else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens per verification, the verifier's own token included (1.0: nothing accepted)."""
        if not self.num_verifications:
            return 0.0
        return (self.num_accepted + self.num_verifications) / self.num_verifications

    def __add__(self, other: SpeculationStats) -> SpeculationStats:
        return SpeculationStats(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str  # "stop" (EOS or stop string) or "length"
    strategy: str
    exit_layer: int | None
    num_speculations: int | None
    time_to_first_token_s: float
    decode_time_s: float
    total_time_s: float
    stats: SpeculationStats = field(default_factory=SpeculationStats)
    # Stretches of the output in order: {exit_layer, num_speculations, draft_vocab_size, tokens};
    # exit_layer None for autoregressive ones. With a fixed setting there is one stretch; with
    # `--exit-layer auto` one per change, and `exit_layer` is the E that produced most tokens.
    exit_layer_schedule: list[dict[str, Any]] = field(default_factory=list)

    @property
    def speculative(self) -> bool:
        return is_speculative(self.strategy)

    @property
    def num_new_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def decode_tokens(self) -> int:
        """Tokens after the first: the first is paid by the prefill."""
        return max(self.num_new_tokens - 1, 0)

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens after the first over the time after the first (prefill excluded)."""
        return _rate(self.decode_tokens, self.decode_time_s)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "text": self.text,
            "token_ids": self.token_ids,
            "prompt_tokens": self.prompt_tokens,
            "num_new_tokens": self.num_new_tokens,
            "finish_reason": self.finish_reason,
            "strategy": self.strategy,
            "exit_layer": self.exit_layer,
            "exit_layer_schedule": self.exit_layer_schedule,
            "decode_tokens_per_second": self.decode_tokens_per_second,
            "time_to_first_token_s": self.time_to_first_token_s,
            "total_time_s": self.total_time_s,
        }
        if self.speculative:
            s = self.stats
            d |= {
                "num_speculations": self.num_speculations,
                "acceptance_rate": s.acceptance_rate,
                "mean_accepted_length": s.mean_accepted_length,
                "num_drafted": s.num_drafted,
                "num_accepted": s.num_accepted,
                "num_verifications": s.num_verifications,
                "draft_time_s": s.draft_time_s,
                "verify_time_s": s.verify_time_s,
            }
        return d


def _rate(n: float, seconds: float) -> float:
    return n / seconds if n > 0 and seconds > 0 else 0.0


@dataclass
class GenerationTotals:
    """Sums over many generations (a benchmark arm, an evaluation's requests): rates are ratios of
    sums, so long answers weigh more."""

    num_generations: int = 0
    new_tokens: int = 0
    decode_tokens: int = 0
    decode_time_s: float = 0.0
    total_time_s: float = 0.0
    stats: SpeculationStats = field(default_factory=SpeculationStats)

    @classmethod
    def of(cls, results: Iterable[GenerationResult]) -> GenerationTotals:
        totals = cls()
        for r in results:
            totals.add(r)
        return totals

    def add(self, r: GenerationResult) -> None:
        self.num_generations += 1
        self.new_tokens += r.num_new_tokens
        self.decode_tokens += r.decode_tokens
        self.decode_time_s += r.decode_time_s
        self.total_time_s += r.total_time_s
        self.stats += r.stats

    @property
    def decode_tokens_per_s(self) -> float:
        return _rate(self.decode_tokens, self.decode_time_s)

    @property
    def ms_per_token(self) -> float:
        return 1000 * self.decode_time_s / self.decode_tokens if self.decode_tokens else 0.0

    @property
    def total_tokens_per_s(self) -> float:
        """New tokens over wall time, prefill included."""
        return _rate(self.new_tokens, self.total_time_s)


class TokenSink:
    """Collects new tokens, applies EOS / stop strings / max length, and forwards them.

    Decoding loops push every token they commit (several at once for self-speculation); the
    sink cuts at the first stop condition, so every strategy stops at the same token.
    """

    def __init__(
        self,
        tokenizer: Any,
        max_new_tokens: int,
        eos_ids: set[int],
        stop_strings: list[str],
        on_tokens: TokenCallback | None,
    ):
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.eos_ids = eos_ids
        self.stop_strings = stop_strings
        self.on_tokens = on_tokens
        self.ids: list[int] = []
        self.finish_reason: str | None = None
        self.first_token_time: float | None = None
        self._stop_window = 8 + max((len(s) for s in stop_strings), default=0)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def remaining(self) -> int:
        return self.max_new_tokens - len(self.ids)

    def push(self, ids: list[int], kind: str = TARGET) -> bool:
        """Append committed tokens in order; return True once generation must stop."""
        kept = []
        for tok in ids:
            if self.done:
                break
            kept.append(tok)
            self.ids.append(tok)
            self._check_stop(tok)
        if self.first_token_time is None and kept:
            self.first_token_time = time.perf_counter()
        if self.on_tokens is not None and kept:
            self.on_tokens(kept, kind)
        return self.done

    def show_rejected(self, ids: list[int]) -> None:
        if self.on_tokens is not None and ids and not self.done:
            self.on_tokens(ids, REJECTED)

    def _check_stop(self, tok: int) -> None:
        if tok in self.eos_ids:
            self.finish_reason = "stop"
        elif self.stop_strings and self._tail_has_stop_string():
            self.finish_reason = "stop"
        elif len(self.ids) >= self.max_new_tokens:
            self.finish_reason = "length"

    def _tail_has_stop_string(self) -> bool:
        tail = self.tokenizer.decode(self.ids[-self._stop_window :], skip_special_tokens=False)
        return any(s in tail for s in self.stop_strings)

    def text(self) -> str:
        """The decoded answer, without EOS and cut before the first stop string."""
        ids = [t for t in self.ids if t not in self.eos_ids]
        return cut_at_stop_strings(self.tokenizer.decode(ids, skip_special_tokens=True), self.stop_strings)
