"""The settings of a `kdqat train` run: one declaration of every option and its default (the command line
reads its defaults from here), per-task defaults, validation, and the rerun check. Light to import: no
torch, so `kdqat --help` stays fast."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from kdqat.config import QuantConfig
from kdqat.errors import KdqatError
from kdqat.glue.tasks import get_task
from kdqat.models import DEFAULT_MODEL
from kdqat.objectives import TRAIN_OBJECTIVES, get_objective
from kdqat import layout

OPTIMIZERS = ("bertadam", "adamw")
# The student's schedule. "kdqat" (the default): the paper's optimizer and schedule at the learning rate measured
# best on the default model (docs/results/glue.md, issue 12: STS-B 81.74 vs 76.22 Pearson and CoLA 19.93 vs 18.20 MCC
# against "paper"), with more epochs where 3 measured short. "paper": Kim et al.'s published recipe (REFERENCE.md,
# "Schedule"), for reproducing them. --learning-rate / --optimizer / --epochs override either.
RECIPES = {
    "paper": {"optimizer": "bertadam", "learning_rate": 2e-5, "epochs": 3.0},
    "kdqat": {"optimizer": "bertadam", "learning_rate": 1e-4, "epochs": 3.0},
}
# Per-task epochs of a recipe, where they differ from its "epochs". STS-B: every student's dev Pearson still rose at
# the end of 3 epochs; 6 closed most of the gap to the teacher (docs/results/glue.md, issue 12).
RECIPE_TASK_EPOCHS = {"kdqat": {"stsb": 6.0}}
# The teacher's epochs (AdamW, lr 1e-4): 6 where 3 measured short (docs/results/glue.md, issue 12, "Teachers"): dev CoLA
# MCC 24.41 at 3 epochs, 30.47 at 6 (its students +7 MCC); STS-B Pearson 85.41, 86.88 (+1.9). RTE stays at 3: its 6-epoch
# teacher (60.65 against 58.12, within its evaluation spread) distils map+output students 2.5 points worse.
TEACHER_EPOCHS = 3.0
TEACHER_TASK_EPOCHS = {"cola": 6.0, "stsb": 6.0}
# REFERENCE.md section 1: batch size / max sequence length per task; everything else is shared.
TASK_BATCH = {"cola": (16, 64), "sst2": (32, 64)}
DEFAULT_BATCH = (32, 128)
# Dev evaluation interval in steps: the paper's code uses 20 (RTE), 50 (CoLA), 100 (STS-B); the others are
# chosen for about 20-60 evaluations over 3 epochs of the full training set.
TASK_EVAL_STEPS = {"rte": 20, "mrpc": 20, "wnli": 10, "cola": 50, "stsb": 100, "sst2": 100,
                   "qnli": 500, "qqp": 1000, "mnli": 1000}
KEEP = ("best", "last")
MIN_SEQ_LENGTH = 8
# Your own data (not a GLUE task): batch 32 (16 below SMALL_TRAIN training rows), 128 tokens, and about
# EVALS_PER_EPOCH dev evaluations per epoch, never more often than every MIN_EVAL_STEPS steps.
SMALL_TRAIN, SMALL_BATCH = 1000, 16
EVALS_PER_EPOCH, MIN_EVAL_STEPS = 4, 20
# the data settings of a run (fields below), recorded in config.json and read back by the later stages
DATA_FIELDS = ("data_dir", "train_file", "validation_file", "test_file", "dataset", "dataset_config", "train_split",
               "validation_split", "test_split", "text_column", "text_pair_column", "label_column", "problem",
               "metric", "validation_fraction")


def file_task_eval_steps(n_train: int, batch_size: int) -> int:
    """The dev evaluation interval for your own data: about four evaluations per epoch, at least 20 steps apart."""
    steps_per_epoch = math.ceil(n_train / batch_size)
    return max(MIN_EVAL_STEPS, math.ceil(steps_per_epoch / EVALS_PER_EPOCH))


def recipe_defaults(recipe: str, task: str | None) -> dict[str, object]:
    """The optimizer, learning rate and epochs a recipe gives a task's student."""
    epochs = RECIPE_TASK_EPOCHS.get(recipe, {}).get(task, RECIPES[recipe]["epochs"])
    return {**RECIPES[recipe], "epochs": epochs}


