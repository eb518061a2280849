"""Between the OpenAI API and our generation API: requests to GenerationConfig, results to
responses, and the server-sent events of a stream."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from layerskip.errors import LayerSkipError
from layerskip.generation.config import GenerationConfig
from layerskip.generation.output import SpeculationStats
from layerskip.generation.scoring import TokenLogprobs
from layerskip.serve.engine import Completed, Job
from layerskip.serve.errors import APIError
from layerskip.serve.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionResponse,
    GenerationRequest,
    SpeculationUsage,
    TokenLogprob,
    TopLogprob,
    Usage,
)


def generation_config(
    req: GenerationRequest, defaults: GenerationConfig, max_new_tokens: int, choice: int = 0
) -> GenerationConfig:
    """The server defaults overridden by what the request sets; temperature 0 means greedy.
    Choice i of a seeded request samples with seed + i, so n choices differ but repeat."""
    overrides: dict[str, object] = {"max_new_tokens": max(max_new_tokens, 1), "chat": False}
    if req.temperature is not None:
        overrides |= {"temperature": req.temperature, "do_sample": req.temperature > 0}
    for name in ("top_p", "top_k", "strategy", "exit_layer", "num_speculations", "frequency_penalty",
                 "presence_penalty"):
        if getattr(req, name) is not None:
            overrides[name] = getattr(req, name)
    if req.logit_bias:
        overrides["logit_bias"] = {int(i): b for i, b in req.logit_bias.items()}
    if req.seed is not None:
        overrides["seed"] = (req.seed + choice) % (1 << 64)  # torch takes unsigned 64-bit seeds
    if req.stop_strings is not None:
        overrides["stop_strings"] = req.stop_strings
    try:
        return dataclasses.replace(defaults, **overrides)
    except LayerSkipError as e:
        raise APIError(400, str(e)) from e


def usage(done: list[Completed]) -> Usage:
    """Prompt tokens once per prompt (not per choice), completion tokens and speculation summed."""
    prompts = {c.task.prompt_index: len(c.task.prompt_ids) for c in done}
    results = [c.result for c in done if c.result is not None]
    total = sum((r.stats for r in results), SpeculationStats())
    first = results[0] if results else None
    prompt_tokens, completion_tokens = sum(prompts.values()), sum(r.num_new_tokens for r in results)
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        speculation=SpeculationUsage(
            strategy=first.strategy if first else done[0].task.cfg.strategy,
            exit_layer=first.exit_layer if first else None,
            num_speculations=first.num_speculations if first else None,
            exit_layer_schedule=first.exit_layer_schedule if first else [],
            drafted_tokens=total.num_drafted,
            accepted_tokens=total.num_accepted,
            verifications=total.num_verifications,
            acceptance_rate=total.acceptance_rate,
            mean_accepted_length=total.mean_accepted_length,
        ),
    )


class Logprobs:
    """Token log-probabilities in OpenAI's two shapes; token strings are each token decoded alone."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def completion(self, lp: TokenLogprobs, unscored: int | None = None, offset: int = 0) -> CompletionLogprobs:
        """Legacy shape; `unscored` is a leading token without a score (the prompt's first, with
        echo). Each top_logprobs holds the alternatives and the chosen token, as OpenAI's."""
        lead = [] if unscored is None else [unscored]
        tokens = [self.text(t) for t in lead + lp.token_ids]
        tops: list[dict[str, float] | None] = [None] * len(lead)
        for chosen, logprob, ids, values in zip(tokens[len(lead):], lp.logprobs, lp.top_ids, lp.top_logprobs):
            tops.append({self.text(i): v for i, v in zip(ids, values)} | {chosen: logprob})
        offsets = []
        for t in tokens:
            offsets.append(offset)
            offset += len(t)
        return CompletionLogprobs(tokens=tokens, token_logprobs=[None] * len(lead) + lp.logprobs,
                                  top_logprobs=tops, text_offset=offsets)

    def chat(self, lp: TokenLogprobs) -> ChatLogprobs:
        content = []
        for token_id, logprob, ids, values in zip(lp.token_ids, lp.logprobs, lp.top_ids, lp.top_logprobs):
            top = [self._top(i, v) for i, v in zip(ids, values)]
            content.append(TokenLogprob(**self._top(token_id, logprob).model_dump(), top_logprobs=top))
        return ChatLogprobs(content=content)

    def _top(self, token_id: int, logprob: float) -> TopLogprob:
        text = self.text(token_id)
        return TopLogprob(token=text, logprob=logprob, bytes=list(text.encode("utf-8", "replace")))


