"""A run's config.json read back, with one rule for what another kdqat wrote, applied by every command that reads
a run (train resuming it, export, eval, bench, serve, report): a run written by a newer kdqat, or holding keys this
kdqat does not know (at the top or among its options), is refused in one line naming the version and the keys.
Runs of older versions are read: a setting they lacked was its default then."""

from __future__ import annotations

import json
from pathlib import Path

from kdqat import __version__
from kdqat.errors import KdqatError

KNOWN_KEYS = ("kdqat_version", "torch", "options", "task_spec")  # what kdqat train writes at the top


def _release(version: str) -> tuple[int, ...] | None:
    from packaging.version import InvalidVersion, Version  # packaging comes with transformers

    try:
        return Version(version).release
    except InvalidVersion:
        return None


def read_run_config(config_file: Path, option_names: set[str],
                    advice: str = "use that kdqat version, or another folder") -> dict:
    """The parsed config.json of a run, refused in one line when missing, unreadable or another kdqat's
    (`option_names`: the settings this kdqat's TrainOptions has)."""
    try:
        saved = json.loads(Path(config_file).read_text())
    except FileNotFoundError:
        raise KdqatError(f"{config_file}: missing (the run's settings: task, sequence length)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        raise KdqatError(f"{config_file}: unreadable or not written by kdqat train") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("options"), dict):
        raise KdqatError(f"{config_file}: unreadable or not written by kdqat train")
    version = saved.get("kdqat_version")
    written = f"kdqat {version}" if version else "a kdqat that recorded no version"
    theirs = _release(str(version)) if version else None
    if version and (theirs is None or theirs > _release(__version__)):
        raise KdqatError(f"{config_file}: written by {written}, which this kdqat ({__version__}) cannot vouch for; "
                         f"{advice}")
    unknown = sorted(set(saved) - set(KNOWN_KEYS)) + sorted(f"options.{k}" for k in set(saved["options"]) - option_names)
    if unknown:
        raise KdqatError(f"{config_file}: settings this kdqat ({__version__}) does not know ({', '.join(unknown)}), "
                         f"written by {written}; {advice}")
    return saved
