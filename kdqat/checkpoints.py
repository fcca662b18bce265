"""Resumable Trainer checkpoints that are whole or ignored: each checkpoint is marked complete after the Trainer
has written all of it, and a rerun resumes from the newest complete one by itself, removing (and naming) any
newer one that a kill, an out-of-memory stop or a power cut left half-written."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from kdqat.files import check_checkpoint

COMPLETE = "kdqat-complete"  # written into a checkpoint folder last
log = logging.getLogger(__name__)


class MarkComplete(TrainerCallback):
    """Write the completion mark into the checkpoint the Trainer has just finished saving (on_save runs after the
    whole checkpoint, optimizer and trainer state included, is written)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if folder.is_dir():
                (folder / COMPLETE).write_text(f"{state.global_step}\n")


def _numbered(folder: Path) -> list[Path]:
    steps = sorted(int(p.name.rsplit("-", 1)[-1]) for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                   if p.is_dir() and p.name.rsplit("-", 1)[-1].isdigit())
    return [folder / f"{PREFIX_CHECKPOINT_DIR}-{s}" for s in steps]


def resumable(folder: Path) -> Path | None:
    """The newest complete checkpoint in a stage's folder (None: start the stage afresh). Newer incomplete ones
    are removed, each named in one log line. A complete one whose files are damaged since is refused by name.
    Checkpoints of a kdqat that wrote no marks are accepted when their files are whole."""
    found = _numbered(Path(folder))
    marked = any((c / COMPLETE).is_file() for c in found)
    for index in range(len(found) - 1, -1, -1):
        checkpoint = found[index]
        previous = found[index - 1] if index else None
        if (checkpoint / COMPLETE).is_file():
            check_checkpoint(checkpoint, previous)  # marked complete, yet damaged since: refused by name
            return checkpoint
        if not marked and _whole(checkpoint, previous):
            return checkpoint
        shutil.rmtree(checkpoint)
        log.warning("%s was cut off while it was written (no completion mark): removed it; %s", checkpoint,
                    f"resuming from {previous.name}" if previous else "starting the stage afresh")
    return None


def _whole(checkpoint: Path, previous: Path | None) -> bool:
    """An unmarked checkpoint (an earlier kdqat's) is complete when its trainer state was written and its files read."""
    from kdqat.errors import KdqatError

    if not (checkpoint / "trainer_state.json").is_file():
        return False
    try:
        check_checkpoint(checkpoint, previous)
    except KdqatError:
        return False
    return True
