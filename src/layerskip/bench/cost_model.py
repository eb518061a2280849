"""The cost model lives in generation/costs.py, where the exit-layer controller uses it while
decoding; `analyze` and `tune` rank (E, k) with the same formula through these names."""

from layerskip.generation.costs import (
    LayerCosts,
    acceptance_from_mean_length,
    expected_tokens_per_round,
    measure_costs,
    measure_read_bandwidth,
    memory_bound_costs,
    time_calls,
    weight_bytes,
)

__all__ = ["LayerCosts", "acceptance_from_mean_length", "expected_tokens_per_round", "measure_costs",
           "measure_read_bandwidth", "memory_bound_costs", "time_calls", "weight_bytes"]
