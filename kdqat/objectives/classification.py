"""Classification: labels from a fine-tuned teacher's head; soft cross-entropy to its logits; accuracy and F1;
served as a label with its probabilities."""

from __future__ import annotations

import numpy as np

from kdqat.data.task import TaskSpec
from kdqat.objectives.base import Objective, decided_margin
from kdqat.parity import Parity, compare


class Classification(Objective):
    name = "classification"
    problem_type = "single_label_classification"
    metrics = ("accuracy", "macro_f1", "weighted_f1")
    named_labels = True

    def scores(self, task: TaskSpec, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score

        if task.source == "glue":
            return glue_scores(task, outputs, labels)
        preds, labels = np.asarray(outputs).argmax(-1), np.asarray(labels)
        every = list(range(task.num_labels))
        return {"accuracy": 100.0 * float(accuracy_score(labels, preds)),
                "macro_f1": 100.0 * float(f1_score(labels, preds, labels=every, average="macro", zero_division=0)),
                "weighted_f1": 100.0 * float(f1_score(labels, preds, labels=every, average="weighted", zero_division=0))}

    def class_report(self, task: TaskSpec, outputs: np.ndarray, labels: np.ndarray, confusions: int = 10) -> dict:
        """Per class: precision, recall, F1 (x100) and support; and the `confusions` most frequent (true,
        predicted) mistakes with their counts."""
        from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

        preds, labels = np.asarray(outputs).argmax(-1), np.asarray(labels)
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

    def prediction_loss(self, student, teacher, embedding_loss: str = "cosine"):
        from kdqat.losses import pred_loss

        return pred_loss(student, teacher)

    def compare(self, reference: np.ndarray, candidate: np.ndarray, fp16: bool = False) -> Parity:
        return compare(reference, candidate, regression=False, margin=decided_margin(fp16))

    def finish(self, outputs: np.ndarray) -> np.ndarray:
        """Logits as class probabilities (a softmax per row)."""
        e = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def answers(self, rows: np.ndarray, labels: list[str] | None) -> list[dict]:
        return [{"label": labels[int(p.argmax())], "probabilities": dict(zip(labels, p.tolist()))} for p in rows]


def glue_scores(task: TaskSpec, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """GLUE's own metrics for a GLUE task."""
    from kdqat.glue.metrics import glue_metrics
    from kdqat.glue.tasks import get_task

    return glue_metrics(get_task(task.name), outputs, labels)
