"""Regression: one score per input (STS-B, or float labels in your data); MSE to the teacher's score; Pearson,
Spearman and MSE; served as {"score"}."""

from __future__ import annotations

import numpy as np

from kdqat.data.task import TaskSpec
from kdqat.objectives.base import Objective
from kdqat.objectives.classification import glue_scores
from kdqat.parity import FP16_REGRESSION_TOLERANCE, REGRESSION_TOLERANCE, Parity, compare


class Regression(Objective):
    name = "regression"
    problem_type = "regression"
    metrics = ("pearson", "spearman", "mse")
    lower_is_better = frozenset({"mse"})
    serves = "scores (a regression)"
    decided_rule = "|diff| <="  # every example counts; agreeing means within the tolerance

    def scores(self, task: TaskSpec, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        from scipy.stats import pearsonr, spearmanr
        from sklearn.metrics import mean_squared_error

        if task.source == "glue":
            return glue_scores(task, outputs, labels)
        preds, labels = np.asarray(outputs).reshape(-1).astype(np.float64), np.asarray(labels)
        return {"pearson": 100.0 * float(pearsonr(preds, labels)[0]),
                "spearman": 100.0 * float(spearmanr(preds, labels)[0]),
                "mse": float(mean_squared_error(labels, preds))}

    def prediction_loss(self, student, teacher, embedding_loss: str = "cosine"):
        from kdqat.losses import pred_loss

        return pred_loss(student, teacher, regression=True)

    def compare(self, reference: np.ndarray, candidate: np.ndarray, fp16: bool = False) -> Parity:
        tolerance = FP16_REGRESSION_TOLERANCE if fp16 else REGRESSION_TOLERANCE
        return compare(reference, candidate, regression=True, tolerance=tolerance)

    def answers(self, rows: np.ndarray, labels: list[str] | None) -> list[dict]:
        return [{"score": float(row[0])} for row in rows]
