"""How kdqat times an engine: full-length random inputs, latency percentiles over steady calls (`kdqat bench`),
timing blocks after a pause that keep the first, cold call apart (the benchmarks, which interleave engines), and
onnxruntime's own per-operator profile."""

from __future__ import annotations

import collections
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def random_batch(batch: int, seq: int, vocab: int, seed: int = 0, low: int = 1000,
                 special: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Full-length random token ids in [low, vocab), seeded; `special` = (CLS, SEP) ids put first and last."""
    ids = np.random.default_rng(seed).integers(low, vocab, (batch, seq)).astype(np.int64)
    if special is not None:
        ids[:, 0], ids[:, -1] = special
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def measure(run, batch: dict[str, np.ndarray], warmup: int, iterations: int) -> dict[str, float]:
    """Latency percentiles (ms) over `iterations` calls after `warmup`, and sequences per second."""
    for _ in range(warmup):
        run(batch)
    times = np.empty(iterations)
    for i in range(iterations):
        start = time.perf_counter()
        run(batch)
        times[i] = time.perf_counter() - start
    ms = times * 1000
    n = len(batch["input_ids"])
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
            "sequences_per_s": float(n / times.mean())}


@dataclass(frozen=True)
class Block:
    first_ms: float  # the first call after the pause
    steady_ms: float  # ms per call over the timed calls, after the warm-up


def timed_block(run, inputs: dict, iterations: int, warmup: int = 2) -> Block:
    """One block: a pause, `warmup` (>= 1) untimed calls (the first of them timed apart), then `iterations` timed calls.
    The pause: onnxruntime's intra-op threads spin for a while after a run, and a session timed right after another
    one would share the cores with the other's spinning pool (measured: a 1x32 student looked 1.6x slower than
    alone). The warm-up: on this kind of machine the first call after the pause takes 2-5x a steady call at 1x32
    (threads and caches gone cold), which would weigh on a block of a few calls (docs/results/cpu-speed.md)."""
    if warmup < 1:
        raise ValueError(f"warmup {warmup}: the first call after the pause is a warm-up call, so at least 1")
    time.sleep(0.05)
    start = time.perf_counter()
    run(inputs)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        run(inputs)
    start = time.perf_counter()
    for _ in range(iterations):
        run(inputs)
    return Block(first * 1e3, (time.perf_counter() - start) / iterations * 1e3)


def block_ms(run, inputs: dict, iterations: int, warmup: int = 2) -> float:
    """ms per call of one block after its pause and warm-up (`timed_block`)."""
    return timed_block(run, inputs, iterations, warmup).steady_ms


def ort_profile(model, feeds: dict[str, np.ndarray], runs: int = 3, threads: int | None = None) -> list[tuple[str, float]]:
    """onnxruntime's own per-operator kernel time (ms per run, averaged over all `runs`, the first included) for
    a graph (a ModelProto) as onnxruntime optimizes it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:  # the trace is read here, not left in the working directory
        options.profile_file_prefix = str(Path(tmp) / "ort_profile")
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1000 / runs
    return per_op.most_common()
