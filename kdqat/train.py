"""`kdqat train`: fine-tune the full-precision teacher (unless given), then distil the W2/A8 student.

Layout of an output folder:
    config.json       the resolved configuration of the run (checked on resume)
    teacher/          fine-tuned teacher (Hugging Face folder + tokenizer)
    student/          fake-quant student: Hugging Face folder + quant_config.json + quant_scales.safetensors
    metrics.json      teacher scores, student best and last scores (static and dynamic scales), every evaluation
    logs/*.jsonl      one JSON line per logging step and evaluation
    checkpoints/      resumable Trainer checkpoints of each stage (removed when the stage completes,
                      unless keep_checkpoints)

Each stage evaluates on dev every `eval_steps` steps (per task by default, as the paper's code) and keeps
the checkpoint of its best evaluation; teacher/ and student/ hold that one unless keep="last".
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import (
    DataCollatorWithPadding,
    PreTrainedModel,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from kdqat import __version__
from kdqat.data.metrics import class_report, task_metrics
from kdqat.data.source import DataSource, open_source
from kdqat.data.task import TaskSpec
from kdqat.distill import DistillationTrainer
from kdqat.cpu_memory import keep_freed_memory
from kdqat.errors import KdqatError
from kdqat.checkpoints import MarkComplete, resumable
from kdqat.stopping import StoppingRule, StopWhenLearned, stop_reason
from kdqat.guards import DivergenceGuard, FiniteLossTrainer, require_finite
from kdqat.io import atomic_dir, check_output, write_json
from kdqat.embedding import SentenceEmbedder
from kdqat.models import checked_teacher, load_teacher, load_tokenizer
from kdqat.objectives import objective_of
from kdqat.optim import optimizer_cls_and_kwargs
from kdqat.options import TrainOptions, check_resumable
from kdqat.preflight import check_model_inputs, check_writable, run_lock
from kdqat.stage_log import JsonlLog, announce, report_saved
from kdqat.student import float_state, prepare, save_student, set_act_scale_mode
from kdqat import layout

log = logging.getLogger(__name__)

def tokenize(ds: Dataset, tokenizer, max_length: int) -> Dataset:
    pair = "text_b" in ds.column_names

    def encode(batch):
        return tokenizer(batch["text_a"], batch["text_b"] if pair else None, truncation=True, max_length=max_length)

    return ds.map(encode, batched=True, remove_columns=[c for c in ds.column_names if c != "label"])


def training_arguments(opts: TrainOptions, out: Path, stage: str, task: TaskSpec, lr: float, epochs: float,
                       optimizer: str) -> TrainingArguments:
    """Evaluate and checkpoint every eval_steps; the best evaluation's checkpoint is tracked (and spared by
    the checkpoint rotation) by the task's own metric. BertAdam clips per parameter: no global clip then."""
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    if opts.batch_size % world:
        raise KdqatError(f"--batch-size {opts.batch_size} is not divisible by the {world} data-parallel processes")
    return TrainingArguments(
        output_dir=str(layout.checkpoints(out, stage)),
        per_device_train_batch_size=opts.batch_size // world,  # --batch-size is the global batch
        per_device_eval_batch_size=max(64, opts.batch_size),
        learning_rate=lr,
        num_train_epochs=epochs,
        max_steps=opts.max_steps,
        warmup_steps=opts.warmup,  # a float below 1 is a fraction of the total steps
        lr_scheduler_type="linear",
        weight_decay=opts.weight_decay,  # transformers exempts biases and LayerNorm
        max_grad_norm=0.0 if optimizer == "bertadam" else 1.0,
        eval_strategy="steps",
        save_strategy="steps",
        eval_steps=opts.eval_steps,
        save_steps=opts.eval_steps,
        save_total_limit=opts.save_total_limit,
        metric_for_best_model=task.primary_metric,
        greater_is_better=objective_of(task).greater_is_better(task.metric),
        logging_steps=opts.logging_steps,
        seed=opts.seed,
        data_seed=opts.seed,
        report_to=[],
        disable_tqdm=not opts.progress,
        dataloader_num_workers=0,
        ddp_backend="gloo" if world > 1 and not torch.cuda.is_available() else None,
        use_cpu=not torch.cuda.is_available(),
    )


def eval_sets(source: DataSource, opts: TrainOptions, tokenizer) -> dict[str, Dataset]:
    return {
        split: tokenize(source.load(split, opts.max_eval_samples), tokenizer, opts.max_seq_length)
        for split in source.task.dev_splits
    }


