"""The `kdqat` command line: one command per stage."""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from kdqat.errors import KdqatError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Ternary-weight / 8-bit-activation QAT with distillation for BERT-style encoders.")
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """kdqat: train, export and serve ultra-low-bit BERT-style encoders."""


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    transformers.logging.set_verbosity_warning()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")


@app.command()
def train(
    task: str = typer.Option(..., help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli."),
    output_dir: str = typer.Option(..., help="Folder for teacher/, student/, metrics.json, logs and checkpoints."),
    model: str = typer.Option("default", help="Pretrained encoder: 'default' (all-MiniLM-L6-v2, shipped offline), a Hugging Face id or a local folder."),
    teacher: Optional[str] = typer.Option(None, help="Fine-tuned full-precision teacher folder; if omitted one is fine-tuned into OUTPUT_DIR/teacher."),
    data_dir: Optional[str] = typer.Option(None, help="GLUE_DIR-layout data folder (default: env GLUE_DIR, else the Hugging Face hub)."),
    kd: str = typer.Option("map+output", help="Distillation preset: ternarybert, map, output, map+output."),
    gamma: Optional[float] = typer.Option(None, help="Unified form: weight in [0, 1] of the loss named by --gamma-on (the other gets 1)."),
    gamma_on: Optional[str] = typer.Option(None, help="map or output: the loss --gamma multiplies."),
    weight_bits: int = typer.Option(2, help="Weight bits: 2 (ternary), 4, 8, 32 (off)."),
    act_bits: int = typer.Option(8, help="Activation bits: 8, or 32 (off)."),
    act_scale: str = typer.Option("static", help="Activation scales: static (running max, deployable) or dynamic (per batch, as the paper)."),
    epochs: float = typer.Option(3.0, help="Student training epochs."),
    max_steps: int = typer.Option(-1, help="Stop each stage after this many optimizer steps (overrides epochs)."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size (default per task: CoLA 16, others 32)."),
    max_seq_length: Optional[int] = typer.Option(None, help="Max tokens per example (default per task: CoLA/SST-2 64, others 128)."),
    learning_rate: float = typer.Option(2e-5, help="Student learning rate."),
    teacher_learning_rate: float = typer.Option(5e-5, help="Teacher fine-tuning learning rate."),
    teacher_epochs: float = typer.Option(3.0, help="Teacher fine-tuning epochs."),
    seed: int = typer.Option(42, help="Random seed (data order, dropout, head initialisation)."),
    max_train_samples: Optional[int] = typer.Option(None, help="Use only the first N training examples."),
    max_eval_samples: Optional[int] = typer.Option(None, help="Use only the first N dev examples."),
    eval_steps: Optional[int] = typer.Option(None, help="Evaluate and checkpoint every N steps (default: every epoch)."),
    logging_steps: int = typer.Option(20, help="Log the losses every N steps."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Fine-tune the teacher (unless given), then train the W2/A8 student with distillation."""
    _quiet_libraries()
    from kdqat.train import TrainOptions
    from kdqat.train import train as run_train

    opts = TrainOptions(**{k: v for k, v in locals().items() if k in TrainOptions.__dataclass_fields__})
    result = run_train(opts)
    if int(os.environ.get("RANK", "0")) == 0:  # one table under torchrun, not one per process
        print_metrics(result)


@app.command()
def report(
    runs: list[str] = typer.Argument(..., help="Output folders of kdqat train runs."),
    which: str = typer.Option("last", help="last (end of training, static scales) or best (best dev evaluation)."),
) -> None:
    """Print a Markdown table: teacher and each student, one column per task, and the average."""
    from eval.report import results_table

    print(results_table(runs, which))


def print_metrics(result: dict) -> None:
    metric = result["metric"]
    table = Table(title=f"{result['task']} dev ({metric})")
    table.add_column("model")
    table.add_column(metric, justify="right")
    table.add_row("teacher (fp32)", f"{result['teacher']['dev'][metric]:.2f}")
    student = result["student"]
    if student["best"]:
        table.add_row(f"student best (step {student['best']['step']})", f"{student['best']['dev'][metric]:.2f}")
    for mode, rec in student["last"].items():
        table.add_row(f"student last, {mode} scales", f"{rec['dev'][metric]:.2f}")
    Console().print(table)


def main() -> None:
    """Entry point: a KdqatError becomes one line on stderr and exit status 2."""
    try:
        app()
    except KdqatError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
