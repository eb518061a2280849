"""Measurement tools: datasets, metrics, the interleaved benchmark runner, sweeps, per-layer
analysis, the cost model and auto-tuning."""