def metrics_fn(task: TaskSpec):
    def compute(pred) -> dict[str, float]:
        return task_metrics(task, pred.predictions, pred.label_ids)

    return compute


NON_METRICS = ("_runtime", "_per_second", "_loss", "_preparation_time", "epoch")


def _dev_metrics(record: dict) -> dict[str, float]:
    """{"dev_accuracy": ...} from a Trainer record {"eval_dev_accuracy": ..., "eval_dev_runtime": ...}."""
    return {k[len("eval_"):]: v for k, v in record.items() if k.startswith("eval_") and not k.endswith(NON_METRICS)}


def eval_history(trainer: Trainer, task: TaskSpec) -> list[dict]:
    """Step and metrics of every dev evaluation so far, from the Trainer's log (survives resumption)."""
    return history_of(trainer.state.log_history, task)


def history_of(log_history: list[dict], task: TaskSpec) -> list[dict]:
    by_step: dict[int, dict[str, float]] = {}
    for rec in log_history:  # one record per dev split (MNLI has two) at each evaluation
        metrics = _dev_metrics(rec)
        if metrics:
            by_step.setdefault(rec["step"], {}).update(metrics)
    return [{"step": step, "dev": m} for step, m in by_step.items() if task.primary_metric in m]


def evaluate(trainer: Trainer, datasets: dict[str, Dataset]) -> dict[str, float]:
    return _dev_metrics(trainer.evaluate(datasets))


def _train(trainer: Trainer) -> None:
    """Train, resuming from the stage's newest complete checkpoint when there is one (checked whole; newer ones cut
    off while written are removed and named)."""
    last = resumable(Path(trainer.args.output_dir)) if trainer.is_world_process_zero() else None
    if torch.distributed.is_available() and torch.distributed.is_initialized():  # every rank resumes from one
        shared = [None if last is None else str(last)]
        torch.distributed.broadcast_object_list(shared, src=0)
        last = shared[0]
    if last:
        log.warning("resuming from %s", last)
    trainer.train(resume_from_checkpoint=None if last is None else str(last))


def load_best(trainer: Trainer) -> int | None:
    """Load the checkpoint of the best dev evaluation into the trainer's model; returns its step
    (None, and the model left as it is, when no evaluation was checkpointed)."""
    best = trainer.state.best_model_checkpoint
    if best is None:
        return None
    weights = Path(best) / "model.safetensors"
    try:
        state = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise KdqatError(f"{weights}: cannot read the best checkpoint ({e}); delete {best} and rerun to keep the last") from None
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.load_state_dict(state)
    return trainer.state.best_global_step


def remove_checkpoints(opts: TrainOptions, trainer: Trainer) -> None:
    """A completed stage's resumable checkpoints are dead weight (hundreds of MB each) unless asked for."""
    if not opts.keep_checkpoints and trainer.is_world_process_zero():
        stage = Path(trainer.args.output_dir)
        shutil.rmtree(stage, ignore_errors=True)
        if stage.parent.is_dir() and not any(stage.parent.iterdir()):
            stage.parent.rmdir()  # checkpoints/ itself, once no stage has any left


def trainer_kwargs(opts: TrainOptions, out: Path, stage: str, task: TaskSpec, lr: float, epochs: float, optimizer: str,
                   train_set: Dataset, dev: dict[str, Dataset], tokenizer) -> dict:
    """What both stages pass to their Trainer."""
    return dict(
        args=training_arguments(opts, out, stage, task, lr, epochs, optimizer),
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(optimizer, lr),
        train_dataset=train_set,
        eval_dataset=dev,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=metrics_fn(task),
    )


def stage_summary(trainer: Trainer, task: TaskSpec, kept_step: int | None, history: list[dict] | None = None) -> dict:
    """Every dev evaluation of a stage (`history`, default the trainer's), its best one, and which one the
    stage's folder holds."""
    history = eval_history(trainer, task) if history is None else history
    best = max(history, key=lambda r: r["dev"][task.primary_metric]) if history else None
    return {"kept": "best" if kept_step is not None else "last", "best": best,
            "last_step": trainer.state.global_step, "history": history}


TEACHER_SUMMARY = "kdqat_training.json"  # in teacher/: how the teacher was fine-tuned, read by later runs


