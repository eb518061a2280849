"""Server settings: the one source of defaults for `layerskip serve` and `create_app`."""

from __future__ import annotations

from dataclasses import dataclass, field

from layerskip.errors import LayerSkipError
from layerskip.generation.config import GenerationConfig


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"  # loopback by default: exposing the server is an explicit choice
    port: int = 8000
    api_key: str | None = None  # when set, /v1/* and /metrics need `Authorization: Bearer <key>`
    served_model_name: str | None = None  # the `model` clients must send; None = the loaded model's name
    # Defaults for what a request leaves out (strategy, exit layer, k, max_tokens, sampling).
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    max_batch_size: int = 8  # rows decoding together (continuous batching); docs/serving.md says why 8
    max_queue: int = 8  # requests waiting for a row; more are answered 503
    timeout_s: float = 300.0  # per request, queueing included
    max_body_bytes: int = 1 << 20
    # With max_tokens it sizes every batch row's cache, which each step reads whole: a full 8K
    # context per row would make SmolLM2's steps several times slower. None: the model's context.
    max_prompt_tokens: int | None = 1024
    max_tokens: int = 1024  # the largest max_tokens a request may ask for
    retry_after_s: int = 1  # the Retry-After header of 503 answers

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key:
            raise LayerSkipError("the API key is empty")
        if not 0 <= self.port <= 65535:
            raise LayerSkipError(f"port must be in 0..65535, got {self.port}")
        for name in ("max_batch_size", "max_queue", "max_body_bytes", "max_tokens", "retry_after_s"):
            if getattr(self, name) < 1:
                raise LayerSkipError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise LayerSkipError(f"timeout must be > 0 seconds, got {self.timeout_s}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise LayerSkipError(f"max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")

    def cache_length(self, context: int) -> int:
        """Positions of the batch's cache: the longest prompt + max_tokens a request may have, so
        every admitted request fits (attention reads the whole cache: smaller limits, faster steps)."""
        return min(context, (self.max_prompt_tokens or context) + self.max_tokens + 1)
