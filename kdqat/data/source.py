"""The one interface every stage reads examples through: a `DataSource` gives a task's `TaskSpec` and its splits
as Datasets with columns text_a, text_b (pairs) and label. Two sources: GLUE (kdqat.glue) and your own files or
Hugging Face dataset (kdqat.data.files). A run records its data settings and label names (config.json), so
export, eval and serve rebuild the same source from the run folder.
"""

from __future__ import annotations

import re
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset

from kdqat.data.files import Columns, choose_columns, hold_out, label_names, problem_of, read_file, standardize
from kdqat.data.base import DataSource, first_rows, hub_split
from kdqat.data.task import TEST, VALIDATION, TaskSpec
from kdqat.data.texts import TextSource, embedding_spec
from kdqat.objectives import get_objective, objective_of
from kdqat.errors import KdqatError

def glue_spec(name: str) -> TaskSpec:
    from kdqat.glue.tasks import get_task

    task = get_task(name)
    return TaskSpec(name=task.name, source="glue", labels=task.labels, metric=task.metric, pair=task.text_b is not None,
                    dev_splits=task.dev_splits, objective="regression" if task.is_regression else "classification")


@dataclass
class GlueSource(DataSource):
    data_dir: str | None = None

    def load(self, split: str, max_samples: int | None = None) -> Dataset:
        from kdqat.glue.data import load_split
        from kdqat.glue.tasks import get_task

        return load_split(get_task(self.task.name), split, self.data_dir, max_samples)


@dataclass
class FileSource(DataSource):
    """Your files or hub dataset: splits standardized once and kept (Arrow, memory-mapped)."""

    settings: dict = field(default_factory=dict)
    columns: Columns | None = None
    raw: dict[str, tuple[Dataset, str]] = field(default_factory=dict)  # split -> (rows as read, where from)
    seed: int = 42
    _ready: dict[str, Dataset] = field(default_factory=dict)  # filled on the first load

    def load(self, split: str, max_samples: int | None = None) -> Dataset:
        if not self._ready:
            self._ready = self._standardized()
        if split not in self._ready:
            raise KdqatError(f"no {split} data: give --{split}-file (or --{split}-split with --dataset)")
        return first_rows(self._ready[split], max_samples)

    def _standardized(self) -> dict[str, Dataset]:
        """Every split checked and converted; without validation data, a held-out slice of train."""
        ready = {split: standardize(ds, self.columns, self.task.labels, origin) for split, (ds, origin) in self.raw.items()}
        if VALIDATION not in ready:
            ready["train"], ready[VALIDATION] = hold_out(ready["train"], self.settings["validation_fraction"], self.seed,
                                                         stratify=self.task.labels is not None)
        return ready


def read_raw(settings: dict) -> dict[str, tuple[Dataset, str]]:
    """The splits named by the data settings, as read (not yet checked): split -> (Dataset, origin)."""
    raw = {}
    if settings.get("dataset"):
        name, config = settings["dataset"], settings.get("dataset_config")
        for split, option in (("train", "--train-split"), (VALIDATION, "--validation-split"), (TEST, "--test-split")):
            chosen = settings.get(f"{split}_split")
            if chosen:
                raw[split] = hub_split(name, config, chosen, option)
        return raw
    for split in ("train", VALIDATION, TEST):
        path = settings.get(f"{split}_file")
        if path:
            raw[split] = (read_file(path, f"--{split}-file"), str(path))
    return raw


def open_file_source(settings: dict, name: str, seed: int, labels: tuple[str, ...] | None = None,
                     problem: str | None = None) -> FileSource:
    """Read your data, choose columns, find the problem type and label names (sorted, unless `labels` gives
    them, e.g. in a teacher's order); nothing is tokenized yet."""
    raw = read_raw(settings)
    train, origin = raw["train"]
    for split, (ds, where_from) in raw.items():
        missing = sorted(set(train.column_names) - set(ds.column_names))
        if missing:
            raise KdqatError(f"{where_from}: lacks the column(s) {', '.join(missing)} that {origin} has; "
                             f"its columns: {', '.join(ds.column_names)}")
    columns = choose_columns(train.column_names, origin, settings.get("text_column"),
                             settings.get("text_pair_column"), settings.get("label_column"))
    problem = problem or problem_of(train, columns.label, settings.get("problem"), origin)
    objective = get_objective(problem)
    metric = settings.get("metric") or objective.metrics[0]
    objective.check_metric(metric)
    if objective.named_labels and labels is None:
        labels = label_names(train, columns.label, origin)
    spec = TaskSpec(name=name, source="files", labels=tuple(labels) if objective.named_labels else None, metric=metric,
                    pair=columns.pair is not None, dev_splits=(VALIDATION,), test_split=TEST if TEST in raw else None,
                    objective=objective.name)
    return FileSource(spec, settings=settings, columns=columns, raw=raw, seed=seed)


def task_name_of(settings: dict, given: str | None) -> str:
    """--task when given with your own data, else the dataset's name or the train file's folder name."""
    if given:
        name = given
    elif settings.get("dataset"):
        name = settings["dataset"].rstrip("/").split("/")[-1]
    else:
        path = Path(settings["train_file"]).resolve()
        name = path.parent.name or path.stem
    # the name becomes Triton model names and table headers: letters, digits, '_', '-', '.'
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "data"


def source_for_run(spec: TaskSpec, settings: dict, seed: int, data_dir: str | None = None) -> DataSource:
    """The data source of a finished run, from its recorded task and data settings (later stages)."""
    if not objective_of(spec).labelled:
        return TextSource(spec, settings={**settings, "data_dir": data_dir or settings.get("data_dir")}, seed=seed)
    if spec.source == "glue":
        return GlueSource(spec, data_dir if data_dir is not None else settings.get("data_dir"))
    source = open_file_source(settings, spec.name, seed, labels=spec.labels,
                              problem=spec.objective)
    if (source.columns.pair is not None) != spec.pair:
        raise KdqatError(f"the data now has {'a' if source.columns.pair else 'no'} text pair column; the run was trained "
                         f"{'with' if spec.pair else 'without'} one")
    source.task = spec
    return source


def open_source(opts) -> DataSource:
    """The data of a `kdqat train` run (TrainOptions): a GLUE task, or your files / dataset, whose label order
    follows a given --teacher's id2label (matched by name) so that the teacher's head is used as it is."""
    from kdqat.models import generic_labels, label_order, model_label_names

    opts.check_data()
    if not get_objective(opts.objective).labelled:
        if opts.uses_files:
            spec = embedding_spec(task_name_of(opts.data_settings(), opts.task), "files")
        else:
            spec = embedding_spec(glue_spec(opts.task).name, "glue")
        return TextSource(spec, settings=opts.data_settings(), seed=opts.seed)
    if not opts.uses_files:
        return GlueSource(glue_spec(opts.task), opts.data_dir)
    settings = opts.data_settings()
    source = open_file_source(settings, task_name_of(settings, opts.task), opts.seed)
    teacher_labels = model_label_names(opts.teacher) if opts.teacher else None
    # generic names (LABEL_i) keep the data's order: load_teacher matches them by index, with its warning
    if teacher_labels is not None and source.task.labels is not None and not generic_labels(teacher_labels):
        order = label_order(source.task.labels, teacher_labels, "--teacher", opts.teacher)
        source.task = dataclasses.replace(source.task, labels=order)
    return source
