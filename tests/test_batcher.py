"""The server's dynamic batcher on a fake engine: closed-loop clients fill each call, a lone client never waits,
a group is tokenized in one call and run in length buckets, answers go back to their requests."""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np

from kdqat.runtime.batcher import DynamicBatcher, Timings


def encode(inputs: list) -> dict:
    """A fake tokenizer: a text of n words is n token ids, each the word's length."""
    return {"input_ids": [[len(w) for w in text.split()] for text in inputs]}


def test_closed_loop_clients_fill_each_call_and_a_lone_client_never_waits():
    calls: list[int] = []

    def run(batch):
        time.sleep(0.005)
        calls.append(len(batch["input_ids"]))
        return batch["input_ids"].sum(1, keepdims=True).astype(np.float32)

    async def main() -> list[float]:
        batcher = DynamicBatcher(run, encode, max_batch_size=8, max_wait_ms=300, batching=True)
        batcher.start()
        waits = []
        for _ in range(3):  # one client alone: answered long before max_wait
            start = time.perf_counter()
            rows, tokens = await batcher.submit(["ab cde"])
            waits.append(time.perf_counter() - start)
            assert rows.tolist() == [[5.0]] and tokens == [2]
        calls.clear()
        rng = random.Random(0)

        async def client() -> None:  # sends its next request 0-30 ms after each answer
            for _ in range(4):
                await batcher.submit(["x y"])
                await asyncio.sleep(rng.uniform(0, 0.03))

        await asyncio.gather(*(client() for _ in range(8)))
        await batcher.stop()
        return waits

    waits = asyncio.run(main())
    assert max(waits) < 0.15  # never the 300 ms max_wait
    assert calls == [8, 8, 8, 8]  # every call waited for all eight clients to come back


def test_a_group_is_tokenized_once_run_in_length_buckets_and_answered_in_order():
    seen: list[list[int]] = []
    tokenized: list[float] = []

    def run(batch):
        seen.append(batch["attention_mask"].sum(1).tolist())
        return batch["attention_mask"].sum(1, keepdims=True).astype(np.float32)

    texts = ["a " * 40, "b " * 3, "c " * 38, "d " * 4]  # 40, 3, 38 and 4 tokens
    finished: list[list[float]] = []

    def finish(rows):  # applied once to the whole call's rows, in the inputs' order
        finished.append(rows[:, 0].tolist())
        return rows * 10

    async def main():
        batcher = DynamicBatcher(run, encode, max_batch_size=8, batching=True,
                                 timings=Timings(tokenize=tokenized.append), finish=finish)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit([t]) for t in texts))
        await batcher.stop()
        return answers

    answers = asyncio.run(main())
    assert [rows[0, 0] for rows, _ in answers] == [400, 30, 380, 40]
    assert seen == [[40, 38], [4, 3]]  # the long ones together, the short ones together
    assert len(tokenized) == 1  # four requests, one tokenizer call
    assert finished == [[40, 3, 38, 4]]  # one finish for the call


def test_two_calls_run_at_once_each_with_its_share_and_a_lone_client_gets_the_whole_engine():
    """With calls=2, eight closed-loop clients are answered by two calls of four that overlap in time; a lone
    client's call goes to run_alone (the engine on every core), calls under load to run."""
    import threading

    spans: list[tuple[float, float, int, str]] = []
    lock = threading.Lock()

    def engine(name: str):
        def run(batch):
            start = time.perf_counter()
            time.sleep(0.02)
            with lock:
                spans.append((start, time.perf_counter(), len(batch["input_ids"]), name))
            return batch["input_ids"].sum(1, keepdims=True).astype(np.float32)
        return run

    async def main() -> None:
        batcher = DynamicBatcher(engine("shared"), encode, max_batch_size=8, max_wait_ms=300, batching=True,
                                 calls=2, run_alone=engine("alone"))
        batcher.start()
        rows, _ = await batcher.submit(["ab cde"])
        assert rows.tolist() == [[5.0]]
        spans.clear()

        async def client(i: int) -> None:
            for _ in range(4):
                rows, _ = await batcher.submit(["a" * (i + 1) + " y"])
                assert rows.tolist() == [[i + 2.0]]  # each client gets its own answer back

        await asyncio.gather(*(client(i) for i in range(8)))
        await batcher.stop()

    asyncio.run(main())
    assert {n for *_, n in spans} == {"shared"}  # under load, never the whole-engine call
    assert sorted(n for _, _, n, _ in spans) == [4] * 8  # each call takes its share: half of the eight
    overlapping = sum(1 for a in spans for b in spans if a is not b and a[0] < b[1] and b[0] < a[1])
    assert overlapping >= 4  # calls ran at the same time, not one after another


