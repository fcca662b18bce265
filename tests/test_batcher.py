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

    async def main():
        batcher = DynamicBatcher(run, encode, max_batch_size=8, batching=True,
                                 timings=Timings(tokenize=tokenized.append))
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit([t]) for t in texts))
        await batcher.stop()
        return answers

    answers = asyncio.run(main())
    assert [rows[0, 0] for rows, _ in answers] == [40, 3, 38, 4]
    assert seen == [[40, 38], [4, 3]]  # the long ones together, the short ones together
    assert len(tokenized) == 1  # four requests, one tokenizer call