def stopping(opts: TrainOptions, task: TaskSpec, stage: str) -> tuple[StoppingRule, StopWhenLearned]:
    """A stage's stopping rule (--teacher-patience / --patience, --min-improvement) and the callback applying it."""
    rule = StoppingRule(opts.teacher_patience if stage == "teacher" else opts.patience, opts.min_improvement,
                        objective_of(task).greater_is_better(task.metric))
    metric = task.primary_metric
    return rule, StopWhenLearned(rule, lambda log_history: [h["dev"][metric] for h in history_of(log_history, task)])


def report_stop(opts: TrainOptions, task: TaskSpec, stage: str, rule: StoppingRule, history: list[dict]) -> dict:
    """Why a stage ended: recorded in its summary and said in one line."""
    epochs, option = (opts.teacher_epochs, "--teacher-epochs") if stage == "teacher" else (opts.epochs, "--epochs")
    budget = f"{opts.max_steps} steps" if opts.max_steps > 0 else f"{epochs:g} epochs"
    more = "a larger --max-steps" if opts.max_steps > 0 else f"{option} {2 * epochs:g}"
    reason = stop_reason(rule, history, task.primary_metric, budget, more)
    if reason.get("still_improving"):
        log.warning("%s: %s", stage, reason["line"])
    else:
        log.info("%s: %s", stage, reason["line"])
    return reason


def train_teacher(opts: TrainOptions, task: TaskSpec, out: Path, train_set: Dataset, dev: dict[str, Dataset], tokenizer) -> PreTrainedModel:
    """Fine-tune the float model on hard labels into out/teacher (skipped if it is already there)."""
    target = out / layout.TEACHER
    if (target / "config.json").is_file():  # a Hugging Face folder's own config
        log.warning("using the teacher already in %s", target)
        return checked_teacher(target, task)
    model = objective_of(task).start_model(opts.model, task)
    rule, stop_when_learned = stopping(opts, task, "teacher")
    trainer = FiniteLossTrainer(
        model=model,
        callbacks=[JsonlLog(layout.stage_log(out, "teacher"), "teacher"), DivergenceGuard(), MarkComplete(),
                   stop_when_learned],
        **trainer_kwargs(opts, out, "teacher", task, opts.teacher_learning_rate, opts.teacher_epochs,
                         opts.teacher_optimizer, train_set, dev, tokenizer),
    )
    announce(trainer, "teacher", f"fine-tuning {opts.model} on {task.name} (lr {opts.teacher_learning_rate:g}, "
                                 f"{opts.teacher_epochs:g} epochs, {opts.teacher_optimizer}), dev every {opts.eval_steps} steps")
    _train(trainer)
    kept = load_best(trainer) if opts.keep == "best" else None
    require_finite(model, "the fine-tuned teacher")
    if trainer.is_world_process_zero():
        summary = {"learning_rate": opts.teacher_learning_rate, "epochs": opts.teacher_epochs,
                   "optimizer": opts.teacher_optimizer, "seed": opts.seed, **stage_summary(trainer, task, kept),
                   "stopped": report_stop(opts, task, "teacher", rule, eval_history(trainer, task))}
        with atomic_dir(target) as tmp:
            trainer.save_model(str(tmp))
            tokenizer.save_pretrained(tmp)
            write_json(tmp / TEACHER_SUMMARY, summary)
        report_saved("teacher", target, summary, task)
    trainer.accelerator.wait_for_everyone()
    remove_checkpoints(opts, trainer)
    return model


def train(opts: TrainOptions, callbacks: list[TrainerCallback] | None = None) -> dict:
    """Run (or resume) the whole job; returns what metrics.json holds."""
    # everything is checked before anything is written: a failed start leaves no trace to trip a rerun
    if opts.reads_data_first:  # the data decides labels and evaluation interval: read it first
        source = open_source(opts)
        opts = dataclasses.replace(opts, task=source.task.name).resolve(n_train=len(source.load("train", opts.max_train_samples)))
    else:
        opts = opts.resolve()
        source = open_source(opts)
    task = source.task
    out = Path(opts.output_dir)
    check_resumable(out, opts)
    complete = finished_run(out, opts)
    if complete is not None:
        log.warning("%s: this run is complete (metrics.json%s); nothing to do", out, "" if opts.teacher_only else ", student/")
        return complete
    check_writable(out)
    for name, folder in ((layout.CONFIG, False), (layout.METRICS, False), (layout.LOGS, True), (layout.CHECKPOINTS, True)):
        check_output(out / name, "--output-dir", folder=folder, given=out)
    check_model_inputs(opts)
    tokenizer = load_tokenizer(opts.teacher or opts.model, "--teacher" if opts.teacher else "--model")
    train_set = tokenize(source.load("train", opts.max_train_samples), tokenizer, opts.max_seq_length)
    dev = eval_sets(source, opts, tokenizer)
    test = ({task.test_split: tokenize(source.load(task.test_split, opts.max_eval_samples), tokenizer, opts.max_seq_length)}
            if task.test_split else {})
    objective = objective_of(task)
    given_teacher = objective.given_teacher(opts, task)  # None: fine-tuned from --model below
    dev = objective.with_reference(dev, given_teacher, opts.batch_size)
    # refused now, not after the teacher's fine-tuning; loaded once, the student starts from it
    given_init = load_teacher(opts.init_student, task, "--init-student") if opts.init_student else None
    with run_lock(out):
        return _run_stages(opts, task, out, tokenizer, train_set, dev, test, given_teacher, given_init, callbacks)


