"""`kdqat train`: fine-tune the full-precision teacher (unless given), then distil the W2/A8 student.

Layout of an output folder:
    config.json       the resolved configuration of the run (checked on resume)
    teacher/          fine-tuned teacher (Hugging Face folder + tokenizer)
    student/          fake-quant student: Hugging Face folder + quant_config.json + quant_scales.safetensors
    metrics.json      teacher scores, student best and last scores (static and dynamic scales)
    logs/*.jsonl      one JSON line per logging step and evaluation
    checkpoints/      resumable Trainer checkpoints of each stage
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    DataCollatorWithPadding,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from eval.data import load_split
from eval.metrics import glue_metrics
from eval.tasks import GlueTask, get_task
from kdqat import __version__
from kdqat.config import QuantConfig
from kdqat.distill import DistillationTrainer
from kdqat.cpu_memory import keep_freed_memory
from kdqat.errors import KdqatError
from kdqat.io import atomic_dir, write_json
from kdqat.losses import loss_weights
from kdqat.models import DEFAULT_MODEL, load_classifier, load_teacher, load_tokenizer
from kdqat.prepare import prepare, save_student, set_act_scale_mode

log = logging.getLogger(__name__)

# REFERENCE.md section 1: batch size / max sequence length per task; everything else is shared.
TASK_BATCH = {"cola": (16, 64), "sst2": (32, 64)}
DEFAULT_BATCH = (32, 128)


@dataclass
class TrainOptions:
    """Everything that decides a run; saved as config.json beside its outputs."""

    task: str
    output_dir: str
    model: str = DEFAULT_MODEL
    teacher: str | None = None
    data_dir: str | None = None
    kd: str = "map+output"
    gamma: float | None = None
    gamma_on: str | None = None
    weight_bits: int = 2
    act_bits: int = 8
    act_scale: str = "static"
    epochs: float = 3.0
    max_steps: int = -1
    batch_size: int | None = None
    max_seq_length: int | None = None
    learning_rate: float = 2e-5
    teacher_learning_rate: float = 5e-5
    teacher_epochs: float = 3.0
    warmup: float = 0.1
    weight_decay: float = 0.01
    seed: int = 42
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    eval_steps: int | None = None
    logging_steps: int = 20
    save_total_limit: int = 2
    progress: bool = True
    loss_weights: dict[str, float] = field(default_factory=dict)  # resolved from kd / gamma

    def resolve(self) -> TrainOptions:
        """Fill the per-task defaults and validate; returns a new object."""
        task = get_task(self.task)
        batch, length = TASK_BATCH.get(task.name, DEFAULT_BATCH)
        resolved = dataclasses.replace(
            self,
            task=task.name,
            batch_size=self.batch_size or batch,
            max_seq_length=self.max_seq_length or length,
            loss_weights=loss_weights(self.kd, self.gamma, self.gamma_on),
        )
        self.quant_config_of(resolved)
        for name in ("batch_size", "max_seq_length", "logging_steps"):
            if getattr(resolved, name) <= 0:
                raise KdqatError(f"--{name.replace('_', '-')} must be positive")
        if resolved.max_steps <= 0 and resolved.epochs <= 0:
            raise KdqatError("--epochs must be positive (or give --max-steps)")
        return resolved

    @staticmethod
    def quant_config_of(opts: TrainOptions) -> QuantConfig:
        return QuantConfig.for_bits(opts.weight_bits, opts.act_bits, act_scale=opts.act_scale)


# Fields that may change between an interrupted run and its resumption without changing the result.
RESUMABLE_CHANGES = {"progress", "logging_steps", "save_total_limit"}


def check_resumable(out: Path, opts: TrainOptions) -> None:
    """Refuse to continue a run in `out` that was started with other settings."""
    saved_file = out / "config.json"
    if not saved_file.is_file():
        return
    try:
        saved = json.loads(saved_file.read_text())["options"]
    except (json.JSONDecodeError, KeyError):
        raise KdqatError(f"{saved_file}: unreadable; remove it or choose another --output-dir") from None
    current = dataclasses.asdict(opts)
    diff = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]]
    if diff:
        changes = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in diff)
        raise KdqatError(f"{out} holds a run with other settings ({changes}); use another --output-dir")


def tokenize(ds: Dataset, tokenizer, max_length: int) -> Dataset:
    pair = "text_b" in ds.column_names

    def encode(batch):
        return tokenizer(batch["text_a"], batch["text_b"] if pair else None, truncation=True, max_length=max_length)

    return ds.map(encode, batched=True, remove_columns=[c for c in ds.column_names if c != "label"])


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
                f.write(json.dumps(record) + "\n")


def training_arguments(opts: TrainOptions, out: Path, stage: str, lr: float, epochs: float) -> TrainingArguments:
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    if opts.batch_size % world:
        raise KdqatError(f"--batch-size {opts.batch_size} is not divisible by the {world} data-parallel processes")
    evaluate_by_steps = opts.eval_steps is not None
    return TrainingArguments(
        output_dir=str(out / "checkpoints" / stage),
        per_device_train_batch_size=opts.batch_size // world,  # --batch-size is the global batch
        per_device_eval_batch_size=max(64, opts.batch_size),
        learning_rate=lr,
        num_train_epochs=epochs,
        max_steps=opts.max_steps,
        warmup_steps=opts.warmup,  # a float below 1 is a fraction of the total steps
        lr_scheduler_type="linear",
        weight_decay=opts.weight_decay,  # transformers exempts biases and LayerNorm
        eval_strategy="steps" if evaluate_by_steps else "epoch",
        save_strategy="steps" if evaluate_by_steps else "epoch",
        eval_steps=opts.eval_steps,
        save_steps=opts.eval_steps,
        save_total_limit=opts.save_total_limit,
        logging_steps=opts.logging_steps,
        seed=opts.seed,
        data_seed=opts.seed,
        report_to=[],
        disable_tqdm=not opts.progress,
        dataloader_num_workers=0,
        ddp_backend="gloo" if world > 1 and not torch.cuda.is_available() else None,
        use_cpu=not torch.cuda.is_available(),
    )


def eval_sets(task: GlueTask, opts: TrainOptions, tokenizer) -> dict[str, Dataset]:
    return {
        split: tokenize(load_split(task, split, opts.data_dir, opts.max_eval_samples), tokenizer, opts.max_seq_length)
        for split in task.dev_splits
    }


def metrics_fn(task: GlueTask):
    def compute(pred) -> dict[str, float]:
        return glue_metrics(task, pred.predictions, pred.label_ids)

    return compute


NON_METRICS = ("_runtime", "_per_second", "_loss", "_preparation_time", "epoch")


def _dev_metrics(record: dict) -> dict[str, float]:
    """{"dev_accuracy": ...} from a Trainer record {"eval_dev_accuracy": ..., "eval_dev_runtime": ...}."""
    return {k[len("eval_"):]: v for k, v in record.items() if k.startswith("eval_") and not k.endswith(NON_METRICS)}


def eval_history(trainer: Trainer, task: GlueTask) -> list[dict]:
    """Step and metrics of every dev evaluation so far, from the Trainer's log (survives resumption)."""
    key = f"eval_{task.primary_metric}"
    return [{"step": rec["step"], "dev": _dev_metrics(rec)} for rec in trainer.state.log_history if key in rec]


