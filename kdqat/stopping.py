"""When a training stage has finished learning: early stopping on the stage's dev metric, and why a stage stopped.

The rule reads the stage's evaluation history (the Trainer's log, saved in every checkpoint), never a counter of
its own, so a run resumed mid-stage continues under the same rule with the same count. An evaluation improves on
the best so far when it beats it by more than `min_improvement` (metric points); after `patience` evaluations
without one, the stage stops. Without a patience a stage trains to its budget (epochs or --max-steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from transformers import TrainerCallback


@dataclass(frozen=True)
class StoppingRule:
    patience: int | None = None  # evaluations without improvement before stopping; None: train to the budget
    min_improvement: float = 0.0  # in the metric's points
    greater_is_better: bool = True

    def best_and_since(self, values: list[float]) -> tuple[int, int]:
        """(index of the best evaluation under the rule, evaluations after it)."""
        best = 0
        for i, value in enumerate(values[1:], 1):
            gain = value - values[best] if self.greater_is_better else values[best] - value
            if gain > self.min_improvement:
                best = i
        return best, len(values) - 1 - best

    def should_stop(self, values: list[float]) -> bool:
        return self.patience is not None and bool(values) and self.best_and_since(values)[1] >= self.patience


class StopWhenLearned(TrainerCallback):
    """Stop the Trainer once `rule` says the stage has finished learning; `values(log_history)` gives the stage's
    dev metric at each evaluation so far."""

    def __init__(self, rule: StoppingRule, values: Callable[[list[dict]], list[float]]) -> None:
        self.rule, self.values = rule, values

    def on_evaluate(self, args, state, control, **kwargs):
        if self.rule.should_stop(self.values(state.log_history)):
            control.should_training_stop = True


def stop_reason(rule: StoppingRule, history: list[dict], metric: str, budget: str, more: str) -> dict:
    """Why a stage ended, for its record and its console line: early (no improvement for `patience` evaluations),
    or at its `budget` (then whether its best evaluation was its last: still improving, and `more` says how to
    give it more)."""
    values = [h["dev"][metric] for h in history]
    if not values:
        return {"why": "budget", "line": f"reached its budget ({budget}) without a dev evaluation"}
    best, since = rule.best_and_since(values)
    best_step = history[best]["step"]
    if rule.should_stop(values):
        return {"why": "no_improvement", "best_step": best_step,
                "line": f"stopped early: no dev {metric} gain above {rule.min_improvement:g} in the {since} evaluations "
                        f"after step {best_step} (patience {rule.patience})"}
    last_best = max(range(len(values)), key=lambda i: (values[i] if rule.greater_is_better else -values[i], i))
    still = last_best == len(values) - 1 and len(values) > 1
    line = f"reached its budget ({budget})"
    if still:
        line += f", its best dev {metric} at its last evaluation: it may still be improving ({more} gives it more)"
    return {"why": "budget", "best_step": best_step, "still_improving": still, "line": line}
