"""What a training stage shows and records: a labelled progress bar or plain log lines, one line when it
starts and when it has saved, and every log record as a JSON line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback

from kdqat.glue.tasks import GlueTask
from kdqat.io import finite_json

log = logging.getLogger("kdqat.train")


class StageProgress(ProgressCallback):
    """The Trainer's progress bar, labelled with its stage ("teacher", "student")."""

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.set_description(self.stage)


class StageLog(TrainerCallback):
    """Without progress bars: each log record as one plain line on stderr, named by its stage (the Trainer
    would print Python dicts to stdout, between the command's results)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            values = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items())
            log.info("%s step %d/%d: %s", self.stage, state.global_step, state.max_steps, values)


def announce(trainer: Trainer, stage: str, what: str) -> None:
    """One line when a stage starts; its progress bar labelled, or plain log lines without bars."""
    if trainer.is_world_process_zero():
        log.info("%s: %s", stage, what)
    if trainer.args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(StageLog(stage))
    else:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(StageProgress(stage))


def report_saved(stage: str, target: Path, summary: dict, task: GlueTask) -> None:
    """One line when a stage ends: where it saved, which evaluation that is."""
    best, metric = summary["best"], task.primary_metric
    kept = (f"the best dev evaluation, step {best['step']} of {summary['last_step']}: {metric} {best['dev'][metric]:.2f}"
            if summary["kept"] == "best" and best else f"the last step, {summary['last_step']}")
    log.info("%s: saved to %s (%s)", stage, target, kept)


class JsonlLog(TrainerCallback):
    """Append every log and evaluation record as one JSON line."""

    def __init__(self, path: Path, stage: str) -> None:
        self.path = path
        self.stage = stage

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            record = {"stage": self.stage, "step": state.global_step, "epoch": state.epoch, **logs}
            with self.path.open("a") as f:
                f.write(json.dumps(finite_json(record), allow_nan=False) + "\n")  # NaN -> null
