"""Scores for any task: GLUE's own metrics for GLUE tasks; for your data accuracy, macro- and weighted-F1
(classification) or Pearson, Spearman and MSE (regression), and a per-class report with the most frequent
confusions. Percentages (x100) except MSE, in the label's own units."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, mean_squared_error, precision_recall_fscore_support

from kdqat.data.task import TaskSpec


def task_metrics(task: TaskSpec, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every metric of `task` for predictions `logits` against `labels`; `task.metric` is among them."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if task.is_embedding:  # labels: the float model's embeddings of the same texts
        return {"cosine": 100.0 * float(mean_cosine(logits, labels))}
    if task.source == "glue":
        from kdqat.glue.metrics import glue_metrics
        from kdqat.glue.tasks import get_task

        return glue_metrics(get_task(task.name), logits, labels)
    if task.is_regression:
        preds = logits.reshape(-1).astype(np.float64)
        return {"pearson": 100.0 * float(pearsonr(preds, labels)[0]),
                "spearman": 100.0 * float(spearmanr(preds, labels)[0]),
                "mse": float(mean_squared_error(labels, preds))}
    preds = logits.argmax(-1)
    every = list(range(task.num_labels))
    return {"accuracy": 100.0 * float(accuracy_score(labels, preds)),
            "macro_f1": 100.0 * float(f1_score(labels, preds, labels=every, average="macro", zero_division=0)),
            "weighted_f1": 100.0 * float(f1_score(labels, preds, labels=every, average="weighted", zero_division=0))}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays (float64)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, 1e-12)


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(cosines(a, b).mean())


def class_report(task: TaskSpec, logits: np.ndarray, labels: np.ndarray, confusions: int = 10) -> dict:
    """Per class: precision, recall, F1 (x100) and support; and the `confusions` most frequent (true, predicted)
    mistakes with their counts. Empty for a regression."""
    if task.is_regression or task.is_embedding:
        return {}
    preds = np.asarray(logits).argmax(-1)
    labels = np.asarray(labels)
    every = list(range(task.num_labels))
    p, r, f, n = precision_recall_fscore_support(labels, preds, labels=every, zero_division=0)
    per_class = {name: {"precision": 100.0 * float(p[i]), "recall": 100.0 * float(r[i]), "f1": 100.0 * float(f[i]),
                        "support": int(n[i])} for i, name in enumerate(task.labels)}
    matrix = confusion_matrix(labels, preds, labels=every)
    np.fill_diagonal(matrix, 0)
    order = np.argsort(matrix, axis=None, kind="stable")[::-1][:confusions]
    mistakes = [{"true": task.labels[i], "predicted": task.labels[j], "count": int(matrix[i, j])}
                for i, j in zip(*np.unravel_index(order, matrix.shape)) if matrix[i, j] > 0]
    return {"per_class": per_class, "confusions": mistakes}
