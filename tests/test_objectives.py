"""Objectives as a registry: each says what its data holds, its metrics, its parity and its answers; the rest of
the package asks it instead of branching on its name."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from conftest import REPO
from kdqat.data.task import TaskSpec
from kdqat.errors import KdqatError
from kdqat.objectives import REGISTRY, by_problem_type, get_objective, objective_of


def test_every_objective_is_found_by_name_and_by_its_exported_problem_type():
    assert set(REGISTRY) == {"classification", "regression", "embedding"}
    for name, objective in REGISTRY.items():
        assert get_objective(name) is objective and by_problem_type(objective.problem_type) is objective
    assert by_problem_type(None) is get_objective("classification")  # an export.json from before problem_type
    with pytest.raises(KdqatError, match="objective 'reranker' is not one of classification, regression, embedding"):
        get_objective("reranker")


def test_a_regression_recorded_before_it_had_its_own_name_reads_back_as_one():
    old = {"name": "stsb", "source": "glue", "labels": None, "metric": "pearson", "pair": True,
           "dev_splits": ["dev"], "objective": "classification"}
    assert objective_of(TaskSpec.from_dict(old)).name == "regression"


def test_metrics_and_their_direction():
    regression, classification = get_objective("regression"), get_objective("classification")
    assert classification.metrics[0] == "accuracy" and regression.metrics[0] == "pearson"
    assert not regression.greater_is_better("mse") and regression.greater_is_better("pearson")
    with pytest.raises(KdqatError, match="--metric 'accuracy' does not fit a regression; use one of pearson, spearman, mse"):
        regression.check_metric("accuracy")


def test_each_objective_scores_hand_computed_values():
    task = TaskSpec("x", "files", ("a", "b"), "accuracy", pair=False)
    scores = objective_of(task).scores(task, np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]]), np.array([0, 1, 1]))
    assert scores["accuracy"] == pytest.approx(200 / 3)
    emb = TaskSpec("t", "files", None, "cosine", pair=False, objective="embedding")
    cos = objective_of(emb).scores(emb, np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[1.0, 0.0], [1.0, 0.0]]))
    assert cos == {"cosine": pytest.approx(50.0)}  # cosines 1 and 0


def test_the_prediction_term_is_the_objectives_own():
    s, t = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    soft_ce = -(torch.softmax(t, -1) * torch.log_softmax(s, -1)).sum()
    assert get_objective("classification").prediction_loss(s, t).item() == pytest.approx(soft_ce.item())
    assert get_objective("regression").prediction_loss(torch.tensor([[2.0]]), torch.tensor([[0.5]])).item() == pytest.approx(2.25)
    assert get_objective("embedding").prediction_loss(s, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(1.0)
    assert [o.prediction_term for o in REGISTRY.values()] == ["pred", "pred", "emb"]


def test_parity_gates_fail_on_what_each_objective_cares_about():
    classification, embedding = get_objective("classification"), get_objective("embedding")
    reference = np.array([[3.0, 0.0], [0.0, 3.0]])
    assert classification.parity_failure(classification.compare(reference, reference), 0.99) is None
    flipped = classification.compare(reference, reference[::-1].copy())
    assert "agree on only 0.0% of the 2 examples" in classification.parity_failure(flipped, 0.99)
    vectors = np.array([[1.0, 0.0], [0.0, 1.0]])
    turned = embedding.compare(vectors, np.array([[1.0, 0.0], [1.0, 1.0]]))
    assert "cosine similarity to the PyTorch student's is 0.7071" in embedding.parity_failure(turned, 0.99)
    assert classification.gate_value(0.99, reference=True) == 1.0 and embedding.gate_value(0.99, reference=True) == 0.99


def test_served_answers_come_from_the_objective():
    classification = get_objective("classification")
    probs = classification.finish(np.array([[0.0, np.log(3.0)]]))
    assert classification.answers(probs, ["no", "yes"])[0]["probabilities"] == pytest.approx({"no": 0.25, "yes": 0.75})
    assert get_objective("regression").answers(np.array([[1.5]]), None) == [{"score": 1.5}]
    assert get_objective("embedding").routes == ("/v1/embeddings", "/embed")


NAMED = re.compile(r"""(\bis_embedding\b|\bis_regression\b|objective\s*[!=]=|problem_type\s*[!=]=|[!=]= "(embedding|regression|classification)")""")
ASKED = re.compile(r"\.labelled\b")  # a branch on what the objective says of its data
# Where an objective's name is still compared, and why: each reads something recorded outside kdqat's objectives.
NAMED_ALLOWED = {
    "kdqat/data/task.py": "a run recorded before regression had its own objective name",
    "kdqat/data/source.py": "a GLUE task's own definition says whether it is a regression",
    "kdqat/models.py": "a transformers head's own config.problem_type",
}


def _product_lines():
    for folder in ("kdqat", "runtime", "export", "eval"):
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if not rel.startswith(("kdqat/objectives/", "kdqat/glue/")):
                yield from ((rel, i, line) for i, line in enumerate(path.read_text().splitlines(), 1))


def test_stages_ask_the_objective_instead_of_naming_it():
    """No comparison with an objective's name outside kdqat/objectives but the three recorded reasons above, and
    at most 8 branches on an objective in all (34 flag checks before the registry)."""
    named = [(rel, i) for rel, i, line in _product_lines() if NAMED.search(line)]
    assert sorted({rel for rel, _ in named}) == sorted(NAMED_ALLOWED) and len(named) == len(NAMED_ALLOWED)
    asked = [(rel, i) for rel, i, line in _product_lines() if ASKED.search(line)]
    assert len(named) + len(asked) <= 8, asked