def recording(used: list[str], name: str):
    """An engine that answers zeros and notes its name in `used` at each call."""
    def run(batch):
        used.append(name)
        return np.zeros((len(batch["input_ids"]), 1), np.float32)
    return run


def test_a_lone_client_is_served_by_the_whole_engine():
    used: list[str] = []

    def engine(name: str):
        return recording(used, name)

    async def main() -> None:
        batcher = DynamicBatcher(engine("shared"), encode, calls=2, run_alone=engine("alone"))
        batcher.start()
        for _ in range(3):
            await batcher.submit(["one request at a time"])
        await batcher.stop()

    asyncio.run(main())
    assert used == ["alone"] * 3


def test_serving_runs_two_processes_on_a_multicore_cpu_and_one_elsewhere():
    import pytest

    from kdqat import KdqatError
    from kdqat.runtime.served_model import Layout, serving_layout

    linux = dict(platform="linux")
    assert serving_layout("ort", "cpu", cores=2, **linux) == Layout(workers=2, calls=1, threads=1)
    assert serving_layout("ort", "cpu", cores=16, **linux) == Layout(2, 1, 8)
    assert serving_layout("ort", "cpu", cores=1, **linux) == Layout(1, 1, None)  # one core: onnxruntime's own threading
    assert serving_layout("ort", "cpu", workers=1, cores=2) == Layout(1, 2, 1)  # one process: two calls at once
    assert serving_layout("ort", "cpu", workers=1, calls=1, cores=16) == Layout(1, 1, None)
    assert serving_layout("ort", "cpu", workers=4, cores=16, **linux) == Layout(4, 1, 4)
    assert serving_layout("ort", "cpu", workers=2, calls=2, cores=2, **linux) == Layout(2, 2, 1)
    assert (serving_layout("ort", "cuda") == serving_layout("trt", "cpu") == serving_layout("torch", "cpu")
            == Layout(1, 1, None))
    with pytest.raises(KdqatError, match="--engine-calls 2: parallel calls are for onnxruntime or OpenVINO on the CPU"):
        serving_layout("trt", "cpu", calls=2)
    with pytest.raises(KdqatError, match="--workers 2: several server processes are for onnxruntime or OpenVINO on the CPU"):
        serving_layout("ort", "cuda", workers=2)
    with pytest.raises(KdqatError, match="--engine-calls -1: must be 0"):
        serving_layout("ort", "cpu", calls=-1)
    with pytest.raises(KdqatError, match="--workers -2: must be 0"):
        serving_layout("ort", "cpu", workers=-2)
    # elsewhere than Linux, no SO_REUSEPORT load balancing: one process by default, several refused
    assert serving_layout("ort", "cpu", cores=2, platform="darwin") == Layout(1, 2, 1)
    with pytest.raises(KdqatError, match="--workers 2: several server processes need Linux"):
        serving_layout("ort", "cpu", workers=2, cores=2, platform="win32")


def test_a_worker_board_says_who_is_busy_and_sums_the_queues(monkeypatch):
    from kdqat.runtime import worker_board

    now = [100.0]  # the board's clock, moved by the test
    monkeypatch.setattr(worker_board.time, "monotonic", lambda: now[0])
    board = worker_board.WorkerBoard(3)
    first, second, third = board.at(0), board.at(1), board.at(2)
    assert not first.others_busy(within_s=0) and board.ready() == 0
    second.publish(outstanding=4, waiting=2)
    third.publish(outstanding=0, waiting=1)
    assert first.others_busy(within_s=0) and not second.others_busy(within_s=0)  # its own load does not count
    assert first.waiting() == third.waiting() == 3
    second.publish(outstanding=0, waiting=0)  # answered: still busy a moment, its clients come right back
    assert first.others_busy(within_s=10) and not first.others_busy(within_s=0)
    now[0] += 0.02
    assert not first.others_busy(within_s=0.01) and first.others_busy(within_s=0.05)
    first.mark_ready()
    third.mark_ready()
    assert board.ready() == 2


def test_a_lone_client_uses_every_core_only_while_no_other_worker_is_busy():
    from kdqat.runtime.worker_board import WorkerBoard

    used: list[str] = []
    board = WorkerBoard(2)

    async def main() -> None:
        batcher = DynamicBatcher(recording(used, "own share"), encode, run_alone=recording(used, "every core"),
                                 board=board.at(0))
        batcher.start()
        await batcher.submit(["the other worker is idle"])
        board.at(1).publish(outstanding=3, waiting=0)
        await batcher.submit(["the other worker is busy"])
        await batcher.stop()

    asyncio.run(main())
    assert used == ["every core", "own share"]
