"""Checks before a `kdqat train` run writes anything, and the lock that keeps one run per output folder."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from kdqat.errors import KdqatError
from kdqat.families import family_for
from kdqat.models import DEFAULT_MODEL, model_config
from kdqat.options import TrainOptions

LOCK_FILE = ".kdqat.lock"


def check_writable(out: Path) -> None:
    """The output folder (or the nearest folder above it that exists) must be writable."""
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise KdqatError(f"--output-dir {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise KdqatError(f"--output-dir {out}: {existing} is not writable; choose another folder or fix its permissions")


def check_model_inputs(opts: TrainOptions) -> None:
    """--model, --teacher and --init-student name something loadable, and --max-seq-length fits the model."""
    for option, value in (("--teacher", opts.teacher), ("--init-student", opts.init_student)):
        # a teacher may be a Hugging Face hub id (loaded from the hub or its cache); a student is a local folder
        if value is not None and not Path(value).is_dir() and (option == "--init-student" or _looks_like_path(value)):
            raise KdqatError(f"{option} {value}: no such folder")
    source = opts.teacher or opts.model
    if source == opts.model and opts.model != DEFAULT_MODEL and _looks_like_path(opts.model) and not Path(opts.model).is_dir():
        raise KdqatError(f"--model {opts.model}: no such folder (give a local model folder, a Hugging Face id or 'default')")
    if opts.init_student is not None:
        check_init_student(opts)
    config = model_config(source)
    if config is None:
        return
    family_for(config.model_type, f"{'--teacher' if opts.teacher else '--model'} {source}")  # before any work
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and opts.max_seq_length > limit:
        raise KdqatError(f"--max-seq-length {opts.max_seq_length}: the model has {limit} positions; use at most {limit}")


def _architecture(name: str) -> dict | None:
    """The shape of a model folder or id, as its family names it (None when its config cannot be read here)."""
    config = model_config(name)
    if config is None:
        return None
    return {"model_type": config.model_type, **family_for(config.model_type, name).dimensions(config)}


def _shape(arch: dict) -> str:
    return (f"{arch['num_hidden_layers']} layers x {arch['hidden_size']} wide, {arch['num_attention_heads']} heads, "
            f"FFN {arch['intermediate_size']}, vocabulary {arch['vocab_size']}")


def check_init_student(opts: TrainOptions) -> None:
    """--init-student is a kdqat student (quant_config.json) of the teacher's shape: the student starts from its
    weights and is distilled layer by layer against the teacher."""
    from kdqat.student import QUANT_CONFIG_FILE

    folder = Path(opts.init_student)
    if not (folder / QUANT_CONFIG_FILE).is_file():
        raise KdqatError(f"--init-student {folder}: not a kdqat student (no {QUANT_CONFIG_FILE}); pass the student/ folder "
                         "of an earlier kdqat train (a fine-tuned full-precision model goes to --teacher)")
    option, reference = ("--teacher", opts.teacher) if opts.teacher else ("--model", opts.model)
    mine, theirs = _architecture(str(folder)), _architecture(reference)
    if mine and theirs and mine != theirs:
        raise KdqatError(f"--init-student {folder} is {_shape(mine)}; {option} {reference} is {_shape(theirs)}: the "
                         "student must have the teacher's shape")


def _looks_like_path(name: str) -> bool:
    """A folder, not a hub id ("name" or "org/name")."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


@contextmanager
def run_lock(out: Path):
    """One `kdqat train` per output folder: a second one is refused instead of interleaving with the first."""
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:  # the processes of one torchrun job share the folder
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise KdqatError(f"{out} is in use by another kdqat train or export (lock {out / LOCK_FILE}); wait for it "
                         "to finish or choose another folder") from None
    try:
        yield
    finally:
        lock.release()
