"""The objectives kdqat distils for, by name: classification, regression and sentence embeddings.

`objective_of(task)` is how every stage asks what to do for a task; `by_problem_type` reads an export's record.
Adding one (e.g. a cross-encoder reranker) is a module with an `Objective` subclass and an entry here.
"""

from __future__ import annotations

from kdqat.data.task import TaskSpec
from kdqat.errors import KdqatError
from kdqat.objectives.base import Objective
from kdqat.objectives.classification import Classification
from kdqat.objectives.embedding import Embedding
from kdqat.objectives.regression import Regression

REGISTRY: dict[str, Objective] = {o.name: o for o in (Classification(), Regression(), Embedding())}
# `kdqat train --objective`: "classification" covers regression too (the labels decide, or --problem)
TRAIN_OBJECTIVES = ("classification", "embedding")


def get_objective(name: str) -> Objective:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KdqatError(f"objective {name!r} is not one of {', '.join(REGISTRY)}") from None


def objective_of(task: TaskSpec) -> Objective:
    return get_objective(task.objective)


def by_problem_type(problem_type: str | None) -> Objective:
    """The objective of an export.json's problem_type (an export without one is a classifier)."""
    found = [o for o in REGISTRY.values() if o.problem_type == (problem_type or Classification.problem_type)]
    if not found:
        raise KdqatError(f"problem_type {problem_type!r} is not one kdqat exports ({', '.join(o.problem_type for o in REGISTRY.values())})")
    return found[0]
