"""What every stage needs to know about a task, whatever its data source: its objective, its label names,
whether inputs are pairs, its splits and the metric that selects checkpoints. Plain data: what to do with a
task is its objective's (kdqat.objectives)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kdqat.errors import KdqatError

VALIDATION, TEST = "validation", "test"


@dataclass(frozen=True)
class TaskSpec:
    """A task as the later stages see it; recorded in the run's config.json (`task_spec`).

    source: "glue" (one of the nine GLUE tasks, read by kdqat.glue) or "files" (your own data).
    labels: label names in id order (the models' id2label); None for a regression (one score).
    metric: the metric that selects checkpoints, scored on dev_splits[0].
    test_split: a split scored once, for the kept checkpoints only (never used for selection).
    objective: the kdqat.objectives entry that says what to do with it: "classification", "regression" (one score,
    labels None) or "embedding" (sentence vectors; no labels, the dev splits hold texts whose float-model
    embeddings are the reference, scored by mean cosine).
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
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def primary_metric(self) -> str:
        """The selecting metric's key on the first dev split, e.g. "dev_accuracy", "validation_macro_f1"."""
        return f"{self.dev_splits[0]}_{self.metric}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config.json") -> TaskSpec:
        try:
            labels = tuple(data["labels"]) if data["labels"] is not None else None
            objective = data.get("objective", "classification")
            if objective == "classification" and labels is None:  # recorded so before regression had its own name
                objective = "regression"
            return cls(name=data["name"], source=data["source"], labels=labels, metric=data["metric"],
                       pair=bool(data["pair"]), dev_splits=tuple(data["dev_splits"]), test_split=data.get("test_split"),
                       objective=objective)
        except (KeyError, TypeError):
            raise KdqatError(f"{source}: task_spec is incomplete; rerun kdqat train") from None

