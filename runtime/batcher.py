"""Dynamic batching for a server: concurrent requests gathered into one engine call.

A request is a list of tokenized inputs. The worker takes the first waiting request and every request
already queued behind it (the ones that arrived while the engine was busy), then, if `max_wait_ms` is
above 0, waits up to that long for more, until `max_batch_size` inputs are gathered; it runs them in
one `predict` call on a worker thread (sorted by length and padded per batch of `max_batch_size`, as
`kdqat eval` runs them). When the gathered call fails, each request is run again on its own, so one
bad request fails alone. With batching off (`max_batch_size` 1 request at a time) every request is one
call of its own.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from kdqat.runtime.batching import Features, predict

RunBatch = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass
class _Request:
    features: Features
    future: asyncio.Future = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.features["input_ids"])


def _merge(requests: list[_Request]) -> Features:
    return {name: [row for r in requests for row in r.features[name]] for name in requests[0].features}


class DynamicBatcher:
    """`await batcher.submit(features)` returns the logits of those inputs, in order."""

    def __init__(self, run: RunBatch, max_batch_size: int = 32, max_wait_ms: float = 5.0, batching: bool = True,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.batching = batching
        self.on_batch = on_batch  # called with the number of inputs of every engine call
        self.queue: asyncio.Queue[_Request] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kdqat-engine")  # one call at a time
        self._worker: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        """Requests waiting for the engine."""
        return self.queue.qsize()

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def submit(self, features: Features) -> np.ndarray:
        request = _Request(features, asyncio.get_running_loop().create_future())
        await self.queue.put(request)
        return await request.future

    async def _gather(self) -> list[_Request]:
        first = await self.queue.get()
        group, size = [first], first.size
        if not self.batching:
            return group
        while size < self.max_batch_size and not self.queue.empty():  # arrived while the engine was busy
            request = self.queue.get_nowait()
            group.append(request)
            size += request.size
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while size < self.max_batch_size:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                request = await asyncio.wait_for(self.queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            group.append(request)
            size += request.size
        return group

    async def _call(self, features: Features) -> np.ndarray:
        size = len(features["input_ids"])
        batch_size = self.max_batch_size if self.batching else size
        logits = await asyncio.get_running_loop().run_in_executor(self.executor, predict, self.run, features, batch_size)
        if self.on_batch is not None:
            for start in range(0, size, batch_size):
                self.on_batch(min(batch_size, size - start))
        return logits

    async def _loop(self) -> None:
        while True:
            group = await self._gather()
            live = [r for r in group if not r.future.done()]  # a client that went away is not computed
            if not live:
                continue
            try:
                logits = await self._call(_merge(live))
            except Exception:
                if len(live) == 1:
                    live[0].future.set_exception(_failure())
                    continue
                await self._one_by_one(live)
                continue
            start = 0
            for r in live:
                if not r.future.done():
                    r.future.set_result(logits[start : start + r.size])
                start += r.size

    async def _one_by_one(self, requests: list[_Request]) -> None:
        for r in requests:
            try:
                result = await self._call(r.features)
            except Exception:
                if not r.future.done():
                    r.future.set_exception(_failure())
                continue
            if not r.future.done():
                r.future.set_result(result)


class EngineFailure(RuntimeError):
    """The engine could not run a request (its inputs, not the server, are the likely cause)."""


def _failure() -> EngineFailure:
    import sys

    error = sys.exc_info()[1]
    return EngineFailure(f"the engine failed on this request: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
