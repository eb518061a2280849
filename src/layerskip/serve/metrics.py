"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from layerskip.generation.output import GenerationResult

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_RATE_BUCKETS = tuple(i / 10 for i in range(1, 11))
_TOKEN_RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class Metrics:
    def __init__(self, queue_depth: Callable[[], int], batch_rows: Callable[[], int] = lambda: 0):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("layerskip_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=r)
        self.latency = Histogram("layerskip_request_duration_seconds", "HTTP request latency, to the last byte",
                                 ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("layerskip_time_to_first_token_seconds", "Prefill to the first new token",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.generation_time = Histogram("layerskip_generation_duration_seconds", "Whole generation on the model",
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("layerskip_prompt_tokens", "Prompt tokens processed", registry=r)
        self.generated_tokens = Counter("layerskip_generated_tokens", "Tokens generated", registry=r)
        self.drafted = Counter("layerskip_drafted_tokens", "Tokens drafted by the early exit", registry=r)
        self.accepted = Counter("layerskip_accepted_tokens", "Drafted tokens the full model accepted", registry=r)
        self.acceptance = Histogram("layerskip_acceptance_rate", "Per-request acceptance rate (self-speculation)",
                                    buckets=_RATE_BUCKETS, registry=r)
        self.exit_layer_tokens = Counter("layerskip_exit_layer_tokens",
                                         "Tokens generated per exit layer and k run (none: autoregressive)",
                                         ["exit_layer", "num_speculations"], registry=r)
        self.stopped = Counter("layerskip_stopped_generations", "Generations stopped early, by reason", ["reason"],
                               registry=r)
        self.request_ttft = Histogram("layerskip_request_time_to_first_token_seconds",
                                      "Arrival to the first new token, queueing included", buckets=_LATENCY_BUCKETS,
                                      registry=r)
        self.tokens_per_s = Histogram("layerskip_request_tokens_per_second",
                                      "Per request: tokens after the first / seconds after the first",
                                      buckets=_TOKEN_RATE_BUCKETS, registry=r)
        Gauge("layerskip_queue_depth", "Requests waiting for the model", registry=r).set_function(queue_depth)
        Gauge("layerskip_batch_rows", "Rows of the batch in use now", registry=r).set_function(batch_rows)
        self.batch_capacity = Gauge("layerskip_batch_capacity", "Rows of the batch (--max-batch-size)", registry=r)
        self.rounds = Counter("layerskip_batch_rounds", "Decoding rounds of the batch", registry=r)
        self.row_rounds = Counter("layerskip_batch_row_rounds",
                                  "Rows in use summed over rounds (/ rounds = mean occupancy)", registry=r)

    def round(self, rows: int) -> None:
        self.rounds.inc()
        self.row_rounds.inc(rows)

    def record(self, result: GenerationResult, ttft_s: float) -> None:
        """A finished request; `ttft_s` from its arrival (the result's own TTFT starts at its prefill)."""
        self.request_ttft.observe(ttft_s)
        if result.num_new_tokens > 1 and result.decode_time_s > 0:
            self.tokens_per_s.observe((result.num_new_tokens - 1) / result.decode_time_s)
        self.prompt_tokens.inc(result.prompt_tokens)
        self.generated_tokens.inc(result.num_new_tokens)
        self.ttft.observe(result.time_to_first_token_s)
        self.generation_time.observe(result.total_time_s)
        for stretch in result.exit_layer_schedule:
            labels = (str(stretch["exit_layer"]).lower(), str(stretch["num_speculations"]).lower())
            self.exit_layer_tokens.labels(*labels).inc(stretch["tokens"])
        if result.speculative:
            self.drafted.inc(result.stats.num_drafted)
            self.accepted.inc(result.stats.num_accepted)
            if result.stats.num_drafted:  # a one-token answer drafts nothing: no rate to observe
                self.acceptance.observe(result.stats.acceptance_rate)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: count requests by endpoint and status and time them to the last byte.
    Unknown paths share one label, so a scanner cannot blow up the label set."""

    def __init__(self, app: ASGIApp, metrics: Metrics, endpoints: Collection[str]):
        self.app, self.metrics, self.endpoints = app, metrics, endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
        status = 500  # unless a response starts
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
