"""`kdqat eval`: dev (and test) scores of the teacher, the PyTorch student and the student on another engine,
for a GLUE task or your own data (its validation and test files, or another --test-file)."""

from __future__ import annotations

from dataclasses import asdict
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
from kdqat.objectives import objective_of
from kdqat.glue.data import encode
from kdqat.eval.options import EvalOptions
from kdqat.eval.embedding_quality import embedder, knn_accuracy, labelled_texts, sts_spearman, stsb_pairs
from kdqat.parity import compare_embeddings, cosines
from kdqat.errors import KdqatError
from kdqat.io import check_output, write_json
from kdqat.models import load_tokenizer
from kdqat.run_dir import open_run
from kdqat.runtime.batching import predict
from kdqat.runtime.engine import ShapeProfile
from kdqat.layout import EVAL_DIR, deploy_graph
from kdqat.runtime.registry import REFERENCE, StudentSource, check_engine, open_engine, open_teacher


def evaluate_run(opts: EvalOptions, console: Console | None = None) -> dict:
    """Scores per dev split for each model, and how often the engine's student agrees with PyTorch's;
    also written to RUN_DIR/eval/<engine>.json."""
    run = open_run(opts.run_dir)
    objective = objective_of(run.spec)
    objective.check_eval_options(opts, run.root)
    if opts.test_file and run.spec.source == "glue":
        raise KdqatError(f"--test-file: {run.root} was trained on the GLUE task {run.task}, which is scored on its dev files")
    data_dir = opts.data_dir or (run.data_dir if run.data_dir and Path(run.data_dir).is_dir() else None)
    path = run.root / EVAL_DIR / f"{opts.engine}{'-static' if opts.static_shapes else ''}.json"  # beside the dynamic one
    check_output(path.parent, "eval output", folder=True)  # before, not after, the work
    check_output(path, "eval output")
    data = run.data_source(data_dir, test_file=opts.test_file)
    task = data.task
    tokenizer = load_tokenizer(str(run.student))
    models = {}
    if run.teacher is not None:
        models["teacher (fp32, PyTorch)"] = open_teacher(run.teacher)
    onnx_path = deploy_graph(run.root, opts.onnx)
    profile = ShapeProfile(1, opts.batch_size, opts.batch_size, 1, run.max_seq_length, run.max_seq_length)  # every batch sent
    source = StudentSource(run.student, onnx_path, opts.provider, profile=profile, static_shapes=opts.static_shapes)
    models[f"student ({check_engine(REFERENCE).label})"] = open_engine(REFERENCE, source)
    if opts.engine != REFERENCE:  # the reference against itself would say nothing
        fixed = f", static shapes {','.join(f'{b}x{n}' for b, n in opts.static_shapes)}" if opts.static_shapes else ""
        models[f"student ({check_engine(opts.engine).label}{fixed})"] = open_engine(opts.engine, source)
    result = {"task": task.name, "objective": objective.name, "metric": task.metric, "engine": opts.engine, "splits": {},
              "teacher": str(run.teacher) if run.teacher else None}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console or Console(stderr=True), disable=not opts.progress) as bar:
        if not objective.labelled:  # unlabelled text: scored against the float model, STS-B and kNN
            result.update(_embedding_scores(opts, data, data_dir, tokenizer, run.max_seq_length, models, bar))
            write_json(path, {**result, "options": asdict(opts)})
            return {**result, "file": str(path)}
        for split in data.splits:
            ds = data.load(split, opts.max_samples)
            features, labels = encode(ds, tokenizer, run.max_seq_length), np.asarray(ds["label"])
            logits = {}
            for name, engine in models.items():
                job = bar.add_task(f"{split}: {name}", total=len(labels))
                logits[name] = predict(engine.run, features, opts.batch_size, lambda n, j=job: bar.advance(j, n))
            record = {"examples": len(labels), "scores": {n: task_metrics(task, lg, labels) for n, lg in logits.items()}}
            names = [n for n in logits if n.startswith("student")]
            classes = class_report(task, logits[names[-1]], labels) if task.source != "glue" else {}
            if classes:  # per class, for the engine's student
                record["classes"] = classes
            if len(names) == 2:  # an engine running float parts in float16 is judged as export judges that graph
                fp16 = getattr(models[names[1]], "float16_parts", False)
                record["agreement"] = objective.compare(logits[names[0]], logits[names[1]], fp16=fp16).to_dict()
            result["splits"][split] = record
    write_json(path, {**result, "options": asdict(opts)})
    return {**result, "file": str(path)}


def _embedding_scores(opts: EvalOptions, data, data_dir: str | None, tokenizer, max_length: int, models: dict,
                      bar: Progress) -> dict:
    """Each model's STS-B dev Spearman (where GLUE data is found), kNN accuracy (with --knn-train/--knn-test) and
    mean cosine to the float model on the run's validation texts; the engine's agreement with PyTorch there."""
    def with_progress(name: str, engine):
        job = bar.add_task(name, total=None)
        return embedder(engine.run, tokenizer, max_length, opts.batch_size, lambda n: bar.advance(job, n))

    embeds = {name: with_progress(name, engine) for name, engine in models.items()}
    scores: dict[str, dict[str, float]] = {name: {} for name in models}
    validation = list(data.load(data.task.dev_splits[0], opts.max_samples)["text_a"])
    vectors = {name: embed(validation) for name, embed in embeds.items()}
    first = next(iter(vectors))
    if first.startswith("teacher"):  # the float model is there: every model's cosine to it
        for name, v in vectors.items():
            scores[name]["validation_cosine"] = 100.0 * float(cosines(vectors[first], v).mean())
    out = {"scores": scores, "validation_texts": len(validation),
           "knn": {"train": opts.knn_train, "test": opts.knn_test, "k": opts.knn_k} if opts.knn_train else None}
    from kdqat.glue.data import resolve_data_dir

    try:  # STS-B from a GLUE folder only: an optional score is not worth a round of network retries
        if resolve_data_dir(data_dir) is None:
            raise KdqatError("no --data-dir given and GLUE_DIR is unset (give a GLUE folder with STS-B/dev.tsv)")
        a, b, gold = stsb_pairs(data_dir)
    except KdqatError as e:
        out["skipped"] = f"STS-B dev not scored: {e}"
    else:
        limit = opts.max_samples or len(a)
        for name, embed in embeds.items():
            scores[name]["stsb_spearman"] = sts_spearman(embed, a[:limit], b[:limit], gold[:limit])
    if opts.knn_train and opts.knn_test:
        train_texts, train_labels = labelled_texts(opts.knn_train, "--knn-train")
        test_texts, test_labels = labelled_texts(opts.knn_test, "--knn-test")
        test_texts, test_labels = test_texts[:opts.max_samples], test_labels[:opts.max_samples]
        for name, embed in embeds.items():
            scores[name]["knn_accuracy"] = knn_accuracy(embed, train_texts, train_labels, test_texts, test_labels, opts.knn_k)
    students = [n for n in vectors if n.startswith("student")]
    if len(students) == 2:
        out["agreement"] = compare_embeddings(vectors[students[0]], vectors[students[1]]).to_dict()
    return out
