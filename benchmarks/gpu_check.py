"""The first GPU run, cheap and decisive: build the TensorRT engine from an exported run, check TensorRT
against PyTorch on the dev set the way `kdqat eval` does, print the layer report, and bench TensorRT INT8
against TensorRT FP16 (float graph), onnxruntime CUDA and PyTorch CUDA in one table.

    python benchmarks/gpu_check.py RUN_DIR [--max-samples N] [--batch-sizes 1,8,32] [--seq 128]

Needs the GPU image (Dockerfile): a CUDA GPU, TensorRT 10, onnxruntime-gpu. About 5-10 minutes on one GPU
for the default model (engine builds dominate; later runs load the saved engines).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kdqat.eval.evaluate import EvalOptions, evaluate_run
from kdqat.run_dir import open_run
from kdqat.runtime.bench import measure, random_batch
from kdqat.runtime.ort_engine import OrtEngine
from kdqat.runtime.torch_engine import TorchEngine
from kdqat.runtime.trt_engine import ShapeProfile, TrtEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--max-samples", type=int, default=None, help="dev examples for the parity check (default all)")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args()
    run = open_run(args.run_dir)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    profile = ShapeProfile(1, max(batches), max(batches), 1, args.seq, args.seq)
    deploy, float_graph = run.root / "onnx" / "model.onnx", run.root / "onnx" / "model.float.onnx"

    print("== 1. TensorRT INT8 engine from the Q/DQ deploy graph")
    int8 = TrtEngine.open(deploy, profile)
    print(json.dumps(int8.layers, indent=2))

    print("== 2. parity: TensorRT vs PyTorch student on dev (as kdqat eval --engine trt)")
    result = evaluate_run(EvalOptions(str(run.root), "trt", None, "cpu", None, 32, args.max_samples, True))
    for split, record in result["splits"].items():
        print(split, json.dumps(record["scores"]), json.dumps(record.get("agreement")))

    print("== 3. latency (ms, p50 / p99) at sequence", args.seq)
    engines = {
        "TensorRT INT8 (Q/DQ graph)": int8,
        "TensorRT FP16 (float graph)": TrtEngine.open(float_graph, profile, fp16=True),
        "onnxruntime CUDA (Q/DQ graph)": OrtEngine(deploy, "cuda"),
        "PyTorch CUDA teacher fp32": TorchEngine.teacher(run.teacher or run.student, "cuda"),
        "PyTorch CUDA student (fake-quant)": TorchEngine.student(run.student, "cuda"),
    }
    vocab = TorchEngine.teacher(run.student).model.config.vocab_size
    print(f"{'engine':36} " + " ".join(f"{'batch ' + str(b):>16}" for b in batches))
    for name, engine in engines.items():
        cells = []
        for b in batches:
            stats = measure(engine.run, random_batch(b, args.seq, vocab, 0), warmup=10, iterations=args.iterations)
            cells.append(f"{stats['p50_ms']:7.2f} / {stats['p99_ms']:6.2f}")
        print(f"{name:36} " + " ".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
