"""Stages that stop when they have finished learning (kdqat.stopping): the rule, read from the evaluation history
so that a resumed run keeps counting, and the reason a stage stopped."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from kdqat.stopping import StoppingRule, StopWhenLearned, stop_reason


def history(values, every=10):
    return [{"step": every * (i + 1), "dev": {"accuracy": v}} for i, v in enumerate(values)]


def test_patience_counts_evaluations_since_a_gain_above_the_minimum():
    rule = StoppingRule(patience=2, min_improvement=0.1)
    assert rule.best_and_since([80.0, 81.0, 81.05, 81.1]) == (1, 2)  # +0.05 and +0.1 are not gains above 0.1
    assert rule.should_stop([80.0, 81.0, 81.05, 81.1]) and not rule.should_stop([80.0, 81.0, 81.05, 81.2])
    assert not StoppingRule(patience=None).should_stop([90.0, 80.0, 70.0])  # no patience: train to the budget
    lower = StoppingRule(patience=1, greater_is_better=False)  # mse: lower is better
    assert lower.best_and_since([0.5, 0.4, 0.45]) == (1, 1) and lower.should_stop([0.5, 0.4, 0.45])


def test_the_callback_reads_the_history_a_resumed_trainer_carries():
    """The count is the history's, not the callback's: a fresh callback after a resume stops at the same point."""
    rule = StoppingRule(patience=2)

    def values(log: list[dict]) -> list[float]:
        return [r["eval_dev_accuracy"] for r in log if "eval_dev_accuracy" in r]

    log = [{"eval_dev_accuracy": v} for v in (70.0, 75.0, 74.0)] + [{"loss": 0.3}]
    control = SimpleNamespace(should_training_stop=False)
    StopWhenLearned(rule, values).on_evaluate(None, SimpleNamespace(log_history=log), control)
    assert not control.should_training_stop  # one evaluation without a gain
    log.append({"eval_dev_accuracy": 74.5})
    StopWhenLearned(rule, values).on_evaluate(None, SimpleNamespace(log_history=log), control)  # a new callback
    assert control.should_training_stop


def test_the_reason_says_early_stop_or_budget_and_whether_it_was_still_improving():
    rule = StoppingRule(patience=2)
    early = stop_reason(rule, history([85.0, 88.0, 87.0, 87.5]), "accuracy", "6 epochs", "--teacher-epochs 12")
    assert early == {"why": "no_improvement", "best_step": 20, "line": "stopped early: no dev accuracy gain above 0 in "
                     "the 2 evaluations after step 20 (patience 2)"}
    rising = stop_reason(StoppingRule(), history([85.5, 86.1, 87.7, 88.1]), "accuracy", "3 epochs", "--teacher-epochs 6")
    assert rising["why"] == "budget" and rising["still_improving"]
    assert rising["line"] == ("reached its budget (3 epochs), its best dev accuracy at its last evaluation: it may still "
                              "be improving (--teacher-epochs 6 gives it more)")
    flat = stop_reason(StoppingRule(), history([85.0, 88.0, 87.0]), "accuracy", "3 epochs", "--teacher-epochs 6")
    assert flat["line"] == "reached its budget (3 epochs)" and not flat["still_improving"]


def test_a_teacher_stage_records_why_it_stopped(tmp_path, tiny_model_dir, glue_dir):
    from conftest import train_options

    from kdqat.train import TEACHER_SUMMARY, train

    result = train(train_options(tmp_path, tiny_model_dir, glue_dir, max_steps=6, eval_steps=1, teacher_patience=2,
                                 min_improvement=50.0, teacher_only=True))
    assert result["student"] is None
    summary = json.loads((tmp_path / "run" / "teacher" / TEACHER_SUMMARY).read_text())
    assert summary["stopped"]["why"] == "no_improvement"  # no evaluation gains 50 points: stops after 3
    assert summary["last_step"] == 3 and len(summary["history"]) == 3


@pytest.mark.parametrize("value, message", [(0, "--teacher-patience 0: must be positive"),
                                            (-1, "--teacher-patience -1: must be positive")])
def test_bad_patience_is_refused(tmp_path, tiny_model_dir, glue_dir, value, message):
    from conftest import train_options

    from kdqat.errors import KdqatError
    from kdqat.train import train

    with pytest.raises(KdqatError, match=message):
        train(train_options(tmp_path, tiny_model_dir, glue_dir, teacher_patience=value))
