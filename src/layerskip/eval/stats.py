"""The speed and speculation figures of an evaluation's generation requests, as they appear in
lm-eval's results (results["config"]["layerskip"]["generation"])."""

from __future__ import annotations

from typing import Any

from layerskip.generation.output import GenerationTotals


def generation_figures(totals: GenerationTotals) -> dict[str, Any]:
    """Requests, tokens and rates; acceptance figures too once anything was verified."""
    d: dict[str, Any] = {
        "requests": totals.num_generations,
        "new_tokens": totals.new_tokens,
        "tokens_per_second": totals.total_tokens_per_s,
        "decode_tokens_per_second": totals.decode_tokens_per_s,
        "total_time_s": totals.total_time_s,
    }
    s = totals.stats
    if s.num_verifications:
        d |= {
            "acceptance_rate": s.acceptance_rate,
            "mean_accepted_length": s.mean_accepted_length,
            "num_drafted": s.num_drafted,
            "num_accepted": s.num_accepted,
            "num_verifications": s.num_verifications,
        }
    return d
