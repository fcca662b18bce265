"""Scores for any task, from its objective (kdqat.objectives): GLUE's own metrics for GLUE tasks; for your data
accuracy, macro- and weighted-F1 (classification) or Pearson, Spearman and MSE (regression), and a per-class
report with the most frequent confusions. Percentages (x100) except MSE, in the label's own units."""

from __future__ import annotations

import numpy as np

from kdqat.data.task import TaskSpec
from kdqat.objectives import objective_of


def task_metrics(task: TaskSpec, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every metric of `task` for model outputs against `labels`; `task.metric` is among them."""
    return objective_of(task).scores(task, np.asarray(outputs), np.asarray(labels))


def class_report(task: TaskSpec, outputs: np.ndarray, labels: np.ndarray) -> dict:
    """Per class: precision, recall, F1 (x100) and support, and the most frequent confusions (empty without
    classes)."""
    return objective_of(task).class_report(task, np.asarray(outputs), np.asarray(labels))
