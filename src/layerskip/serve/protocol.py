"""Between the OpenAI API and our generation API: requests to GenerationConfig, results to
responses, and the server-sent events of a stream."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pydantic import BaseModel

from layerskip.errors import LayerSkipError
from layerskip.generation.config import GenerationConfig
from layerskip.generation.output import GenerationResult
from layerskip.serve.engine import Job
from layerskip.serve.errors import APIError
from layerskip.serve.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    CompletionChoice,
    CompletionResponse,
    GenerationRequest,
    SpeculationUsage,
    Usage,
)


def generation_config(req: GenerationRequest, defaults: GenerationConfig, max_new_tokens: int) -> GenerationConfig:
    """The server defaults overridden by what the request sets; temperature 0 means greedy."""
    overrides: dict[str, object] = {"max_new_tokens": max_new_tokens, "chat": False}
    if req.temperature is not None:
        overrides |= {"temperature": req.temperature, "do_sample": req.temperature > 0}
    for name in ("top_p", "top_k", "strategy", "exit_layer", "num_speculations"):
        if getattr(req, name) is not None:
            overrides[name] = getattr(req, name)
    if req.seed is not None:
        overrides["seed"] = req.seed % (1 << 64)  # torch takes unsigned 64-bit seeds
    if req.stop_strings is not None:
        overrides["stop_strings"] = req.stop_strings
    try:
        return dataclasses.replace(defaults, **overrides)
    except LayerSkipError as e:
        raise APIError(400, str(e)) from e


def usage(r: GenerationResult) -> Usage:
    s = r.stats
    return Usage(
        prompt_tokens=r.prompt_tokens,
        completion_tokens=r.num_new_tokens,
        total_tokens=r.prompt_tokens + r.num_new_tokens,
        speculation=SpeculationUsage(
            strategy=r.strategy,
            exit_layer=r.exit_layer,
            num_speculations=r.num_speculations,
            drafted_tokens=s.num_drafted,
            accepted_tokens=s.num_accepted,
            verifications=s.num_verifications,
            acceptance_rate=s.acceptance_rate,
            mean_accepted_length=s.mean_accepted_length,
        ),
    )


@dataclass
class Reply:
    """How one response is shaped: its id, model name and whether it is a chat."""

    model: str
    chat: bool
    id: str = ""
    created: int = 0

    def __post_init__(self) -> None:
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def response(self, r: GenerationResult) -> BaseModel:
        head = {"id": self.id, "created": self.created, "model": self.model, "usage": usage(r)}
        if self.chat:
            message = AssistantMessage(content=r.text)
            return ChatCompletionResponse(**head, choices=[ChatChoice(message=message, finish_reason=r.finish_reason)])
        return CompletionResponse(**head, choices=[CompletionChoice(text=r.text, finish_reason=r.finish_reason)])

    def chunk(self, text: str | None, finish_reason: str | None = None, role: bool = False) -> BaseModel:
        head = {"id": self.id, "created": self.created, "model": self.model}
        if self.chat:
            delta = ChatDelta(role="assistant" if role else None, content=text)
            return ChatCompletionChunk(**head, choices=[ChatChunkChoice(delta=delta, finish_reason=finish_reason)])
        return CompletionResponse(**head, choices=[CompletionChoice(text=text or "", finish_reason=finish_reason)])

    def usage_chunk(self, r: GenerationResult) -> BaseModel:
        kind = ChatCompletionChunk if self.chat else CompletionResponse
        return kind(id=self.id, created=self.created, model=self.model, choices=[], usage=usage(r))


def _sse(data: BaseModel | dict | str) -> str:
    if isinstance(data, BaseModel):
        data = data.model_dump_json()
    elif isinstance(data, dict):
        data = json.dumps(data)
    return f"data: {data}\n\n"


async def sse_stream(job: Job, reply: Reply, include_usage: bool) -> AsyncIterator[str]:
    """`data: {chunk}` events: text deltas, the finish reason, usage if asked, then `[DONE]`.
    An error after the stream has started is sent as an `{"error": ...}` event."""
    if reply.chat:
        yield _sse(reply.chunk("", role=True))
    sent = 0
    try:
        async for event in job.stream_events():
            if event.result is None:
                sent += len(event.text)
                yield _sse(reply.chunk(event.text))
                continue
            r = event.result
            if r.text[sent:]:  # the held-back tail; the finished text is authoritative
                yield _sse(reply.chunk(r.text[sent:]))
            yield _sse(reply.chunk(None if reply.chat else "", r.finish_reason))
            if include_usage:
                yield _sse(reply.usage_chunk(r))
    except APIError as e:
        yield _sse(e.body())
    yield _sse("[DONE]")