@dataclass
class Reply:
    """How one response is shaped: its id, model name, whether it is a chat, how to write logprobs."""

    model: str
    chat: bool
    logprobs: Logprobs
    id: str = field(init=False)
    created: int = field(init=False)

    def __post_init__(self) -> None:
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def response(self, done: list[Completed]) -> BaseModel:
        head = {"id": self.id, "created": self.created, "model": self.model, "usage": usage(done)}
        if self.chat:
            return ChatCompletionResponse(**head, choices=[self._chat_choice(c) for c in done])
        return CompletionResponse(**head, choices=[self._completion_choice(c) for c in done])

    def _chat_choice(self, c: Completed) -> ChatChoice:
        logprobs = self.logprobs.chat(c.logprobs) if c.logprobs is not None else None
        return ChatChoice(index=c.task.index, message=AssistantMessage(content=c.result.text),
                          finish_reason=c.result.finish_reason, logprobs=logprobs)

    def _completion_choice(self, c: Completed) -> CompletionChoice:
        text = (c.task.echo or "") + (c.result.text if c.result else "")
        logprobs = None
        if c.task.top_logprobs is not None:
            parts = [p for p in (c.prompt_logprobs, c.logprobs) if p is not None]
            lp = sum(parts[1:], parts[0]) if parts else TokenLogprobs([], [], [], [])
            logprobs = self.logprobs.completion(lp, c.task.prompt_ids[0] if c.task.echo is not None else None)
        finish = c.result.finish_reason if c.result else "length"
        return CompletionChoice(index=c.task.index, text=text, finish_reason=finish, logprobs=logprobs)

    def chunk(self, index: int, text: str | None, finish_reason: str | None = None, role: bool = False,
              lp: TokenLogprobs | None = None, unscored: int | None = None, offset: int = 0) -> BaseModel:
        head = {"id": self.id, "created": self.created, "model": self.model}
        if self.chat:
            delta = ChatDelta(role="assistant" if role else None, content=text)
            logprobs = self.logprobs.chat(lp) if lp is not None else None
            choice = ChatChunkChoice(index=index, delta=delta, finish_reason=finish_reason, logprobs=logprobs)
            return ChatCompletionChunk(**head, choices=[choice])
        logprobs = self.logprobs.completion(lp, unscored, offset) if lp is not None else None
        choice = CompletionChoice(index=index, text=text or "", finish_reason=finish_reason, logprobs=logprobs)
        return CompletionResponse(**head, choices=[choice])

    def usage_chunk(self, done: list[Completed]) -> BaseModel:
        kind = ChatCompletionChunk if self.chat else CompletionResponse
        return kind(id=self.id, created=self.created, model=self.model, choices=[], usage=usage(done))


def _sse(data: BaseModel | dict | str) -> str:
    if isinstance(data, BaseModel):
        data = data.model_dump_json()
    elif isinstance(data, dict):
        data = json.dumps(data)
    return f"data: {data}\n\n"


@dataclass
class _Streamed:
    """How much of one choice a stream has sent."""

    text: int = 0  # characters of generated text
    tokens: int = 0  # generated tokens whose logprobs went out
    offset: int = 0  # characters in all, echo included (logprobs' text_offset)


async def sse_stream(job: Job, reply: Reply, include_usage: bool) -> AsyncIterator[str]:
    """`data: {chunk}` events: each choice in turn (its echo, text deltas, held-back tail, finish
    reason), usage if asked, then `[DONE]`. An error after the stream has started is sent as an
    `{"error": ...}` event."""
    streamed: dict[int, _Streamed] = {}
    done: list[Completed] = []
    try:
        async for event in job.stream_events():
            i, task = event.index, job.tasks[event.index]
            if i not in streamed:
                streamed[i] = _Streamed()
                if reply.chat:
                    yield _sse(reply.chunk(i, "", role=True))
            s = streamed[i]
            if event.echo:
                unscored = task.prompt_ids[0] if event.logprobs is not None else None
                yield _sse(reply.chunk(i, event.text, lp=event.logprobs, unscored=unscored))
                s.offset = len(event.text)
            elif event.done is None:
                yield _sse(reply.chunk(i, event.text, lp=event.logprobs, offset=s.offset))
                s.text, s.offset = s.text + len(event.text), s.offset + len(event.text)
                s.tokens += len(event.logprobs) if event.logprobs is not None else 0
            else:
                done.append(event.done)
                for chunk in _finish(reply, event.done, s):
                    yield _sse(chunk)
        if include_usage:
            yield _sse(reply.usage_chunk(done))
    except APIError as e:
        yield _sse(e.body())
    yield _sse("[DONE]")


def _finish(reply: Reply, c: Completed, s: _Streamed) -> list[BaseModel]:
    """A choice's held-back tail (the finished text is authoritative) and its finish reason."""
    r, chunks = c.result, []
    if r is None:  # max_tokens 0: the echo was all
        return [reply.chunk(c.task.index, "", "length")]
    rest = c.logprobs[s.tokens:] if c.logprobs is not None else None
    if r.text[s.text:] or (rest is not None and len(rest)):
        chunks.append(reply.chunk(c.task.index, r.text[s.text:], lp=rest, offset=s.offset))
    chunks.append(reply.chunk(c.task.index, None if reply.chat else "", r.finish_reason))
    return chunks
