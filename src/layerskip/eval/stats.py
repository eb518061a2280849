"""Speculation and speed figures summed over the generation requests of an evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layerskip.generation.output import GenerationResult


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
        return self.num_accepted / self.num_drafted if self.num_drafted else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens per verification, the verifier's own token included."""
        v = self.num_verifications
        return (self.num_accepted + v) / v if v else 0.0

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
