"""A bounded queue in front of one thread: the model is not thread-safe, so one thread owns it, and
a full queue is refused at once instead of growing without bound.

The thread runs queued items one at a time and, between them, the rounds of a batch (`Rounds`,
the engine's continuous batching): it takes the next item only while the batch has room, so
queued requests wait in the queue, not in memory, and 503 means the batch and the queue are full.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("layerskip.serve")

_STOP = object()


class QueueFull(Exception):
    pass


class Rounds(Protocol):
    """Work done a round at a time between queued items."""

    def has_room(self) -> bool:
        """Whether the next queued item may start now."""

    def busy(self) -> bool:
        """Whether a round has something to do."""

    def step(self) -> None:
        """One round."""


class Worker:
    def __init__(self, max_queue: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self.rounds: Rounds | None = None  # set (on this thread) once the engine exists

    @property
    def depth(self) -> int:
        """Items waiting, the running ones not included."""
        return self._queue.qsize()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="layerskip-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish what is queued, then end the thread (a daemon, so a stuck item cannot block exit)."""
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout_s)
            self._thread.join(timeout_s)
        except queue.Full:
            log.warning("worker queue still full at shutdown; leaving the daemon thread")
        self._thread = None

    def submit(self, fn: Callable[[], None]) -> None:
        try:
            self._queue.put_nowait(fn)
        except queue.Full:
            raise QueueFull from None

    def _loop(self) -> None:
        while True:
            rounds = self.rounds
            if rounds is None or rounds.has_room():
                try:  # wait for work only when no round has any
                    fn = self._queue.get(block=rounds is None or not rounds.busy())
                except queue.Empty:
                    fn = None
                if fn is _STOP:
                    return
                if fn is not None:
                    _guarded(fn)
                    continue  # take every item that fits before the next round
            if rounds is not None and rounds.busy():
                _guarded(rounds.step)


def _guarded(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # one failed item must not take the server down
        log.exception("worker item failed")
