"""What the worker processes of one `kdqat serve` share (shared memory): whether each has loaded its model, and
how many inputs and requests each has outstanding (runtime.workers starts them; runtime.server reads it)."""

from __future__ import annotations

import ctypes
import multiprocessing
import time


class WorkerBoard:
    """Shared memory between the workers of one server; `index` says which worker this copy belongs to."""

    def __init__(self, workers: int, context=multiprocessing) -> None:
        self.workers, self.index = workers, 0
        self._ready = context.RawArray(ctypes.c_int, workers)
        self._outstanding = context.RawArray(ctypes.c_int, workers)  # inputs submitted and not yet answered
        self._waiting = context.RawArray(ctypes.c_int, workers)  # requests queued for the engine
        self._active = context.RawArray(ctypes.c_double, workers)  # time.monotonic() of the last request in or out

    def at(self, index: int) -> WorkerBoard:
        """This board as seen by worker `index`."""
        seen = object.__new__(WorkerBoard)
        seen.__dict__.update(self.__dict__, index=index)
        return seen

    def mark_ready(self) -> None:
        self._ready[self.index] = 1

    def ready(self) -> int:
        """Workers that have loaded their model."""
        return sum(self._ready)

    def publish(self, outstanding: int, waiting: int) -> None:
        """This worker's inputs outstanding and requests queued, as a request comes in or is answered."""
        self._outstanding[self.index], self._waiting[self.index] = outstanding, waiting
        self._active[self.index] = time.monotonic()

    def others_busy(self, within_s: float = 0.1) -> bool:
        """Whether another worker has inputs outstanding, or had a request in or out in the last `within_s`: under
        load a worker's outstanding count touches 0 between its answers going out and its clients' next requests
        coming in, and a call on every core then would compete with the other workers' calls (measured: 12-token
        requests at concurrency 32, 1,921-1,932 requests/s against 2,342-2,384 with no session on every core)."""
        now = time.monotonic()
        return any(self._outstanding[j] or now - self._active[j] < within_s
                   for j in range(self.workers) if j != self.index)

    def waiting(self) -> int:
        """Requests queued for the engine, all workers together."""
        return sum(self._waiting)
