"""The student against what a user would do instead, on one machine in one process: PyTorch fp32 (the teacher),
the peer (onnxruntime BERT fusions + quantize_dynamic int8 of the teacher, benchmarks/_peer.py) and the kdqat
W2/A8 student (the exported deploy graph on onnxruntime, and on OpenVINO where installed), at batch x sequence
1x128, 8x128, 32x128, 1x32, with the dev score of each, so that a speed figure always comes with the accuracy
it costs.

    python benchmarks/peers.py RUN_DIR [--data-dir ../shared/glue] [--output peers.json]

RUN_DIR: a classification run after `kdqat export`. Latency: the median of --blocks blocks of --iterations calls,
the models interleaved block by block (a slow phase of the machine hits each alike), full-length random
token ids, --threads intra-op threads (default: every core). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _peer import peer_graph
from kdqat.data.metrics import task_metrics
from kdqat.glue.data import encode
from kdqat.io import write_json
from kdqat.models import load_tokenizer
from kdqat.run_dir import open_run
from kdqat.runtime.batching import predict
from kdqat.runtime.cpu_info import cpu_info, describe
from kdqat.runtime.ort_engine import OrtEngine
from kdqat.runtime.torch_engine import TorchEngine


PYTORCH, PEER = "PyTorch fp32 (teacher)", "peer: onnxruntime dynamic int8 (fused)"
STUDENTS = {"ort": "kdqat W2/A8 student (onnxruntime)", "openvino": "kdqat W2/A8 student (OpenVINO)"}


def feed(batch: int, seq: int, vocab: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(0).integers(1000, vocab, (batch, seq)).astype(np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def block_ms(run, inputs: dict, iterations: int) -> float:
    """ms per call over `iterations` calls, after a pause: onnxruntime's intra-op threads spin for a while after
    a run, and a session timed right after another one would share the cores with the other's spinning pool
    (measured: a 1x32 student looked 1.6x slower than alone)."""
    time.sleep(0.05)
    start = time.perf_counter()
    for _ in range(iterations):
        run(inputs)
    return (time.perf_counter() - start) / iterations * 1e3


def _has_openvino() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data-dir", help="GLUE_DIR for a GLUE run's dev set (default: the run's, else GLUE_DIR)")
    parser.add_argument("--shapes", default="1x128,8x128,32x128,1x32")
    parser.add_argument("--blocks", type=int, default=9)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--max-dev", type=int, help="score only the first N dev examples")
    parser.add_argument("--openvino", action=argparse.BooleanOptionalAction, default=_has_openvino(),
                        help="also time the student on OpenVINO (default: when openvino is installed)")
    parser.add_argument("--output", help="JSON file for the table (default RUN_DIR/bench/peers.json)")
    args = parser.parse_args(argv)

    run = open_run(args.run_dir)
    if run.spec.is_embedding:
        sys.exit(f"{run.root} is an embedding run: use benchmarks/embeddings.py")
    if run.teacher is None:
        sys.exit(f"{run.root}: its teacher folder is gone; the peer is built from the teacher")
    import torch

    torch.set_num_threads(args.threads)
    teacher = TorchEngine.teacher(run.teacher)
    with tempfile.TemporaryDirectory() as scratch:
        peer_path, peer_record = peer_graph(teacher.model, Path(scratch))
        deploy = run.root / "onnx" / "model.onnx"
        engines = {PYTORCH: teacher,
                   PEER: OrtEngine(peer_path, threads=args.threads, cpu_rewrites=False),
                   STUDENTS["ort"]: OrtEngine(deploy, threads=args.threads)}
        if args.openvino:
            from kdqat.runtime.openvino_engine import OpenVinoEngine

            engines[STUDENTS["openvino"]] = OpenVinoEngine(deploy, threads=args.threads)
        source = run.data_source(args.data_dir)
        split = run.spec.dev_splits[0]
        dev = source.load(split, args.max_dev)
        features = encode(dev, load_tokenizer(str(run.student)), run.max_seq_length)
        labels = np.asarray(dev["label"])
        scores = {name: task_metrics(run.spec, predict(e.run, features, 32), labels) for name, e in engines.items()}
        vocab = teacher.model.config.vocab_size
        rows = []
        for shape in args.shapes.split(","):
            batch, seq = (int(x) for x in shape.split("x"))
            inputs = feed(batch, seq, vocab)
            for engine in engines.values():
                engine.run(inputs)  # warm up
            times: dict[str, list[float]] = {name: [] for name in engines}
            for _ in range(args.blocks):
                for name, engine in engines.items():
                    times[name].append(block_ms(engine.run, inputs, args.iterations))
            row = {"batch": batch, "seq": seq, **{name: statistics.median(t) for name, t in times.items()}}
            ratios = []
            for key, student in STUDENTS.items():
                if student in row:
                    prefix = "student" if key == "ort" else f"student_{key}"
                    row[f"{prefix}_vs_peer"] = row[PEER] / row[student]
                    row[f"{prefix}_vs_pytorch"] = row[PYTORCH] / row[student]
                    ratios.append(f"{key} student vs peer {row[f'{prefix}_vs_peer']:.2f}x, vs PyTorch "
                                  f"{row[f'{prefix}_vs_pytorch']:.2f}x")
            rows.append(row)
            print(f"{batch:>3d} x {seq:<4d}" + "".join(f"  {row[n]:8.2f} ms" for n in engines) + "  " + "; ".join(ratios),
                  flush=True)
    metric = run.spec.metric
    for name, s in scores.items():
        print(f"{name:45s} dev {split} {metric}: {s.get(metric, next(iter(s.values()))):.2f}")
    out = Path(args.output) if args.output else run.root / "bench" / "peers.json"
    write_json(out, {"run": str(run.root), "task": run.task, "cpu": describe(cpu_info()), "threads": args.threads,
                     "peer": peer_record, "dev": {"split": split, "examples": len(labels), "scores": scores},
                     "latency_ms": rows, "args": vars(args)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
