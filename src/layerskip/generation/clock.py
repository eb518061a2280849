"""Phase timings that do not add a host sync to the decode loop.

On CUDA, `time.perf_counter()` around a phase measures when the host queued its kernels, not when
they ran, so draft time would be billed to verification. A CUDA event is recorded on the stream
instead and read after the round's own sync (the acceptance step's `.tolist()`).
"""

from __future__ import annotations

import time

import torch


class PhaseClock:
    """`mark()` a point on the device's timeline; `seconds(a, b)` once the device has passed b."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self) -> float | torch.cuda.Event:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, a: float | torch.cuda.Event, b: float | torch.cuda.Event) -> float:
        if isinstance(a, float):
            return b - a
        return a.elapsed_time(b) / 1000.0
