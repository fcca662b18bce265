"""Dynamic batching for a server: concurrent requests gathered into one engine call.

A request is a list of validated inputs (texts, or pairs). The batcher takes the first waiting request and
every request already queued behind it (the ones that arrived while the engine was busy), then, if
`max_wait_ms` is above 0, waits up to that long for more, until its share of the inputs outstanding at the peak
since the last call is gathered (at most `max_batch_size`; the share is all of them with one engine call at a
time, half with two): clients that just got their answers send their next requests right away, while a lone
client never waits. With `calls` above 1 that many calls run at once (an engine whose calls each use part of
the cores: on a 2-core CPU two single-threaded onnxruntime calls at a time answer short inputs 1.4x faster than
one call on both cores, measured in benchmarks/serve_load.py), and the next group is gathered while one runs; a
call made while no other input waits or runs (with a `board`: at any of the server's worker processes) uses
`run_alone` where given (the engine on every core: a lone client's latency is not that of a single-threaded call). On the engine thread, off the event loop, it tokenizes the
whole group in one tokenizer call and runs it batch by batch, longest first, each batch holding inputs of similar length (runtime.batching.Bucket), so that a short
request is never padded to a long one. When the gathered call fails, each request is run again on its own, so
one bad request fails alone. With batching off every request is one call of its own.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from kdqat.errors import first_line
from kdqat.runtime.batching import Bucket, Features, predict
from kdqat.runtime.serve_options import ServeSettings

RunBatch = Callable[[dict[str, np.ndarray]], np.ndarray]
Encode = Callable[[list], Features]


@dataclass
class _Request:
    inputs: list
    future: asyncio.Future = field(repr=False)
    queued: float = field(default_factory=time.perf_counter)

    @property
    def size(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class Timings:
    """Observers of where a request's time goes (each called with seconds): waiting in the queue (per
    request), tokenizing (per tokenizer call), running the engine (per engine call, with its input count)."""

    queue: Callable[[float], None] = lambda s: None
    tokenize: Callable[[float], None] = lambda s: None
    engine: Callable[[int, float], None] = lambda n, s: None


class DynamicBatcher:
    """`await batcher.submit(inputs)` returns (engine rows of those inputs in order, through `finish` where given;
    their token counts)."""

    def __init__(self, run: RunBatch, encode: Encode, max_batch_size: int = ServeSettings.max_batch_size,
                 max_wait_ms: float = ServeSettings.max_wait_ms, batching: bool = ServeSettings.batching, bucket: Bucket | None = Bucket(), timings: Timings = Timings(),
                 calls: int = 1, run_alone: RunBatch | None = None,
                 finish: Callable[[np.ndarray], np.ndarray] | None = None, board=None) -> None:
        self.run = run
        self.finish = finish  # applied to a whole call's rows on the engine thread (e.g. a softmax)
        self.run_alone = run_alone
        self.encode = encode
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.batching = batching
        self.bucket = bucket
        self.timings = timings
        self._outstanding = 0  # inputs submitted and not yet answered
        self._peak = 0  # the most inputs outstanding since the last gathered call
        self.calls = calls
        self.board = board  # runtime.workers.WorkerBoard: one of several server processes (None: the only one)
        self.queue: asyncio.Queue[_Request] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=self.calls, thread_name_prefix="kdqat-engine")
        # a lone client's calls always on the same thread: onnxruntime keeps per-thread buffers warm there
        self.alone_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kdqat-engine-alone") if run_alone else None
        self._slots = asyncio.Semaphore(self.calls)  # engine calls that may run at once
        self._calls: set[asyncio.Task] = set()
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
        await asyncio.gather(*self._calls, return_exceptions=True)
        self.executor.shutdown(wait=True)
        if self.alone_executor is not None:
            self.alone_executor.shutdown(wait=True)

    async def submit(self, inputs: list) -> tuple[np.ndarray, list[int]]:
        request = _Request(inputs, asyncio.get_running_loop().create_future())
        self._outstanding += request.size
        self._peak = max(self._peak, self._outstanding)
        try:
            await self.queue.put(request)
            self._publish()
            return await request.future
        finally:
            self._outstanding -= request.size
            self._publish()

    def _publish(self) -> None:
        if self.board is not None:
            self.board.publish(self._outstanding, self.queue.qsize())

    async def _gather(self) -> list[_Request]:
        first = await self.queue.get()
        group, size = [first], first.size
        if not self.batching:
            return group
        # this call's share of the inputs outstanding at the peak since the last call (all of them with one call at
        # a time): clients that just got their answers send their next requests now; a lone client has share 1
        target, self._peak = min(self.max_batch_size, -(-self._peak // self.calls)), self._outstanding
        while size < target and not self.queue.empty():  # arrived while the engine was busy
            request = self.queue.get_nowait()
            group.append(request)
            size += request.size
        # then wait (up to max_wait) for the rest of the share
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while size < target:
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

    def _compute(self, inputs: list, run: RunBatch) -> tuple[np.ndarray, list[int]]:
        """On the engine thread: tokenize all inputs in one call, run them with `run` in length-bucketed batches."""
        start = time.perf_counter()
        features = self.encode(inputs)
        self.timings.tokenize(time.perf_counter() - start)
        batch_size = self.max_batch_size if self.batching else len(inputs)

        def timed(batch: dict[str, np.ndarray]) -> np.ndarray:
            begin = time.perf_counter()
            out = run(batch)
            self.timings.engine(len(batch["input_ids"]), time.perf_counter() - begin)
            return out

        rows = predict(timed, features, batch_size, bucket=self.bucket if self.batching else None)
        return (self.finish(rows) if self.finish else rows), [len(ids) for ids in features["input_ids"]]

    async def _call(self, requests: list[_Request]) -> tuple[np.ndarray, list[int]]:
        inputs = [x for r in requests for x in r.inputs]
        if (self.run_alone is not None and self._outstanding <= len(inputs)  # nothing else waits or runs: a lone client
                and (self.board is None or not self.board.others_busy())):  # ... at any worker
            executor, run = self.alone_executor, self.run_alone
        else:
            executor, run = self.executor, self.run
        return await asyncio.get_running_loop().run_in_executor(executor, self._compute, inputs, run)

    async def _loop(self) -> None:
        while True:
            await self._slots.acquire()
            group = await self._gather()
            live = [r for r in group if not r.future.done()]  # a client that went away is not computed
            if not live:
                self._slots.release()
                continue
            call = asyncio.get_running_loop().create_task(self._answer(live))
            self._calls.add(call)
            call.add_done_callback(self._call_done)

    def _call_done(self, call: asyncio.Task) -> None:
        self._calls.discard(call)
        self._slots.release()

    async def _answer(self, live: list[_Request]) -> None:
        """One engine call for the gathered requests, and each request's rows (or its failure)."""
        now = time.perf_counter()
        for r in live:
            self.timings.queue(now - r.queued)
        try:
            logits, tokens = await self._call(live)
        except Exception:
            if len(live) == 1:
                if not live[0].future.done():
                    live[0].future.set_exception(_failure())
                return
            await self._one_by_one(live)
            return
        start = 0
        for r in live:
            if not r.future.done():
                r.future.set_result((logits[start : start + r.size], tokens[start : start + r.size]))
            start += r.size

    async def _one_by_one(self, requests: list[_Request]) -> None:
        for r in requests:
            try:
                result = await self._call([r])
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
    return EngineFailure(f"the engine failed on this request: {type(error).__name__}: {first_line(error)}")
