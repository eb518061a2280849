"""Speculation and speed figures summed over the generation requests of an evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layerskip.generation.output import GenerationResult, SpeculationStats


@dataclass
class GenerationTotals:
    requests: int = 0
    new_tokens: int = 0
    decode_tokens: int = 0  # tokens after each request's first (the first is paid by prefill)
    decode_time_s: float = 0.0
    total_time_s: float = 0.0
    num_drafted: int = 0
    num_accepted: int = 0
    num_verifications: int = 0

    def add(self, r: GenerationResult) -> None:
        self.requests += 1
        self.new_tokens += r.num_new_tokens
        self.decode_tokens += max(r.num_new_tokens - 1, 0)
        self.decode_time_s += r.decode_time_s
        self.total_time_s += r.total_time_s
        self.num_drafted += r.stats.num_drafted
        self.num_accepted += r.stats.num_accepted
        self.num_verifications += r.stats.num_verifications

    @property
    def acceptance_rate(self) -> float:
        return self._speculation().acceptance_rate

    @property
    def mean_accepted_length(self) -> float:
        """Tokens per verification, the verifier's own token included."""
        return self._speculation().mean_accepted_length

    def _speculation(self) -> SpeculationStats:
        """The counts as SpeculationStats, which owns the formulas."""
        return SpeculationStats(self.num_drafted, self.num_accepted, self.num_verifications)

    def to_dict(self) -> dict[str, Any]:
        def rate(n: float, t: float) -> float:
            return n / t if t > 0 else 0.0

        d: dict[str, Any] = {
            "requests": self.requests,
            "new_tokens": self.new_tokens,
            "tokens_per_second": rate(self.new_tokens, self.total_time_s),
            "decode_tokens_per_second": rate(self.decode_tokens, self.decode_time_s),
            "total_time_s": self.total_time_s,
        }
        if self.num_verifications:
            d |= {
                "acceptance_rate": self.acceptance_rate,
                "mean_accepted_length": self.mean_accepted_length,
                "num_drafted": self.num_drafted,
                "num_accepted": self.num_accepted,
                "num_verifications": self.num_verifications,
            }
        return d
