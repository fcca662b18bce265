"""The interface every objective implements: what a task's data holds, the model head, the prediction
distillation term, the metrics, how export's parity gate compares, and how an engine's output is answered.

The rest of kdqat asks a task's objective (`kdqat.objectives.objective_of(task)`) and never branches on its
name. A new objective is one module with a subclass of `Objective` and one entry in `kdqat.objectives.REGISTRY`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdqat.data.task import TaskSpec
from kdqat.errors import KdqatError
from kdqat.glue.tasks import get_task
from kdqat.parity import DECIDED_MARGIN, FP16_DECIDED_MARGIN, EmbeddingParity, Parity


class Objective:
    """One kind of task. Class attributes describe it; methods do what differs between kinds."""

    name: str  # the TaskSpec.objective it serves
    problem_type: str  # export.json's problem_type (transformers' name where it has one)
    metrics: tuple[str, ...]  # metrics that may select checkpoints; the first is the default
    lower_is_better: frozenset[str] = frozenset()
    labelled: bool = True  # its data holds a label per row (else unlabelled text, scored against a reference model)
    named_labels: bool = False  # its labels are class names (the model's id2label), not values
    prediction_term: str = "pred"  # the distillation term on the model's output (kdqat.losses)
    onnx_output: str = "logits"  # the exported graph's output
    triton_output: str = "LOGITS"  # the Triton ensemble's output
    routes: tuple[str, ...] = ("/v1/predict",)  # kdqat serve's POST routes for this kind of model
    serves: str = "is a classifier"  # how a refusal on another route describes the model
    gate_option: str = "min_agreement"  # the ExportOptions field its parity gate reads
    decided_rule: str = ">"  # how the parity table states which examples count as decided (margin above)

    # --- data and metrics -------------------------------------------------------------------------------------
    def check_train_options(self, opts) -> None:
        """`kdqat train`'s data options (TrainOptions) fit this objective; without your own data, a GLUE task and
        none of the options that only your own data reads."""
        if not opts.uses_files:
            for name in ("validation_file", "test_file", "text_column", "text_pair_column", "label_column", "problem",
                         "metric", "dataset_config", "train_split", "validation_split", "test_split"):
                if getattr(opts, name) is not None:
                    raise KdqatError(f"--{name.replace('_', '-')} applies to your own data: give --train-file or --dataset "
                                     "(GLUE tasks read their own columns and select on their own metric)")
            if opts.task is None:
                raise KdqatError("give --task (a GLUE task) or your own data with --train-file / --dataset")
            get_task(opts.task)

    def check_metric(self, metric: str) -> None:
        if metric not in self.metrics:
            raise KdqatError(f"--metric {metric!r} does not fit {self.described}; use one of {', '.join(self.metrics)}")

    @property
    def described(self) -> str:
        return f"a {self.name}"

    def greater_is_better(self, metric: str) -> bool:
        return metric not in self.lower_is_better

    def check_eval_options(self, opts, run: Path) -> None:
        """`kdqat eval`'s options (EvalOptions) fit a run of this objective."""
        if opts.knn_train:
            raise KdqatError(f"--knn-train/--knn-test score embedding runs; {run} is a {self.name} run")

    def scores(self, task: TaskSpec, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Every metric of `task` for model outputs against labels (percent, MSE in the label's units)."""
        raise NotImplementedError

    def class_report(self, task: TaskSpec, outputs: np.ndarray, labels: np.ndarray) -> dict:
        """Per-class precision/recall/F1 and the frequent confusions; empty where there are no classes."""
        return {}

    # --- distillation -----------------------------------------------------------------------------------------
    def prediction_loss(self, student, teacher, embedding_loss: str = "cosine"):
        """The `prediction_term` between student and teacher outputs (torch tensors)."""
        raise NotImplementedError

    # --- models and training ----------------------------------------------------------------------------------
    def start_model(self, model: str, task: TaskSpec):
        """The float model a teacher is fine-tuned from: a sequence classifier of the objective's problem type (the
        head newly initialised if absent)."""
        from kdqat.models import load_classifier

        return load_classifier(model, task, self.problem_type)

    def given_teacher(self, opts, task: TaskSpec):
        """The teacher `kdqat train` distils from without fine-tuning one (TrainOptions `opts`): --teacher's
        folder, checked against the task; None when the teacher is to be fine-tuned from --model."""
        from kdqat.models import checked_teacher

        return checked_teacher(opts.teacher, task) if opts.teacher else None

    def teacher_location(self, opts, out: Path) -> Path:
        """Where a run's teacher lives (recorded in metrics.json): --teacher, else the run's own teacher/."""
        return Path(opts.teacher) if opts.teacher else out / "teacher"

    def with_reference(self, dev: dict, teacher, batch_size: int) -> dict:
        """The tokenized dev sets as selection scores them: labelled rows as they are."""
        return dev

    def configure_student(self, student, opts) -> None:
        """Settings the student's saved folder records from the run (none for a classifier)."""

    def training_text(self, task: TaskSpec, opts) -> str:
        """What the student stage's console line says it distils on."""
        return task.name

    def reference_record(self, teacher, folder: Path, task: TaskSpec, dev: dict, opts) -> dict | None:
        """metrics.json's teacher record where the teacher is the reference itself; None: it is scored on dev."""
        return None

    def teacher_folder(self, root: Path, options: dict) -> Path | None:
        """A finished run's teacher folder: its own teacher/, else the --teacher it was given (relative to where it
        ran, or to the folder holding the run); None when neither is there."""
        candidates = [root / "teacher"]
        given = options.get("teacher")
        if given:
            candidates += [Path(given), root.parent / given]
        return next((c for c in candidates if (c / "config.json").is_file()), None)

    # --- export and engines -----------------------------------------------------------------------------------
    def compare(self, reference: np.ndarray, candidate: np.ndarray, fp16: bool = False) -> Parity | EmbeddingParity:
        """How close an engine's outputs are to the reference's; `fp16` for a graph whose float parts are float16."""
        raise NotImplementedError

    def parity_failure(self, parity: Parity | EmbeddingParity, minimum: float) -> str | None:
        """Why `parity` fails the export gate at `minimum` (the gate_option's value), or None when it passes."""
        if parity.decided_agreement >= minimum:
            return None
        return (f"predictions agree on only {parity.decided_agreement:.1%} of the {parity.decided} examples the "
                f"PyTorch student is decided on (all {parity.examples}: {parity.agreement:.1%}, max |diff| "
                f"{parity.max_abs_diff:.3g}); required {minimum:.1%}")

    def gate_value(self, option: float, reference: bool) -> float:
        """The gate's threshold: the option's value; against onnx.reference (the specification's own numbers,
        `reference`) no decided prediction may flip."""
        return 1.0 if reference else option

    def parity_columns(self) -> tuple[str, ...]:
        """The columns of `kdqat export`'s parity table."""
        return ("check", "examples", "agreement", "decided (margin)", "agreement there", "max |diff|")

    def parity_row(self, record: dict) -> list[str]:
        margin = "" if "margin" not in record else f" ({self.decided_rule} {record['margin']:g})"
        return [str(record["examples"]), f"{record['agreement']:.2%}", f"{record['decided']}{margin}",
                f"{record['decided_agreement']:.2%}", f"{record['max_abs_diff']:.2e}"]

    def export_fields(self, model) -> dict:
        """What export.json records about the model beyond its task and labels."""
        return {}

    # --- serving ----------------------------------------------------------------------------------------------
    def finish(self, outputs: np.ndarray) -> np.ndarray:
        """An engine call's outputs as answered (one vectorised step per call, on the engine thread)."""
        return outputs

    def answers(self, rows: np.ndarray, labels: list[str] | None) -> list[dict]:
        """Per input (rows from `finish`): what /v1/predict answers."""
        raise NotImplementedError


def decided_margin(fp16: bool) -> float:
    return FP16_DECIDED_MARGIN if fp16 else DECIDED_MARGIN
