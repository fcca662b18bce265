"""Atomic writes: a reader never sees a half-written file or folder."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from kdqat.errors import KdqatError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output(path: str | Path, option: str, folder: bool = False, given: str | Path | None = None) -> None:
    """Refuse, before any work, an output `path` (a file, or a folder when `folder`) that cannot be written: the
    wrong kind of thing already there, a file where a folder must be made, or no write permission. `given`: the
    option's value when `path` is something the command writes inside it (named as such in the message)."""
    path = Path(path)
    head = f"{option} {given if given is not None else path}:"
    inside = f" {path}" if given is not None else ""
    if path.exists() and path.is_dir() != folder:
        what, kind = ("file", "folder") if folder else ("folder", "file")
        if given is None:
            raise KdqatError(f"{head} is a {what}; give a {kind} path")
        raise KdqatError(f"{head}{inside} is a {what} where kdqat writes a {kind}; remove or rename it")
    existing = next(p for p in (path if folder else path.parent, *path.parents) if p.exists())
    if not existing.is_dir():
        raise KdqatError(f"{head} {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise KdqatError(f"{head} {existing} is not writable; choose another place or fix its permissions")


def write_text(path: str | Path, text: str) -> None:
    """Write text to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make results unreadable to others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (see write_text)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> None:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")  # the suffix tells matplotlib the format
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def _readable_as_umask_allows(folder: Path) -> None:
    """Give every file the permissions the umask allows: some writers (safetensors) create theirs 0600."""
    mask = _umask()
    for f in folder.rglob("*"):
        if f.is_file() and not f.is_symlink():
            os.chmod(f, (f.stat().st_mode | 0o666) & ~mask & 0o777)


def finite_json(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by None: strict JSON has no token for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


TMP_SUFFIX = ".kdqat-tmp"  # every temporary folder atomic_dir makes: .<name>.<pid>.<random>.kdqat-tmp


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale(folder: Path, name: str) -> None:
    """Remove the temporary folders for `name` in `folder` whose writer is gone (killed, crashed): a later
    write cleans up what an earlier one could not."""
    if not folder.is_dir():
        return
    for leftover in folder.glob(f".{name}.*{TMP_SUFFIX}"):
        pid = leftover.name[len(name) + 2:].split(".", 1)[0]
        if leftover.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _tmp_folder(where: Path, name: str) -> Path:
    tmp = Path(tempfile.mkdtemp(dir=where, prefix=f".{name}.{os.getpid()}.", suffix=TMP_SUFFIX))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide a shared model folder
    return tmp


def _replace_folder(new: Path, path: Path) -> None:
    """Put `new` at `path`: the old folder is renamed away first and removed only once `new` is in place. A
    target that cannot be renamed (a mount point: EBUSY, EXDEV) gets its contents swapped instead."""
    if not path.exists():
        os.replace(new, path)
        return
    old = _tmp_folder(path.parent, path.name)
    old.rmdir()
    try:
        os.replace(path, old)
    except OSError as e:
        if e.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM, errno.EACCES):
            raise
        _swap_contents(new, path)
        return
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old, path)  # the old folder back where it was
        raise
    shutil.rmtree(old, ignore_errors=True)


def _swap_contents(new: Path, target: Path) -> None:
    """Replace what `target` holds by what `new` holds, keeping `target` itself (a mount point): the old
    entries move into a hidden folder inside it and are removed only after the new ones are all in."""
    trash = _tmp_folder(target, target.name)
    keep = {trash.name}
    moved = []
    try:
        for entry in list(target.iterdir()):
            if entry.name not in keep and not entry.name.endswith(TMP_SUFFIX):
                os.replace(entry, trash / entry.name)
                moved.append(entry.name)
        for entry in list(new.iterdir()):
            shutil.move(str(entry), str(target / entry.name))
    except BaseException:
        for name in moved:  # put the old entries back over whatever arrived
            if (target / name).exists():
                shutil.rmtree(target / name) if (target / name).is_dir() else (target / name).unlink()
            os.replace(trash / name, target / name)
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(new, ignore_errors=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path`, on failure it is removed and
    `path` is left as it was. The old folder is never removed before the new one is complete; a target that
    cannot be renamed (a mount point) keeps its identity and has its contents swapped; temporary folders of
    writers that were killed are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, path.name)
    remove_stale(path, path.name)  # a mount point's own swap folders
    tmp = _tmp_folder(path.parent, path.name)
    try:
        yield tmp
        _readable_as_umask_allows(tmp)
        _replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
