"""Checks that files left by an earlier run are whole before anything loads them: a truncated or damaged
file ends in one line naming it and what to do, not in a traceback from deep inside a library."""

from __future__ import annotations

import zipfile
from pathlib import Path

from safetensors import safe_open

from kdqat.errors import KdqatError, first_line


def check_safetensors(path: Path, advice: str) -> None:
    """A safetensors file whose header and data are complete (the header says how long the data is)."""
    try:
        with safe_open(str(path), "pt") as f:
            f.keys()
    except Exception as e:  # safetensors' SafetensorError, or an OSError
        raise KdqatError(f"{path}: damaged or truncated ({first_line(e)}); {advice}") from None


def check_torch_file(path: Path, advice: str) -> None:
    """A torch.save file (a zip archive): a truncated one has lost its central directory."""
    try:
        with zipfile.ZipFile(path):
            pass
    except (zipfile.BadZipFile, OSError) as e:
        raise KdqatError(f"{path}: damaged or truncated ({e}); {advice}") from None


def check_model_folder(folder: Path, advice: str) -> None:
    """The weight files of a Hugging Face folder (single-file or sharded) are whole."""
    for weights in sorted(Path(folder).glob("*.safetensors")):
        check_safetensors(weights, advice)


def check_checkpoint(checkpoint: Path, previous: Path | None) -> None:
    """A Trainer checkpoint to resume from: its weights and optimizer state are whole."""
    advice = (f"delete {checkpoint} to resume from {previous}" if previous
              else f"delete {checkpoint} to start this stage again")
    check_model_folder(checkpoint, advice)
    for state in ("optimizer.pt", "scheduler.pt"):
        if (checkpoint / state).is_file():
            check_torch_file(checkpoint / state, advice)
