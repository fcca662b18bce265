"""Latency of the exported student: onnxruntime deploy graph vs onnxruntime float graph vs PyTorch float
(issue 3). Full-length random sequences, batch 1 and 32, sequence 128, median over repeats after warm-up.

Run:  python benchmarks/onnx_latency.py RUN_DIR [--batch-sizes 1 32] [--seq-len 128] [--repeats 10]
      [--profile]   (adds onnxruntime's per-operator time for the deploy graph at the largest batch)
RUN_DIR is a `kdqat train` folder after `kdqat export`: RUN_DIR/onnx/{model.onnx, model.float.onnx}.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from kdqat.run_dir import open_run
from kdqat.runtime.ort_engine import OrtEngine
from kdqat.runtime.torch_engine import TorchEngine


def inputs(batch: int, seq: int, vocab: int = 30000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, vocab, (batch, seq)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def median_ms(run, feeds, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        run(feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(feeds)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def profile(model, feeds: dict[str, np.ndarray], runs: int = 3, threads: int | None = None) -> list[tuple[str, float]]:
    """onnxruntime's own per-operator kernel time (ms per run, averaged over all `runs`, the first included) for
    a graph (a ModelProto) as onnxruntime optimizes it."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    run = open_run(args.run_dir)
    folder = run.root / "onnx"
    engines = {
        "PyTorch float (eager)": TorchEngine.teacher(run.teacher or run.student),
        "onnxruntime float graph": OrtEngine(folder / "model.float.onnx"),
        "onnxruntime deploy graph (W2/A8)": OrtEngine(folder / "model.onnx"),
    }
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}, "
          f"sequence {args.seq_len}, median of {args.repeats}")
    results = {}
    for batch in args.batch_sizes:
        feeds = inputs(batch, args.seq_len)
        results[batch] = {name: median_ms(e.run, feeds, args.repeats) for name, e in engines.items()}
    base = "PyTorch float (eager)"
    print("| engine | " + " | ".join(f"batch {b} ms | vs PyTorch" for b in args.batch_sizes) + " |")
    print("|---|" + "---|---|" * len(args.batch_sizes))
    for name in engines:
        cells = [f"{results[b][name]:.1f} | {results[b][base] / results[b][name]:.2f}x" for b in args.batch_sizes]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.profile:
        batch = max(args.batch_sizes)
        import onnx

        from kdqat.runtime.ort_passes import onnxruntime_cpu

        ops = profile(onnxruntime_cpu(onnx.load(str(folder / "model.onnx"))), inputs(batch, args.seq_len))
        total = sum(ms for _, ms in ops)
        print(f"\nonnxruntime profile, deploy graph, batch {batch}: {total:.1f} ms of kernel time per run")
        for op, ms in ops[:12]:
            print(f"  {op:28s} {ms:8.1f} ms  {100 * ms / total:5.1f}%")


if __name__ == "__main__":
    main()
