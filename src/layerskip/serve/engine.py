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
from layerskip.generation.output import REJECTED, GenerationResult, TokenCallback, cut_at_stop_strings
from layerskip.generation.scoring import TokenLogprobs, sequence_logprobs
from layerskip.generation.streaming import TextStream
from layerskip.model.loaded import LoadedModel
from layerskip.serve.errors import APIError
from layerskip.serve.metrics import Metrics
from layerskip.serve.worker import Worker

log = logging.getLogger("layerskip.serve")


@dataclass
class Task:
    """One choice of a request: a prompt, how to continue it and what to score."""

    index: int
    prompt_index: int  # the n choices of one prompt share it
    prompt_ids: list[int]
    cfg: GenerationConfig
    generate: bool = True  # False: max_tokens 0, the prompt is only scored
    top_logprobs: int | None = None  # logprobs asked for, with this many alternatives
    echo: str | None = None  # the prompt's text, returned before the completion


@dataclass
class Completed:
    """A finished choice. Logprobs are of prompt_ids[1:] (echo) and of the generated tokens."""

    task: Task
    result: GenerationResult | None
    prompt_logprobs: TokenLogprobs | None = None
    logprobs: TokenLogprobs | None = None


@dataclass
class Event:
    index: int = 0  # the choice it belongs to
    text: str = ""  # a streamed text delta
    echo: bool = False  # the text is the prompt (echo), before the choice's first token
    logprobs: TokenLogprobs | None = None  # of the tokens behind `text` (streams with logprobs)
    done: Completed | None = None  # the last event of a choice
    error: APIError | None = None  # the last event of a failed request


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
    """A request's tasks, run one after another on the worker."""

    tasks: list[Task]
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
        """Events until every task is done; cancels the job if the consumer stops early or time runs out."""
        left = len(self.tasks)
        try:
            while left:
                try:
                    event = await asyncio.wait_for(self.events.get(), max(self.deadline - time.monotonic(), 0))
                except TimeoutError:
                    raise timed_out(self.timeout_s) from None
                if event.error is not None:
                    raise event.error
                yield event
                left -= event.done is not None
        finally:
            self.cancelled.set()  # a no-op once the generation has finished

    async def results(self) -> list[Completed]:
        return [event.done async for event in self.stream_events() if event.done is not None]


def releasable(text: str, stop_strings: list[str]) -> str:
    """The part of `text` that is safe to stream: cut at a stop string, and hold back a tail that
    could be the start of one (the next token may complete it)."""
    text = cut_at_stop_strings(text, stop_strings)
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
            for task in job.tasks:
                job.check()  # it may have waited past its deadline, or its client may have left
                job.post(Event(task.index, done=self._complete(job, task)))
        except _Stop as e:
            self.metrics.stopped.labels(e.error.code).inc()
            job.post(Event(error=e.error))
        except Exception:
            log.exception("generation failed")
            job.post(Event(error=APIError(500, "generation failed", "server_error")))

    def _complete(self, job: Job, task: Task) -> Completed:
        prompt_lp = None
        if task.echo is not None:
            if task.top_logprobs is not None:
                prompt_lp = self._score(task, task.prompt_ids, 1)
            if job.stream:
                job.post(Event(task.index, text=task.echo, echo=True, logprobs=prompt_lp))
        if not task.generate:
            return Completed(task, None, prompt_lp)
        result = generate_ids(self.loaded, task.prompt_ids, task.cfg, self._callback(job, task))
        self.metrics.record(result)
        logprobs = None
        if task.top_logprobs is not None:
            logprobs = self._score(task, task.prompt_ids + result.token_ids, len(task.prompt_ids))
        return Completed(task, result, prompt_lp, logprobs)

    def _score(self, task: Task, ids: list[int], start: int) -> TokenLogprobs:
        """Logprobs from the layers that decide the tokens: all of them, or E for early exit."""
        mcfg = self.loaded.config
        exit_layer = None
        if task.cfg.strategy == "early_exit":
            exit_layer = task.cfg.resolve_exit_layer(mcfg.n_layers, mcfg.recommended_exit_layer)
        return sequence_logprobs(self.loaded.model, ids, start, task.top_logprobs or 0, exit_layer)

    def _callback(self, job: Job, task: Task) -> TokenCallback:
        """Check for cancellation at every commit; for streams, post the new releasable text (and
        the logprobs of the tokens committed since the last post)."""
        stream = TextStream(self.loaded.tokenizer, self._eos)
        committed: list[int] = []
        sent = scored = 0

        def on_tokens(ids: list[int], kind: str) -> None:
            nonlocal sent, scored
            job.check()
            if not job.stream or kind == REJECTED:
                return
            stream.push(ids)
            committed.extend(ids)
            text = releasable(stream.emitted, task.cfg.stop_strings)
            if len(text) > sent:
                logprobs = None
                if task.top_logprobs is not None:
                    n = len(task.prompt_ids)
                    logprobs = self._score(task, task.prompt_ids + committed, n + scored)
                    scored = len(committed)
                job.post(Event(task.index, text=text[sent:], logprobs=logprobs))
                sent = len(text)

        return on_tokens
