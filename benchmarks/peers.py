"""The student against what a user would do instead, on one machine in one process: PyTorch fp32 (the teacher),
the peer (onnxruntime BERT fusions + quantize_dynamic int8 of the teacher, kdqat.export.peer) and the kdqat
W2/A8 student (the exported deploy graph on onnxruntime, and on OpenVINO where installed: with dynamic shapes, and
with a model compiled for each measured shape beside the peer told the same shape), at batch x sequence 1x128,
8x128, 32x128, 1x32, with the dev score of each, so that a speed figure always comes with the accuracy it costs.

    python benchmarks/peers.py RUN_DIR [--data-dir ../shared/glue] [--output peers.json]

RUN_DIR: a classification or regression run after `kdqat export` (timed and scored on its dev set), or an embedding
run (timed only: its quality, STS-B and CLINC150 kNN, is benchmarks/embeddings.py's; the peer ends in the pooled,
normalised embedding like the student). Latency: the median of --blocks blocks of --iterations calls,
each block after a pause and --warmup calls (the first call after the pause is recorded apart), the models
interleaved block by block (a slow phase of the machine hits each alike), full-length random token ids,
--threads intra-op threads (default: every core). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from kdqat.export.peer import peer_graph
from kdqat.data.metrics import task_metrics
from kdqat.objectives import objective_of
from kdqat.errors import KdqatError
from kdqat.glue.data import encode
from kdqat.io import write_json
from kdqat.models import load_tokenizer
from kdqat.run_dir import open_run
from kdqat.runtime.batching import predict
from kdqat.runtime.cpu_info import cpu_info, describe
from kdqat.runtime.ort_engine import OrtEngine
from kdqat.runtime.registry import parse_shapes
from kdqat.runtime.timing import Block, random_batch, timed_block
from kdqat.runtime.torch_engine import TorchEngine


PYTORCH, PEER = "PyTorch fp32 (teacher)", "peer: onnxruntime dynamic int8 (fused)"
PEER_FIXED = "peer, fixed shapes"
STUDENTS = {"ort": "kdqat W2/A8 student (onnxruntime)", "openvino": "kdqat W2/A8 student (OpenVINO)",
            "openvino_static": "kdqat W2/A8 student (OpenVINO, fixed shapes)"}


class FixedShapeOrt:
    """An onnxruntime session told the one batch x sequence shape it will see (free-dimension overrides), the
    onnxruntime counterpart of a fixed-shape OpenVINO model: the fair peer of `--openvino-static`."""

    def __init__(self, path: Path, threads: int, batch: int, seq: int) -> None:
        import onnx
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        for graph_input in onnx.load(str(path), load_external_data=False).graph.input:
            for dim, value in zip(graph_input.type.tensor_type.shape.dim, (batch, seq)):
                if dim.dim_param:
                    options.add_free_dimension_override_by_name(dim.dim_param, value)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {k: batch[k] for k in self.input_names})[0]


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
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls at the start of each block (>= 1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--max-dev", type=int, help="score only the first N dev examples")
    parser.add_argument("--openvino", action=argparse.BooleanOptionalAction, default=_has_openvino(),
                        help="also time the student on OpenVINO (default: when openvino is installed)")
    parser.add_argument("--openvino-static", action=argparse.BooleanOptionalAction, default=True,
                        help="with --openvino, also on models compiled for each fixed shape (default: on)")
    parser.add_argument("--output", help="JSON file for the table (default RUN_DIR/bench/peers.json)")
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be 1 or more (the first call after each pause is a warm-up call)")
    try:
        shapes = parse_shapes(args.shapes, "--shapes")
    except KdqatError as e:
        parser.error(str(e))

    run = open_run(args.run_dir)
    objective = objective_of(run.spec)
    if run.teacher is None:
        sys.exit(f"{run.root}: its teacher folder is gone; the peer is built from the teacher")
    import torch

    torch.set_num_threads(args.threads)
    teacher = TorchEngine.teacher(run.teacher)
    with tempfile.TemporaryDirectory() as scratch:
        peer_path, peer_record = peer_graph(teacher.model, Path(scratch), objective.onnx_output)
        deploy = run.root / "onnx" / "model.onnx"
        engines = {PYTORCH: teacher,
                   PEER: OrtEngine(peer_path, threads=args.threads, cpu_rewrites=False),
                   STUDENTS["ort"]: OrtEngine(deploy, threads=args.threads)}
        if args.openvino:
            from kdqat.runtime.openvino_engine import OpenVinoEngine

            engines[STUDENTS["openvino"]] = OpenVinoEngine(deploy, threads=args.threads)
            if args.openvino_static:
                engines[STUDENTS["openvino_static"]] = OpenVinoEngine(deploy, threads=args.threads, static_shapes=shapes)
        split, labels, scores = None, [], {}
        if objective.labelled:
            source = run.data_source(args.data_dir)
            split = run.spec.dev_splits[0]
            dev = source.load(split, args.max_dev)
            features = encode(dev, load_tokenizer(str(run.student)), run.max_seq_length)
            labels = np.asarray(dev["label"])
            # dev batches of 32 are padded to the fixed shape 32 x 128 where it is among --shapes (and
            # run.max_seq_length <= 128); batches that fit no fixed shape run on the dynamic model
            scores = {name: task_metrics(run.spec, predict(e.run, features, 32), labels) for name, e in engines.items()}
        vocab = teacher.model.config.vocab_size
        rows = []
        fixed_peer = STUDENTS["openvino_static"] in engines  # its fair peer: the peer's graph told each shape
        print("ms per call, steady (after each block's warm-up):", " | ".join([*engines, *[PEER_FIXED] * fixed_peer]))
        for batch, seq in shapes:
            inputs = random_batch(batch, seq, vocab, special=(101, 102))
            timed = {**engines, **({PEER_FIXED: FixedShapeOrt(peer_path, args.threads, batch, seq)} if fixed_peer else {})}
            outputs = {name: engine.run(inputs) for name, engine in timed.items()}  # also the first, untimed call
            times: dict[str, list[Block]] = {name: [] for name in timed}
            for _ in range(args.blocks):
                for name, engine in timed.items():
                    times[name].append(timed_block(engine.run, inputs, args.iterations, args.warmup))
            row = {"batch": batch, "seq": seq,
                   **{name: statistics.median(b.steady_ms for b in blocks) for name, blocks in times.items()},
                   "first_call_after_pause_ms": {name: statistics.median(b.first_ms for b in blocks)
                                                 for name, blocks in times.items()}}
            if STUDENTS["openvino_static"] in outputs:
                row["openvino_fixed_vs_dynamic_max_abs_diff"] = float(np.abs(
                    outputs[STUDENTS["openvino_static"]] - outputs[STUDENTS["openvino"]]).max())
                row["student_openvino_static_vs_peer_fixed"] = row[PEER_FIXED] / row[STUDENTS["openvino_static"]]
            ratios = []
            for key, student in STUDENTS.items():
                if student in row:
                    prefix = "student" if key == "ort" else f"student_{key}"
                    row[f"{prefix}_vs_peer"] = row[PEER] / row[student]
                    row[f"{prefix}_vs_pytorch"] = row[PYTORCH] / row[student]
                    ratios.append(f"{key} vs peer {row[f'{prefix}_vs_peer']:.2f}x, vs PyTorch "
                                  f"{row[f'{prefix}_vs_pytorch']:.2f}x")
            if PEER_FIXED in row:
                ratios.append(f"openvino_static vs peer fixed {row['student_openvino_static_vs_peer_fixed']:.2f}x")
            rows.append(row)
            print(f"{batch:>3d} x {seq:<4d}" + "".join(f"  {row[n]:8.2f} ms" for n in timed) + "  " + "; ".join(ratios),
                  flush=True)
            print("          first call after the pause:" + "".join(
                f"  {ms:8.2f} ms" for ms in row["first_call_after_pause_ms"].values()), flush=True)
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
