"""What OpenVINO's dynamic shapes cost: the student's deploy graph compiled once for any shape (what
`--engine openvino` runs) against a model compiled for exactly one batch x sequence shape, per shape; then calls
as a server makes them (a few short inputs, a new shape each time), OpenVINO against onnxruntime.

    python benchmarks/openvino_shapes.py RUN_DIR [--shapes 1x32,1x128,8x128,32x128,4x16,16x12] [--threads 2]

Fixed shapes: the median of --blocks blocks of --iterations calls, the two compiled models interleaved,
full-length random token ids, and the compile time of each fixed-shape model. Server-like calls: --calls
batches of 1-5 inputs of 7-63 tokens (seeded), each engine through them three times (the first pass meets
every shape for the first time), ms per call. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from peers import block_ms, feed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--shapes", default="1x32,1x128,8x128,32x128,4x16,16x12")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--calls", type=int, default=150)
    args = parser.parse_args(argv)
    import openvino as ov

    from kdqat.runtime.openvino_engine import compile_config

    graph = args.run_dir / "onnx" / "model.onnx"
    core, config = ov.Core(), {**compile_config(None), "INFERENCE_NUM_THREADS": str(args.threads)}
    dynamic = core.compile_model(core.read_model(str(graph)), "CPU", config).create_infer_request()
    names = [i.get_any_name() for i in dynamic.model_inputs]
    print(f"{graph}, {args.threads} threads, OpenVINO {ov.get_version()}")
    print(f"{'shape':>8} {'dynamic ms':>11} {'fixed ms':>9} {'saved':>6} {'compile s':>9}")
    for shape in args.shapes.split(","):
        batch, seq = (int(x) for x in shape.split("x"))
        inputs = feed(batch, seq, 30000)
        model = core.read_model(str(graph))
        model.reshape({name: [batch, seq] for name in names})
        start = time.perf_counter()
        fixed = core.compile_model(model, "CPU", config).create_infer_request()
        compile_s = time.perf_counter() - start
        for request in (dynamic, fixed):
            request.infer(inputs)
            request.infer(inputs)
        times: dict[str, list[float]] = {"dynamic": [], "fixed": []}
        for _ in range(args.blocks):
            times["dynamic"].append(block_ms(dynamic.infer, inputs, args.iterations))
            times["fixed"].append(block_ms(fixed.infer, inputs, args.iterations))
        d, f = statistics.median(times["dynamic"]), statistics.median(times["fixed"])
        print(f"{shape:>8} {d:11.2f} {f:9.2f} {1 - f / d:6.0%} {compile_s:9.2f}", flush=True)
        del fixed
    server_like_calls(graph, args.threads, args.calls)
    return 0


def server_like_calls(graph: Path, threads: int, count: int) -> None:
    """ms per call over batches of a few short inputs, each of its own shape, three passes per engine."""
    from kdqat.runtime.openvino_engine import OpenVinoEngine
    from kdqat.runtime.ort_engine import OrtEngine

    rng = np.random.default_rng(0)
    calls = [feed(int(rng.integers(1, 6)), int(rng.integers(7, 64)), 30000) for _ in range(count)]
    print(f"server-like calls: {count} batches of 1-5 inputs of 7-63 tokens, {threads} threads, ms per call")
    for name, engine in (("onnxruntime", OrtEngine(graph, threads=threads)), ("OpenVINO", OpenVinoEngine(graph, threads=threads))):
        passes = []
        for _ in range(3):
            start = time.perf_counter()
            for inputs in calls:
                engine.run(inputs)
            passes.append((time.perf_counter() - start) / count * 1e3)
        print(f"{name:>12}: " + ", ".join(f"pass {i + 1} {ms:.2f}" for i, ms in enumerate(passes)), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
