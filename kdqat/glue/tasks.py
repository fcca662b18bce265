"""The nine GLUE tasks: file layout, columns, labels and metrics of each."""

from __future__ import annotations

from dataclasses import dataclass

from kdqat.errors import KdqatError


@dataclass(frozen=True)
class Column:
    """A column of a GLUE_DIR TSV, by header name, or by position for header-less files (CoLA)."""

    name: str
    index: int | None = None


@dataclass(frozen=True)
class GlueTask:
    name: str
    dir_name: str  # folder inside GLUE_DIR
    text_a: Column
    text_b: Column | None
    label: Column
    labels: tuple[str, ...] | None  # label strings as written in the files, in the hub's id order; None = regression
    metric: str  # the task's own metric: used to select the best checkpoint and to report
    dev_splits: tuple[str, ...] = ("dev",)
    has_header: bool = True
    hub_columns: tuple[str, str | None] = ("sentence", None)
    score_range: tuple[float, float] | None = None  # regression: the scores a label may take

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def primary_metric(self) -> str:
        """The key of the task's own metric on its first dev split, e.g. "dev_accuracy", "dev_matched_accuracy"."""
        return f"{self.dev_splits[0]}_{self.metric}"

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


BINARY = ("0", "1")
ENTAILMENT = ("entailment", "not_entailment")

TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask("cola", "CoLA", Column("sentence", 3), None, Column("label", 1), BINARY, "mcc", has_header=False),
        GlueTask("sst2", "SST-2", Column("sentence"), None, Column("label"), BINARY, "accuracy"),
        GlueTask("mrpc", "MRPC", Column("#1 String"), Column("#2 String"), Column("Quality"), BINARY, "f1",
                 hub_columns=("sentence1", "sentence2")),
        GlueTask("stsb", "STS-B", Column("sentence1"), Column("sentence2"), Column("score"), None, "pearson",
                 hub_columns=("sentence1", "sentence2"), score_range=(0.0, 5.0)),
        GlueTask("qqp", "QQP", Column("question1"), Column("question2"), Column("is_duplicate"), BINARY, "f1",
                 hub_columns=("question1", "question2")),
        GlueTask("mnli", "MNLI", Column("sentence1"), Column("sentence2"), Column("gold_label"),
                 ("entailment", "neutral", "contradiction"), "accuracy",
                 dev_splits=("dev_matched", "dev_mismatched"), hub_columns=("premise", "hypothesis")),
        GlueTask("qnli", "QNLI", Column("question"), Column("sentence"), Column("label"), ENTAILMENT, "accuracy",
                 hub_columns=("question", "sentence")),
        GlueTask("rte", "RTE", Column("sentence1"), Column("sentence2"), Column("label"), ENTAILMENT, "accuracy",
                 hub_columns=("sentence1", "sentence2")),
        GlueTask("wnli", "WNLI", Column("sentence1"), Column("sentence2"), Column("label"), BINARY, "accuracy",
                 hub_columns=("sentence1", "sentence2")),
    )
}

# The usual spellings users type.
ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli"}


def get_task(name: str) -> GlueTask:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise KdqatError(f"--task {name!r} is not a GLUE task; use one of {', '.join(TASKS)}")
    return TASKS[key]
