"""Generation jobs: submitted from the event loop, run on the worker thread, their tokens streamed
back as events. A job stops early when its client goes away or its deadline passes."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from layerskip.generation.config import GenerationConfig
from layerskip.generation.generate import generate_ids, model_eos_ids
from layerskip.generation.output import REJECTED, GenerationResult, TokenCallback
from layerskip.generation.streaming import TextStream
from layerskip.model.loaded import LoadedModel
from layerskip.serve.errors import APIError
from layerskip.serve.metrics import Metrics
from layerskip.serve.worker import Worker

log = logging.getLogger("layerskip.serve")


@dataclass
class Event:
    text: str = ""  # a streamed text delta
    result: GenerationResult | None = None  # the last event of a finished generation
    error: APIError | None = None  # the last event of a failed one


def timed_out(timeout_s: float) -> APIError:
    return APIError(504, f"request timed out after {timeout_s:g} s", "server_error", code="timeout")


def client_left() -> APIError:
    return APIError(499, "client closed the request", code="cancelled")


class _Stop(Exception):
    """Raised from the token callback to abort a generation; generate() lets it through."""

    def __init__(self, error: APIError):
        self.error = error


@dataclass
class Job:
    prompt_ids: list[int]
    cfg: GenerationConfig
    stream: bool
    timeout_s: float
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout_s

    def post(self, event: Event) -> None:
        """From the worker thread: hand an event to the request's coroutine."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
            self.cancelled.set()

    def check(self) -> None:
        """From the worker thread: stop if the client left or the time is up."""
        if self.cancelled.is_set():
            raise _Stop(client_left())
        if time.monotonic() > self.deadline:
            raise _Stop(timed_out(self.timeout_s))

    async def stream_events(self) -> AsyncIterator[Event]:
        """Events until the last one; cancels the job if the consumer stops early or time runs out."""
        try:
            while True:
                try:
                    event = await asyncio.wait_for(self.events.get(), max(self.deadline - time.monotonic(), 0))
                except TimeoutError:
                    raise timed_out(self.timeout_s) from None
                if event.error is not None:
                    raise event.error
                yield event
                if event.result is not None:
                    return
        finally:
            self.cancelled.set()  # a no-op once the generation has finished

    async def result(self) -> GenerationResult:
        async for event in self.stream_events():
            if event.result is not None:
                return event.result
        raise AssertionError("the event stream ended without a result")


def releasable(text: str, stop_strings: list[str]) -> str:
    """The part of `text` that is safe to stream: cut at a stop string, and hold back a tail that
    could be the start of one (the next token may complete it)."""
    for s in stop_strings:
        if s in text:
            text = text[: text.index(s)]
    hold = max((n for s in stop_strings for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
    return text[: len(text) - hold]


class Engine:
    """A loaded model behind the worker: one generation at a time."""

    def __init__(self, loaded: LoadedModel, worker: Worker, metrics: Metrics):
        self.loaded, self.worker, self.metrics = loaded, worker, metrics
        self._eos = model_eos_ids(loaded)

    def submit(self, job: Job) -> None:
        """Queue a job; raises QueueFull when the queue is full."""
        self.worker.submit(lambda: self._run(job))

    def _run(self, job: Job) -> None:
        try:
            job.check()  # it may have waited past its deadline, or its client may have left
            result = generate_ids(self.loaded, job.prompt_ids, job.cfg, self._callback(job))
        except _Stop as e:
            self.metrics.stopped.labels(e.error.code).inc()
            job.post(Event(error=e.error))
            return
        except Exception:
            log.exception("generation failed")
            job.post(Event(error=APIError(500, "generation failed", "server_error")))
            return
        self.metrics.record(result)
        job.post(Event(result=result))

    def _callback(self, job: Job) -> TokenCallback:
        """Check for cancellation at every commit; for streams, post the new releasable text."""
        stream = TextStream(self.loaded.tokenizer, self._eos)
        sent = 0

        def on_tokens(ids: list[int], kind: str) -> None:
            nonlocal sent
            job.check()
            if not job.stream or kind == REJECTED:
                return
            stream.push(ids)
            text = releasable(stream.emitted, job.cfg.stop_strings)
            if len(text) > sent:
                job.post(Event(text=text[sent:]))
                sent = len(text)

        return on_tokens