def evaluate(trainer: Trainer, datasets: dict[str, Dataset]) -> dict[str, float]:
    return _dev_metrics(trainer.evaluate(datasets))


def _train(trainer: Trainer) -> None:
    last = get_last_checkpoint(trainer.args.output_dir) if Path(trainer.args.output_dir).is_dir() else None
    if last:
        log.warning("resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)


def train_teacher(opts: TrainOptions, task: GlueTask, out: Path, train_set: Dataset, dev: dict[str, Dataset], tokenizer) -> PreTrainedModel:
    """Fine-tune the float model on hard labels into out/teacher (skipped if it is already there)."""
    target = out / "teacher"
    if (target / "config.json").is_file():
        log.warning("using the teacher already in %s", target)
        return load_teacher(target, task)
    model = load_classifier(opts.model, task)
    trainer = Trainer(
        model=model,
        args=training_arguments(opts, out, "teacher", opts.teacher_learning_rate, opts.teacher_epochs),
        train_dataset=train_set,
        eval_dataset=dev,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=metrics_fn(task),
        callbacks=[JsonlLog(out / "logs" / "teacher.jsonl", "teacher")],
    )
    _train(trainer)
    if trainer.is_world_process_zero():
        with atomic_dir(target) as tmp:
            trainer.save_model(str(tmp))
            tokenizer.save_pretrained(tmp)
    trainer.accelerator.wait_for_everyone()
    return model


def train(opts: TrainOptions, callbacks: list[TrainerCallback] | None = None) -> dict:
    """Run (or resume) the whole job; returns what metrics.json holds."""
    opts = opts.resolve()
    task = get_task(opts.task)
    out = Path(opts.output_dir)
    check_resumable(out, opts)
    keep_freed_memory()  # CPU steps stop re-faulting their activations; results are unchanged
    set_seed(opts.seed)  # the teacher's new classifier head is drawn before any Trainer exists
    write_json(out / "config.json", {"kdqat_version": __version__, "torch": torch.__version__, "options": dataclasses.asdict(opts)})

    tokenizer = load_tokenizer(opts.teacher or opts.model)
    train_set = tokenize(load_split(task, "train", opts.data_dir, opts.max_train_samples), tokenizer, opts.max_seq_length)
    dev = eval_sets(task, opts, tokenizer)

    teacher = load_teacher(opts.teacher, task) if opts.teacher else train_teacher(opts, task, out, train_set, dev, tokenizer)

    student = prepare(copy_of(teacher), TrainOptions.quant_config_of(opts))
    trainer = DistillationTrainer(
        model=student,
        teacher=teacher,
        loss_weights=opts.loss_weights,
        regression=task.is_regression,
        args=training_arguments(opts, out, "student", opts.learning_rate, opts.epochs),
        train_dataset=train_set,
        eval_dataset=dev,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=metrics_fn(task),
        callbacks=[JsonlLog(out / "logs" / "student.jsonl", "student"), *(callbacks or [])],
    )
    _train(trainer)

    result = summarize(opts, task, trainer, teacher, dev, tokenizer)
    if trainer.is_world_process_zero():
        with atomic_dir(out / "student") as tmp:
            save_student(student, tmp)
            tokenizer.save_pretrained(tmp)
        write_json(out / "metrics.json", result)
    return result


def summarize(opts: TrainOptions, task: GlueTask, trainer: Trainer, teacher: PreTrainedModel,
              dev: dict[str, Dataset], tokenizer) -> dict:
    """What metrics.json holds: teacher scores, the student's best evaluation and its last scores
    (with static scales also re-scored with dynamic ones), and the whole dev history."""
    student = trainer.model
    history = eval_history(trainer, task)
    primary = task.primary_metric
    last = {opts.act_scale: evaluate(trainer, dev)}
    if opts.act_scale == "static" and opts.act_bits < 32:
        set_act_scale_mode(student, "dynamic")
        last["dynamic"] = evaluate(trainer, dev)
        set_act_scale_mode(student, "static")
    teacher_eval = Trainer(
        model=teacher,
        args=TrainingArguments(
            output_dir=trainer.args.output_dir,
            per_device_eval_batch_size=trainer.args.per_device_eval_batch_size,
            report_to=[],
            disable_tqdm=trainer.args.disable_tqdm,
            use_cpu=trainer.args.use_cpu,
        ),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=metrics_fn(task),
    )
    return {
        "task": task.name,
        "metric": primary,
        "metric_names": sorted(last[opts.act_scale]),
        "teacher": {"dev": evaluate(teacher_eval, dev)},
        "student": {
            "kd": opts.kd if opts.gamma is None else f"gamma={opts.gamma} on {opts.gamma_on}",
            "loss_weights": opts.loss_weights,
            "act_scale": opts.act_scale,
            "best": max(history, key=lambda r: r["dev"][primary]) if history else None,
            "last": {mode: {"step": trainer.state.global_step, "dev": m} for mode, m in last.items()},
            "history": history,
        },
    }


def copy_of(teacher: PreTrainedModel) -> PreTrainedModel:
    """A fresh model with the teacher's config and weights, for the student to start from."""
    student = type(teacher)(copy.deepcopy(teacher.config))
    student.load_state_dict(teacher.state_dict())
    return student