@dataclass
class TrainOptions:
    """Everything that decides a run; saved as config.json beside its outputs."""

    task: str | None  # a GLUE task; with your own data, the run's name (default: the data's folder or dataset name)
    output_dir: str
    model: str = DEFAULT_MODEL
    teacher: str | None = None
    init_student: str | None = None
    data_dir: str | None = None
    # your own data instead of a GLUE task (kdqat.data): files, or a Hugging Face dataset and its splits
    train_file: str | None = None
    validation_file: str | None = None  # None: a stratified, seeded validation_fraction of train is held out
    test_file: str | None = None  # scored once, for the kept checkpoints; never used for selection
    dataset: str | None = None
    dataset_config: str | None = None
    train_split: str | None = None  # with --dataset: "train" unless given
    validation_split: str | None = None
    test_split: str | None = None
    text_column: str | None = None  # None: the usual names (kdqat.data.files)
    text_pair_column: str | None = None
    label_column: str | None = None
    problem: str | None = None  # None: from the labels (strings, integers: classification; floats: regression)
    metric: str | None = None  # selects checkpoints; None: accuracy (classification) or pearson (regression)
    validation_fraction: float = 0.1
    objective: str = "classification"  # or "embedding": distil a sentence-embedding model on unlabelled text
    embedding_loss: str = "cosine"  # the embedding term (objective embedding): cosine or mse
    kd: str = "map+output"
    gamma: float | None = None
    gamma_on: str | None = None
    weight_bits: int = 2
    act_bits: int = 8
    act_scale: str = "static"
    weight_scale: str = "tensor"
    recipe: str = "kdqat"
    epochs: float | None = None  # None: the recipe's
    max_steps: int = -1
    batch_size: int | None = None
    max_seq_length: int | None = None
    learning_rate: float | None = None  # None: the recipe's
    optimizer: str | None = None  # None: the recipe's
    teacher_learning_rate: float = 1e-4  # docs/results/glue.md: best on average over RTE / CoLA / STS-B
    teacher_epochs: float | None = None  # None: TEACHER_TASK_EPOCHS, else TEACHER_EPOCHS
    teacher_optimizer: str = "adamw"
    teacher_patience: int | None = None  # stop the teacher after N evaluations without a dev gain (kdqat.stopping)
    patience: int | None = None  # the same for the student
    min_improvement: float = 0.0  # the dev gain (metric points) that counts as one
    teacher_only: bool = False
    warmup: float = 0.1
    weight_decay: float = 0.01
    seed: int = 42
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    eval_steps: int | None = None
    keep: str = "best"
    keep_checkpoints: bool = False
    logging_steps: int = 20
    save_total_limit: int = 2
    progress: bool = True
    loss_weights: dict[str, float] = field(default_factory=dict)  # resolved from kd / gamma

    @property
    def uses_files(self) -> bool:
        """Your own data (files or a Hugging Face dataset) rather than a GLUE task."""
        return bool(self.train_file or self.dataset)

    @property
    def reads_data_first(self) -> bool:
        """The data decides the labels, batch size and evaluation interval (your own data, or an objective on
        unlabelled text): it is read before the options are resolved."""
        return self.uses_files or not get_objective(self.objective).labelled

    def data_settings(self) -> dict:
        return {name: getattr(self, name) for name in DATA_FIELDS}

    def check_data(self) -> None:
        """The data options fit together (before any file is read)."""
        if self.train_file and self.dataset:
            raise KdqatError("give --train-file or --dataset, not both")
        if self.objective not in TRAIN_OBJECTIVES:
            raise KdqatError(f"--objective {self.objective!r} is not one of {', '.join(TRAIN_OBJECTIVES)}")
        get_objective(self.objective).check_train_options(self)
        if self.dataset and (self.validation_file or self.test_file):
            raise KdqatError("with --dataset, name its splits (--validation-split, --test-split), not files")
        if self.train_file and any(getattr(self, n) for n in ("train_split", "validation_split", "test_split", "dataset_config")):
            raise KdqatError("--train-split/--validation-split/--test-split/--dataset-config apply to --dataset")
        if not 0.0 < self.validation_fraction < 1.0:
            raise KdqatError(f"--validation-fraction {self.validation_fraction}: must be in (0, 1)")
        if self.uses_files and self.data_dir is not None:
            raise KdqatError("--data-dir is the GLUE folder; with your own data give the files themselves")

    def resolve(self, n_train: int | None = None) -> TrainOptions:
        """Fill the per-task defaults and validate; returns a new object. Your own data needs `n_train`, the
        number of training rows, for its evaluation interval (file_task_eval_steps)."""
        from kdqat.losses import loss_weights  # torch: imported only when a run is really set up

        self.check_data()
        if self.recipe not in RECIPES:
            raise KdqatError(f"--recipe {self.recipe!r} is not one of {', '.join(RECIPES)}")
        if self.reads_data_first:
            if n_train is None:
                raise ValueError("resolve() of a run on your own data or text needs n_train")
            name = self.task if self.uses_files else get_task(self.task).name
            batch = self.batch_size or (SMALL_BATCH if n_train < SMALL_TRAIN else DEFAULT_BATCH[0])
            length, eval_steps = DEFAULT_BATCH[1], file_task_eval_steps(n_train, batch)
            teacher_epochs, recipe_task = TEACHER_EPOCHS, None
            extra = {"train_split": self.train_split or "train"} if self.dataset else {}
            # absolute paths: export, eval and serve read the files again, from wherever they are run
            extra.update({key: os.path.abspath(getattr(self, key)) for key in ("train_file", "validation_file", "test_file")
                          if getattr(self, key)})
        else:
            name = get_task(self.task).name
            batch, length = TASK_BATCH.get(name, DEFAULT_BATCH)
            eval_steps, teacher_epochs = TASK_EVAL_STEPS[name], TEACHER_TASK_EPOCHS.get(name, TEACHER_EPOCHS)
            recipe_task, extra = name, {}
        recipe = {k: v for k, v in recipe_defaults(self.recipe, recipe_task).items() if getattr(self, k) is None}
        resolved = dataclasses.replace(
            self,
            **recipe,
            **extra,
            task=name,
            batch_size=batch if self.batch_size is None else self.batch_size,
            max_seq_length=length if self.max_seq_length is None else self.max_seq_length,
            eval_steps=self.eval_steps if self.eval_steps is not None else eval_steps,
            teacher_epochs=self.teacher_epochs if self.teacher_epochs is not None else teacher_epochs,
            loss_weights=loss_weights(self.kd, self.gamma, self.gamma_on, get_objective(self.objective).prediction_term),
        )
        self.quant_config_of(resolved)
        resolved._check_numbers()
        for name in ("optimizer", "teacher_optimizer"):
            if getattr(resolved, name) not in OPTIMIZERS:
                raise KdqatError(f"--{name.replace('_', '-')} {getattr(resolved, name)!r} is not one of {', '.join(OPTIMIZERS)}")
        if resolved.keep not in KEEP:
            raise KdqatError(f"--keep {resolved.keep!r} is not one of {', '.join(KEEP)}")
        return resolved

    def _check_numbers(self) -> None:
        """Every numeric option in its range, named as on the command line."""
        def bad(name: str, rule: str) -> KdqatError:
            return KdqatError(f"--{name.replace('_', '-')} {getattr(self, name)}: {rule}")

        positive = ["batch_size", "logging_steps", "eval_steps", "save_total_limit", "max_train_samples", "max_eval_samples",
                    "teacher_patience", "patience"]
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise bad(name, "must be positive")
        if self.max_seq_length < MIN_SEQ_LENGTH:
            raise bad("max_seq_length", f"must be at least {MIN_SEQ_LENGTH} (the special tokens alone take 2-3)")
        for name in ("learning_rate", "teacher_learning_rate"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise bad(name, "must be a positive number")
        if self.max_steps == 0 or self.max_steps < -1:
            raise bad("max_steps", "must be positive (or -1: train for --epochs)")
        if self.max_steps <= 0:
            for name in ("epochs", "teacher_epochs"):
                if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                    raise bad(name, "must be positive (or give --max-steps)")
        if not (math.isfinite(self.min_improvement) and self.min_improvement >= 0):
            raise bad("min_improvement", "must be >= 0 (metric points)")
        if not 0.0 <= self.warmup < 1.0:
            raise bad("warmup", "must be a fraction of the steps in [0, 1)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise bad("weight_decay", "must be >= 0")
        if not 0 <= self.seed < 2**32:
            raise bad("seed", "must be in [0, 2^32)")

    @staticmethod
    def quant_config_of(opts: TrainOptions) -> QuantConfig:
        return QuantConfig.for_bits(opts.weight_bits, opts.act_bits, act_scale=opts.act_scale,
                                    weight_scale=opts.weight_scale)


# Fields that may change between an interrupted run and its resumption without changing the result; where a run
# lives (output_dir) is not one of its settings: a run folder copied or moved elsewhere resumes there.
RESUMABLE_CHANGES = {"progress", "logging_steps", "save_total_limit", "keep_checkpoints", "output_dir"}


# A stage's learning rate may change while that stage has neither checkpoints nor a saved model: it then starts
# over (what the divergence message tells a user to do: remove the stage's checkpoints, lower the rate).
RESTARTABLE = {"learning_rate": "student", "teacher_learning_rate": "teacher"}


def _stage_not_started(out: Path, stage: str) -> bool:
    return not layout.checkpoints(out, stage).exists() and not (out / stage / "config.json").exists()


def option_names() -> set[str]:
    """The settings a run's config.json may record (any other is another kdqat's)."""
    return {f.name for f in dataclasses.fields(TrainOptions)}


def check_resumable(out: Path, opts: TrainOptions) -> None:
    """Refuse to continue a run in `out` that was started with other settings."""
    saved_file = out / layout.CONFIG
    if not saved_file.is_file():
        return
    from kdqat.run_config import read_run_config

    saved = read_run_config(saved_file, option_names(),
                            "rerun with that kdqat version or choose another --output-dir")["options"]
    current = dataclasses.asdict(opts)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainOptions) if f.default is not dataclasses.MISSING}
    # a setting a run's kdqat did not have yet was that setting's default then
    diff = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k, defaults.get(k)) != current[k]
            and not (k in RESTARTABLE and _stage_not_started(out, RESTARTABLE[k]))]
    if diff:
        changes = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in diff)
        raise KdqatError(f"{out} holds a run with other settings ({changes}); use another --output-dir")