def finished_run(out: Path, opts: TrainOptions) -> dict | None:
    """What metrics.json holds when `out` is a complete run of these settings (check_resumable passed), else None."""
    from kdqat.student import QUANT_CONFIG_FILE

    metrics = out / layout.METRICS
    if not (metrics.is_file() and (out / layout.CONFIG).is_file()):
        return None
    try:
        result = json.loads(metrics.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    student_done = (out / layout.STUDENT / QUANT_CONFIG_FILE).is_file() and result.get("student") is not None
    return result if student_done or (opts.teacher_only and result.get("student") is None) else None


def _run_stages(opts: TrainOptions, task: TaskSpec, out: Path, tokenizer, train_set: Dataset, dev: dict[str, Dataset],
                test: dict[str, Dataset], given_teacher: PreTrainedModel | None,
                given_init: PreTrainedModel | None, callbacks: list[TrainerCallback] | None) -> dict:
    keep_freed_memory()  # CPU steps stop re-faulting their activations; results are unchanged
    set_seed(opts.seed)  # the teacher's new classifier head is drawn before any Trainer exists
    write_json(out / layout.CONFIG, {"kdqat_version": __version__, "torch": torch.__version__,
                                     "options": dataclasses.asdict(opts), "task_spec": task.to_dict()})
    objective = objective_of(task)
    teacher_dir = objective.teacher_location(opts, out)
    teacher = given_teacher or train_teacher(opts, task, out, train_set, dev, tokenizer)
    if opts.teacher_only:
        result = {"task": task.name, "metric": task.primary_metric, "labels": _labels(task),
                  "teacher": teacher_record(teacher, teacher_dir, task, dev, test, tokenizer, opts), "student": None}
        if int(os.environ.get("RANK", "0")) == 0:
            write_json(out / layout.METRICS, result)
        return result

    student = initial_student(opts, given_init or teacher)
    objective.configure_student(student, opts)
    rule, stop_when_learned = stopping(opts, task, "student")
    trainer = DistillationTrainer(
        model=student,
        teacher=teacher,
        loss_weights=opts.loss_weights,
        prediction=functools.partial(objective.prediction_loss, embedding_loss=opts.embedding_loss),
        callbacks=[JsonlLog(layout.stage_log(out, "student"), "student"), DivergenceGuard(), MarkComplete(),
                   stop_when_learned, *(callbacks or [])],
        **trainer_kwargs(opts, out, "student", task, opts.learning_rate, opts.epochs, opts.optimizer,
                         train_set, dev, tokenizer),
    )
    what = objective.training_text(task, opts)
    announce(trainer, "student", f"W{opts.weight_bits}/A{opts.act_bits} with {opts.kd} distillation on {what} "
                                 f"(lr {opts.learning_rate:g}, {opts.epochs:g} epochs, {opts.optimizer}), dev every {opts.eval_steps} steps")
    _train(trainer)
    history = eval_history(trainer, task)  # before the re-scoring below adds its own records
    last = score_last(opts, task, trainer, dev, history)
    kept = load_best(trainer) if opts.keep == "best" else None
    require_finite(student, "the trained student")
    result = {
        "task": task.name,
        "metric": task.primary_metric,
        "metric_names": sorted(last[opts.act_scale]["dev"]),
        "labels": _labels(task),
        "teacher": teacher_record(teacher, teacher_dir, task, dev, test, tokenizer, opts),
        "student": {
            **score_test(trainer, task, test),
            "kd": opts.kd if opts.gamma is None else f"gamma={opts.gamma} on {opts.gamma_on}",
            "loss_weights": opts.loss_weights,
            "act_scale": opts.act_scale,
            "last": last,
            **stage_summary(trainer, task, kept, history),
            "stopped": report_stop(opts, task, "student", rule, history),
        },
    }
    if trainer.is_world_process_zero():
        with atomic_dir(out / layout.STUDENT) as tmp:
            save_student(student, tmp)
            tokenizer.save_pretrained(tmp)
        write_json(out / layout.METRICS, result)
        report_saved("student", out / layout.STUDENT, result["student"], task)
    trainer.accelerator.wait_for_everyone()
    remove_checkpoints(opts, trainer)
    return result


def score_last(opts: TrainOptions, task: TaskSpec, trainer: Trainer, dev: dict[str, Dataset], history: list[dict]) -> dict:
    """The student at the end of training on dev: its final evaluation (static scales, from the history)
    and, with static scales, the same weights re-scored with dynamic (per-batch) ones."""
    step = trainer.state.global_step
    final = history[-1]["dev"] if history and history[-1]["step"] == step else evaluate(trainer, dev)
    last = {opts.act_scale: {"step": step, "dev": final}}
    if opts.act_scale == "static" and opts.act_bits < 32:
        set_act_scale_mode(trainer.model, "dynamic")
        last["dynamic"] = {"step": step, "dev": evaluate(trainer, dev)}
        set_act_scale_mode(trainer.model, "static")
    return last


def _labels(task: TaskSpec) -> list[str] | None:
    return list(task.labels) if task.labels is not None else None


def score_test(trainer: Trainer, task: TaskSpec, test: dict[str, Dataset]) -> dict:
    """The model in `trainer` scored once on the test split (kept checkpoint only; nothing is selected on it):
    {"test": {"split", "examples", "scores", per-class report}}, or {} without a test split."""
    if not test:
        return {}
    (split, ds), = test.items()
    pred = trainer.predict(ds, metric_key_prefix=split)
    return {"test": {"split": split, "examples": len(ds), "scores": task_metrics(task, pred.predictions, pred.label_ids),
                     **class_report(task, pred.predictions, pred.label_ids)}}


def teacher_record(teacher: PreTrainedModel, folder: Path, task: TaskSpec, dev: dict[str, Dataset],
                   test: dict[str, Dataset], tokenizer, opts: TrainOptions) -> dict:
    """The teacher's dev (and test) scores, with how it was fine-tuned when its folder says (kdqat_training.json).
    A teacher that is the reference itself (an embedding model) is recorded as the objective says."""
    reference = objective_of(task).reference_record(teacher, folder, task, dev, opts)
    if reference is not None:
        return reference
    with tempfile.TemporaryDirectory() as scratch:  # the Trainer makes its output folder; nothing goes there
        evaluator = Trainer(
            model=teacher,
            args=TrainingArguments(
                output_dir=scratch,
                per_device_eval_batch_size=max(64, opts.batch_size),
                report_to=[],
                disable_tqdm=not opts.progress,
                use_cpu=not torch.cuda.is_available(),
            ),
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=metrics_fn(task),
        )
        evaluator.remove_callback(PrinterCallback)  # the scores go into the result, not to stdout
        record = {"dev": evaluate(evaluator, dev), "folder": str(folder), **score_test(evaluator, task, test)}
    summary = folder / TEACHER_SUMMARY
    if summary.is_file():
        record["training"] = json.loads(summary.read_text())
    return record


def copy_of(model: PreTrainedModel) -> PreTrainedModel:
    """A fresh float model with `model`'s config and (float) weights, for the student to start from."""
    if isinstance(model, SentenceEmbedder):
        return copy.deepcopy(model)  # the float embedding model (no kdqat attention or quantizers yet)
    student = type(model)(copy.deepcopy(model.config))
    student.load_state_dict(float_state(model))
    return student


def initial_student(opts: TrainOptions, start: PreTrainedModel) -> PreTrainedModel:
    """The fake-quant student before training, from `start`: the teacher, or --init-student's model (a kdqat
    student of other bit widths, e.g. W8/A8 -> W4/A8 -> W2/A8), whose learned activation ranges it also takes."""
    student = prepare(copy_of(start), TrainOptions.quant_config_of(opts))
    if getattr(start, "kdqat_quant_config", None) is not None:  # a student: its activation ranges too
        student.load_state_dict(start.state_dict())
    return student
