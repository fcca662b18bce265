"""`kdqat eval`: dev (and test) scores of the teacher, the PyTorch student and the student on another engine,
for a GLUE task or your own data (its validation and test files, or another --test-file)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from kdqat.data.metrics import class_report, task_metrics
from kdqat.glue.data import encode
from kdqat.runtime.parity import compare
from kdqat.errors import KdqatError
from kdqat.io import check_output, write_json
from kdqat.models import load_tokenizer
from kdqat.run_dir import open_run
from kdqat.runtime.batching import predict
from kdqat.runtime.trt_engine import ShapeProfile
from kdqat.runtime.registry import REFERENCE, StudentSource, check_engine, open_engine
from kdqat.runtime.torch_engine import TorchEngine


@dataclass(frozen=True)
class EvalOptions:
    run_dir: str
    engine: str = "ort"
    onnx: str | None = None  # default RUN_DIR/onnx/model.onnx
    provider: str = "cpu"
    data_dir: str | None = None
    batch_size: int = 32
    max_samples: int | None = None
    progress: bool = True
    test_file: str | None = None  # your own data: score this file as the test split (the run's columns and labels)


def evaluate_run(opts: EvalOptions, console: Console | None = None) -> dict:
    """Scores per dev split for each model, and how often the engine's student agrees with PyTorch's;
    also written to RUN_DIR/eval/<engine>.json."""
    run = open_run(opts.run_dir)
    if opts.test_file and run.spec.source == "glue":
        raise KdqatError(f"--test-file: {run.root} was trained on the GLUE task {run.task}, which is scored on its dev files")
    data_dir = opts.data_dir or (run.data_dir if run.data_dir and Path(run.data_dir).is_dir() else None)
    path = run.root / "eval" / f"{opts.engine}.json"
    check_output(path.parent, "eval output", folder=True)  # before, not after, the work
    check_output(path, "eval output")
    data = run.data_source(data_dir, test_file=opts.test_file)
    task = data.task
    tokenizer = load_tokenizer(str(run.student))
    models = {}
    if run.teacher is not None:
        models["teacher (fp32, PyTorch)"] = TorchEngine.teacher(run.teacher)
    onnx_path = Path(opts.onnx) if opts.onnx else run.root / "onnx" / "model.onnx"
    profile = ShapeProfile(1, opts.batch_size, opts.batch_size, 1, run.max_seq_length, run.max_seq_length)  # every batch sent
    source = StudentSource(run.student, onnx_path, opts.provider, profile=profile)
    models[f"student ({check_engine(REFERENCE).label})"] = open_engine(REFERENCE, source)
    if opts.engine != REFERENCE:  # the reference against itself would say nothing
        models[f"student ({check_engine(opts.engine).label})"] = open_engine(opts.engine, source)
    result = {"task": task.name, "metric": task.metric, "engine": opts.engine, "splits": {},
              "teacher": str(run.teacher) if run.teacher else None}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console or Console(stderr=True), disable=not opts.progress) as bar:
        for split in data.splits:
            ds = data.load(split, opts.max_samples)
            features, labels = encode(ds, tokenizer, run.max_seq_length), np.asarray(ds["label"])
            logits = {}
            for name, engine in models.items():
                job = bar.add_task(f"{split}: {name}", total=len(labels))
                logits[name] = predict(engine.run, features, opts.batch_size, lambda n, j=job: bar.advance(j, n))
            record = {"examples": len(labels), "scores": {n: task_metrics(task, lg, labels) for n, lg in logits.items()}}
            names = [n for n in logits if n.startswith("student")]
            if task.source != "glue" and not task.is_regression:  # per class, for the engine's student
                record["classes"] = class_report(task, logits[names[-1]], labels)
            if len(names) == 2:
                record["agreement"] = compare(logits[names[0]], logits[names[1]], task.is_regression).to_dict()
            result["splits"][split] = record
    write_json(path, {**result, "options": asdict(opts)})
    return {**result, "file": str(path)}
