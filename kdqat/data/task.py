"""What every stage needs to know about a task, whatever its data source: its label names (or that it is a
regression), whether inputs are pairs, its splits and the metric that selects checkpoints."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kdqat.errors import KdqatError

# the metric that selects checkpoints, per problem type; the first is the default (`--metric`)
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "weighted_f1")
REGRESSION_METRICS = ("pearson", "spearman", "mse")
EMBEDDING_METRIC = "cosine"  # mean cosine similarity of the student's embeddings to the float model's
OBJECTIVES = ("classification", "embedding")
EMBEDDING_LOSSES = ("cosine", "mse")  # how the embedding term compares student and float vectors
LOWER_IS_BETTER = {"mse"}
VALIDATION, TEST = "validation", "test"


@dataclass(frozen=True)
class TaskSpec:
    """A task as the later stages see it; recorded in the run's config.json (`task_spec`).

    source: "glue" (one of the nine GLUE tasks, read by kdqat.glue) or "files" (your own data).
    labels: label names in id order (the models' id2label); None for a regression (one score).
    metric: the metric that selects checkpoints, scored on dev_splits[0].
    test_split: a split scored once, for the kept checkpoints only (never used for selection).
    objective: "classification" (labels or a regression score) or "embedding" (sentence vectors; no labels, the
    dev splits hold texts whose float-model embeddings are the reference, scored by mean cosine).
    """

    name: str
    source: str
    labels: tuple[str, ...] | None
    metric: str
    pair: bool
    dev_splits: tuple[str, ...] = (VALIDATION,)
    test_split: str | None = None
    objective: str = "classification"

    @property
    def is_embedding(self) -> bool:
        return self.objective == "embedding"

    @property
    def is_regression(self) -> bool:
        return self.labels is None and not self.is_embedding

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def primary_metric(self) -> str:
        """The selecting metric's key on the first dev split, e.g. "dev_accuracy", "validation_macro_f1"."""
        return f"{self.dev_splits[0]}_{self.metric}"

    @property
    def greater_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config.json") -> TaskSpec:
        try:
            return cls(name=data["name"], source=data["source"],
                       labels=tuple(data["labels"]) if data["labels"] is not None else None,
                       metric=data["metric"], pair=bool(data["pair"]), dev_splits=tuple(data["dev_splits"]),
                       test_split=data.get("test_split"), objective=data.get("objective", "classification"))
        except (KeyError, TypeError):
            raise KdqatError(f"{source}: task_spec is incomplete; rerun kdqat train") from None


def check_metric(metric: str, regression: bool) -> None:
    allowed = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
    if metric not in allowed:
        kind = "a regression" if regression else "a classification"
        raise KdqatError(f"--metric {metric!r} does not fit {kind}; use one of {', '.join(allowed)}")
