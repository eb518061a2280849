"""Generation jobs: submitted from the event loop, decoded on the worker thread in one shared batch
(continuous batching), their tokens streamed back as events. Each task of a job (a prompt, or one
of n choices) is a row of the batch; rows join between rounds and leave as soon as they finish,
their client goes away or their deadline passes."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from layerskip.generation.batch import BatchDecoder, BatchPlan, model_eos_ids
from layerskip.generation.config import GenerationConfig
from layerskip.generation.output import REJECTED, GenerationResult, TokenCallback, cut_at_stop_strings
from layerskip.generation.scoring import TokenLogprobs, sequence_logprobs
from layerskip.generation.streaming import TextStream
from layerskip.model.loaded import LoadedModel
from layerskip.serve.errors import APIError
from layerskip.serve.metrics import Metrics
from layerskip.serve.worker import QueueFull, Worker

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


@dataclass
class Job:
    """A request's tasks, each a row of the batch; `failed` once its error has been posted."""

    tasks: list[Task]
    stream: bool
    timeout_s: float
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    deadline: float = field(init=False)
    created: float = field(init=False)
    failed: bool = False

    def __post_init__(self) -> None:
        self.created = time.monotonic()
        self.deadline = self.created + self.timeout_s

    def post(self, event: Event) -> None:
        """From the worker thread: hand an event to the request's coroutine."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
            self.cancelled.set()

    def stopped(self) -> APIError | None:
        """From the worker thread: why to stop (the client left, the time is up), or None."""
        if self.cancelled.is_set():
            return client_left()
        if time.monotonic() > self.deadline:
            return timed_out(self.timeout_s)
        return None

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


@dataclass
class Running:
    """A task in a row of the batch."""

    job: Job
    task: Task
    prompt_logprobs: TokenLogprobs | None
    first_token: float | None = None  # monotonic time of its first committed token


class Engine:
    """A loaded model behind the worker, decoding every admitted task in one batch of up to
    `max_batch_size` rows. The worker thread runs `_admit` for each job it takes from the queue,
    and `step` for each round while the engine is `busy`."""

    def __init__(self, loaded: LoadedModel, worker: Worker, metrics: Metrics, max_batch_size: int = 1,
                 max_seq_len: int | None = None, max_queue: int | None = None):
        """`max_queue`: requests that may wait for a row beyond the batch's (None: the worker's
        queue alone bounds them)."""
        self.loaded, self.worker, self.metrics = loaded, worker, metrics
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.max_seq_len = min(max_seq_len or loaded.config.max_seq_len, loaded.config.max_seq_len)
        self._eos = model_eos_ids(loaded)
        self.decoder: BatchDecoder | None = None
        self.waiting: deque[tuple[Job, Task]] = deque()  # taken from the queue, not yet in a row
        self.running: dict[int, Running] = {}  # by the decoder's request id
        metrics.batch_capacity.set(max_batch_size)

    @property
    def rows(self) -> int:
        """Rows of the batch in use."""
        return len(self.running)

    def submit(self, job: Job) -> None:
        """Queue a job; raises QueueFull when the batch and the queue are both full. Every job
        passes through the worker's queue until a round boundary takes it, so what counts is all
        that is admitted: queued, waiting for a row, and decoding. (Counting the queue alone,
        a burst that arrives during one prefill was refused while the batch still had rows.)"""
        admitted = self.worker.depth + len(self.waiting) + len(self.running)
        if self.max_queue is not None and admitted >= self.max_batch_size + self.max_queue:
            raise QueueFull
        self.worker.submit(lambda: self._guard(self._admit, job))

    def has_room(self) -> bool:
        return not self.waiting and (self.decoder is None or self.decoder.free > 0)

    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def step(self) -> None:
        """One round: drop the rows whose clients left or timed out, fill free rows, decode."""
        self._guard(self._round)

    def _guard(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # the batch's state is unknown: fail everything in it, start afresh
            log.exception("generation failed")
            error = APIError(500, "generation failed", "server_error")
            for job in [r.job for r in self.running.values()] + [j for j, _ in self.waiting]:
                self._fail(job, error)
            self.running.clear()
            self.waiting.clear()
            self.decoder = None

    def _admit(self, job: Job) -> None:
        self.waiting.extend((job, task) for task in job.tasks)
        self._fill()

    def _round(self) -> None:
        for rid, row in list(self.running.items()):
            if row.job.failed or self._stopped(row.job):
                self.decoder.cancel(rid)
                del self.running[rid]
        self._fill()
        if self.running:
            self.metrics.round(len(self.running))
            self.decoder.step()
            self._collect()

    def _fill(self) -> None:
        """Start waiting tasks in free rows, in order. A task the batch cannot take (another
        strategy, exit layer, k or draft head) waits until the batch drains, then gets a batch of
        its own."""
        while self.waiting:
            job, task = self.waiting[0]
            if job.failed or self._stopped(job) or not task.generate:
                self.waiting.popleft()
                if not job.failed:
                    self._start(job, task)
                continue
            if not self.running:  # a fresh decoder: the model's caches may have been used meanwhile
                self.decoder = self._decoder(task.cfg)
            reason = self.decoder.room(len(task.prompt_ids), task.cfg)
            if reason is not None and not self.running:  # the limits should make this impossible
                self.waiting.popleft()
                self._fail(job, APIError(400, reason))
                continue
            if reason is not None or not self.decoder.free:
                return
            self.waiting.popleft()
            self._start(job, task)

    def _decoder(self, cfg: GenerationConfig) -> BatchDecoder:
        mcfg = self.loaded.config
        plan = BatchPlan.of(cfg, mcfg.n_layers, mcfg.recommended_exit_layer)
        return BatchDecoder(self.loaded, self.max_batch_size, self.max_seq_len, plan)

    def _start(self, job: Job, task: Task) -> None:
        """Post a task's echo; score-only tasks are done there, the others join the batch."""
        prompt_lp = None
        if task.echo is not None:
            if task.top_logprobs is not None:
                prompt_lp = self._score(task, task.prompt_ids, 1)
            if job.stream:
                job.post(Event(task.index, text=task.echo, echo=True, logprobs=prompt_lp))
        if not task.generate:
            job.post(Event(task.index, done=Completed(task, None, prompt_lp)))
            return
        row = Running(job, task, prompt_lp)
        self.running[self.decoder.join(task.prompt_ids, task.cfg, self._callback(row))] = row
        self._collect()  # a one-token answer is done at its prefill

    def _collect(self) -> None:
        """Answer the tasks that finished in the last round; their rows are free again."""
        for rid, result in self.decoder.take_finished().items():
            row = self.running.pop(rid)
            task = row.task
            self.metrics.record(result, (row.first_token or row.job.created) - row.job.created)
            logprobs = None
            if task.top_logprobs is not None:
                logprobs = self._score(task, task.prompt_ids + result.token_ids, len(task.prompt_ids))
            row.job.post(Event(task.index, done=Completed(task, result, row.prompt_logprobs, logprobs)))

    def _stopped(self, job: Job) -> bool:
        """Fail a job whose client left or whose time is up; True if it is failed."""
        error = job.stopped()
        if error is not None and not job.failed:
            self.metrics.stopped.labels(error.code).inc()
            self._fail(job, error)
        return job.failed

    def _fail(self, job: Job, error: APIError) -> None:
        """Post a job's error once; its other rows leave at the next round, its waiting tasks are skipped."""
        if not job.failed:
            job.failed = True
            job.post(Event(error=error))

    def _score(self, task: Task, ids: list[int], start: int) -> TokenLogprobs:
        """Logprobs from the layers that decide the tokens: all of them, or E for early exit (a
        forward pass of its own, without the batch's caches)."""
        mcfg = self.loaded.config
        exit_layer = None
        if task.cfg.strategy == "early_exit":
            exit_layer = task.cfg.resolve_exit_layer(mcfg.n_layers, mcfg.recommended_exit_layer)
        return sequence_logprobs(self.loaded.model, ids, start, task.top_logprobs or 0, exit_layer)

    def _callback(self, row: Running) -> TokenCallback:
        """For streams, post the new releasable text of each commit (and the logprobs of the tokens
        committed since the last post). It never raises: a stopped job's row leaves between rounds."""
        job, task = row.job, row.task
        stream = TextStream(self.loaded.tokenizer, self._eos)
        committed: list[int] = []
        sent = scored = 0

        def on_tokens(ids: list[int], kind: str) -> None:
            nonlocal sent, scored
            if kind == REJECTED or job.failed:
                return
            if row.first_token is None:
                row.first_token = time.monotonic()
            if not job.stream:
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
