"""Load on `kdqat serve` over real HTTP: p50/p99 latency and throughput at several concurrencies, with
dynamic batching on and off, side by side.

    python benchmarks/serve_load.py RUN_DIR [--concurrency 1,8,32] [--requests 256] [--engine ort]

Starts one server per mode on a free loopback port, sends `--requests` one-input requests per
concurrency level (dev-set sentences of the run's task when GLUE_DIR has them, else synthetic ones) after
a warm-up, and prints one row per mode and concurrency. Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_inputs(run: Path, n: int) -> list:
    """n texts (or pairs) from the run's dev data (GLUE: GLUE_DIR; your data: its validation split)."""
    from kdqat.run_dir import open_run

    opened = open_run(run)
    pair = opened.spec.pair
    try:
        source = opened.data_source(os.environ.get("GLUE_DIR") if opened.spec.source == "glue" else None)
        dev = source.load(opened.spec.dev_splits[0], n)
        texts = list(zip(dev["text_a"], dev["text_b"])) if pair else list(dev["text_a"])
    except Exception:  # no data here: synthetic sentences of typical length
        texts = [(f"sentence {i} about a topic", f"a second sentence {i}") if pair else f"sentence {i} about a topic"
                 for i in range(n)]
    return [list(t) if pair else t for t in (texts * (n // len(texts) + 1))[:n]]


def start_server(run: Path, engine: str, batching: bool, max_batch_size: int, max_wait_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "kdqat.cli", "serve", str(run), "--port", str(port), "--engine", engine,
           "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms),
           "--batching" if batching else "--no-batching"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stderr.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise SystemExit("the server did not become ready in 300 s")


async def drive(url: str, inputs: list, concurrency: int) -> dict:
    """Send every input as its own request, `concurrency` at a time; latency per request, overall throughput."""
    latencies: list[float] = []
    queue: asyncio.Queue = asyncio.Queue()
    for x in inputs:
        queue.put_nowait(x)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker():
            while not queue.empty():
                x = queue.get_nowait()
                start = time.perf_counter()
                answer = await client.post("/v1/predict", json=[x])
                latencies.append(time.perf_counter() - start)
                answer.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = sorted(t * 1000 for t in latencies)
    return {"p50_ms": statistics.median(ms), "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
            "requests_per_s": len(ms) / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=256, help="requests per concurrency level")
    parser.add_argument("--engine", default="ort")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=0.0)
    parser.add_argument("--output", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    inputs = sample_inputs(args.run_dir, args.requests)
    from kdqat.runtime.cpu_info import cpu_info, describe

    rows = []
    for batching in (False, True):
        process, url = start_server(args.run_dir, args.engine, batching, args.max_batch_size, args.max_wait_ms)
        try:
            asyncio.run(drive(url, inputs[:32], 4))  # warm-up
            for c in levels:
                rows.append({"batching": batching, "concurrency": c, **asyncio.run(drive(url, inputs, c))})
        finally:
            process.terminate()
            process.wait(60)
    print(f"{args.run_dir} engine={args.engine} requests={args.requests} (one input each) "
          f"max_batch_size={args.max_batch_size} max_wait_ms={args.max_wait_ms:g}")
    print(f"CPU: {describe(cpu_info())}")
    print(f"{'batching':>9} {'concurrency':>11} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for r in rows:
        print(f"{'on' if r['batching'] else 'off':>9} {r['concurrency']:>11} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
              f"{r['requests_per_s']:8.1f}")
    for c in levels:
        on = next(r for r in rows if r["batching"] and r["concurrency"] == c)
        off = next(r for r in rows if not r["batching"] and r["concurrency"] == c)
        print(f"concurrency {c}: batching gives {on['requests_per_s'] / off['requests_per_s']:.2f}x the throughput")
    if args.output:
        args.output.write_text(json.dumps({"options": {k: str(v) for k, v in vars(args).items()}, "cpu": cpu_info(),
                                           "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
