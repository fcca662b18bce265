"""What `kdqat serve` serves: an exported run's engine, its tokenizer and max length, its task and labels.

The task, the labels and the sequence length come from the export's export.json, the tokenizer from the
export folder (runtime.serving_tokenizer: its tokenizer.json, run directly): the server tokenizes exactly as
`kdqat export` verified and `kdqat eval` scores.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdqat.errors import KdqatError
from kdqat.layout import deploy_graph, export_report
from kdqat.runtime.serve_options import ServeOptions
from kdqat.objectives import Objective, by_problem_type
from kdqat.run_dir import open_run
from kdqat.runtime.batching import Features

CPU_PARALLEL = ("ort", "openvino")  # engines whose CPU calls can run side by side, each on part of the cores


@dataclass
class ServedModel:
    task: str
    labels: list[str] | None  # None: a regression score (STS-B)
    pair: bool  # inputs are [text_a, text_b] pairs
    max_length: int
    tokenizer: Any  # runtime.serving_tokenizer: tokenizer(a, b) -> Features, tokenizer.counts(texts)
    engine: Any  # runtime.engine.Engine
    description: str
    objective: Objective  # what the engine's outputs are (logits, a score, embeddings) and how they are answered
    normalized: bool = False  # its vectors are L2-normalised (the model's Normalize module)
    alone: Any = None  # with parallel calls of few threads each: the engine on every core, for a call that runs alone

    def encode(self, inputs: list) -> Features:
        """Token ids of validated inputs (strings, or [a, b] pairs), unpadded, truncated to max_length."""
        a = [x[0] for x in inputs] if self.pair else list(inputs)
        return self.tokenizer(a, [x[1] for x in inputs] if self.pair else None)

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text, not truncated."""
        return self.tokenizer.counts(texts)

    def finish(self, outputs: np.ndarray) -> np.ndarray:
        """The engine's outputs of a whole call as answered (a classifier's logits as class probabilities: one
        vectorised softmax per call, on the engine thread, not one per request on the event loop)."""
        return self.objective.finish(outputs)

    def answers(self, rows: np.ndarray) -> list[dict]:
        """Per input (rows from `finish`): the label and its probabilities, or the score."""
        return self.objective.answers(rows, self.labels)


@dataclass(frozen=True)
class Layout:
    """How a server uses the machine: `workers` processes (each a whole server on the same port), each running
    `calls` engine calls at once on `threads` onnxruntime threads per call (None: the engine's own threading)."""

    workers: int
    calls: int
    threads: int | None


def serving_layout(engine: str, provider: str, workers: int = 0, calls: int = 0, cores: int | None = None,
                   platform: str = sys.platform) -> Layout:
    """The server's processes and engine calls. 0 picks: onnxruntime or OpenVINO on a CPU with two or more cores
    runs two worker processes, each one engine call at a time on half the cores (on 2 cores, 1.14-1.20x the
    requests/s of two calls in one process on 12-token inputs, 1.08-1.12x on varied ones: the event loop and the
    engine threads no longer share one interpreter lock; docs/results/serving.md, "Two server processes"); one process
    (`workers` 1) runs two calls at once instead; a GPU engine or PyTorch, one process and one call with its own
    threading. A call on part of the cores comes with a session on every core for a lone client. Worker processes
    need Linux: its SO_REUSEPORT spreads connections over them (elsewhere the default is one process)."""
    cpu = engine in CPU_PARALLEL and provider == "cpu"
    cores = cores or os.cpu_count() or 1
    for name, value in (("--workers", workers), ("--engine-calls", calls)):
        if value < 0:
            raise KdqatError(f"{name} {value}: must be 0 (choose) or positive")
    linux = platform.startswith("linux")
    if workers > 1 and not linux:
        raise KdqatError(f"--workers {workers}: several server processes need Linux (its SO_REUSEPORT spreads "
                         f"connections over them; not on {platform}): use --workers 1")
    workers = workers or (2 if cpu and cores >= 2 and linux else 1)
    calls = calls or (2 if cpu and cores >= 2 and workers == 1 else 1)
    for name, value, what in (("--workers", workers, "several server processes"), ("--engine-calls", calls, "parallel calls")):
        if value > 1 and not cpu:
            raise KdqatError(f"{name} {value}: {what} are for onnxruntime or OpenVINO on the CPU (--engine ort "
                             "--provider cpu, --engine openvino); a GPU engine or PyTorch runs one call at a time")
    parallel = workers * calls
    return Layout(workers, calls, max(1, cores // parallel) if cpu and parallel > 1 else None)


def open_served(run_dir: str | Path, engine: str = ServeOptions.engine, provider: str = ServeOptions.provider,
                model: str = ServeOptions.model, onnx: str | Path | None = None, threads: int | None = None) -> ServedModel:
    """Open an exported run for serving: the student on `engine` (onnxruntime: `threads` per call), or the float
    teacher (PyTorch)."""
    from kdqat.runtime.registry import StudentSource, check_engine, open_engine, open_teacher
    from kdqat.runtime.serving_tokenizer import open_tokenizer

    spec = check_engine(engine)
    run = open_run(run_dir)
    graph = deploy_graph(run.root, onnx)
    report_file = export_report(graph)
    if not report_file.is_file():
        raise KdqatError(f"{report_file}: missing; run kdqat export {run.root} first (the server reads the task, "
                         "labels and sequence length the export verified)")
    try:
        report = json.loads(report_file.read_text())
        report["task"], report["labels"], report["max_seq_length"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise KdqatError(f"{report_file}: damaged (not the JSON kdqat export writes); run kdqat export {run.root} again") from None
    pair = report["pair"] if "pair" in report else run.spec.pair  # export.json from before "pair" was written
    if model == "teacher":
        if engine != "torch":
            raise KdqatError("--model teacher runs the float teacher in PyTorch: use --engine torch")
        if run.teacher is None:
            raise KdqatError(f"{run.root}: no teacher folder to serve (the run was given one that is not there)")
        runner, description = open_teacher(run.teacher), f"teacher fp32 (torch) from {run.teacher}"
        alone = None
    else:
        runner = open_engine(engine, StudentSource(run.student, graph, provider, threads=threads))
        alone = open_engine(engine, StudentSource(run.student, graph, provider)) if threads is not None else None
        description = f"student ({spec.label}) of {run.root}"
    tokenizer = open_tokenizer(graph.parent, int(report["max_seq_length"]))
    return ServedModel(report["task"], report["labels"], pair, int(report["max_seq_length"]), tokenizer, runner,
                       description, by_problem_type(report.get("problem_type")),
                       bool(report.get("pooling", {}).get("normalize")), alone)
