"""A bounded queue in front of one thread: the model is not thread-safe, so work runs one item at
a time, and a full queue is refused at once instead of growing without bound."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("layerskip.serve")

_STOP = object()


class QueueFull(Exception):
    pass


class Worker:
    def __init__(self, max_queue: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        """Items waiting, the running one not included."""
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
        while (fn := self._queue.get()) is not _STOP:
            try:
                fn()
            except Exception:  # one failed item must not take the server down
                log.exception("worker item failed")
