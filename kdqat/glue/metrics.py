"""GLUE metrics, in percent as the paper reports them."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from kdqat.glue.tasks import GlueTask


def glue_metrics(task: GlueTask, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every metric GLUE reports for `task`, x100. The task's own metric is `task.metric`."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if task.is_regression:
        preds = logits.reshape(-1)
        return {
            "pearson": 100.0 * float(pearsonr(preds, labels)[0]),
            "spearman": 100.0 * float(spearmanr(preds, labels)[0]),
        }
    preds = logits.argmax(-1)
    out = {"accuracy": 100.0 * float(accuracy_score(labels, preds))}
    if task.metric == "mcc":
        out["mcc"] = 100.0 * float(matthews_corrcoef(labels, preds))
    if task.metric == "f1":
        out["f1"] = 100.0 * float(f1_score(labels, preds))
    return out
