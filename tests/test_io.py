"""Atomic writes: all or nothing, and the files keep the permissions the user's umask gives."""

from __future__ import annotations

import os
import stat

import pytest

from kdqat.io import atomic_dir, write_json


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_write_json_replaces_whole_file_with_umask_permissions(tmp_path, umask_022):
    path = tmp_path / "out" / "metrics.json"
    write_json(path, {"a": 1})
    write_json(path, {"b": 2})
    assert path.read_text() == '{\n  "b": 2\n}\n'
    assert mode(path) == 0o644  # not mkstemp's 0600
    assert os.listdir(path.parent) == ["metrics.json"]  # no temporary file left


def test_atomic_dir_replaces_on_success_and_keeps_the_old_folder_on_failure(tmp_path, umask_022):
    target = tmp_path / "student"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    assert (target / "weights").read_text() == "v1" and mode(target) == 0o755
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("interrupted")
    assert (target / "weights").read_text() == "v1"
    assert sorted(os.listdir(tmp_path)) == ["student"]


def test_a_target_that_cannot_be_renamed_gets_its_contents_swapped(tmp_path, umask_022, monkeypatch):
    """A mount point (a Docker volume, a bind mount) cannot be renamed or removed (EBUSY): the folder stays,
    the old files go only once the new ones are complete, and nothing temporary is left."""
    import errno

    target = tmp_path / "volume"
    with atomic_dir(target) as tmp:
        (tmp / "model.onnx").write_text("v1")
        (tmp / "old-only.txt").write_text("v1")
    inode = os.stat(target).st_ino
    real_replace = os.replace

    def mount_point_replace(src, dst):
        if os.fspath(src) == os.fspath(target):
            raise OSError(errno.EBUSY, "Device or resource busy", os.fspath(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", mount_point_replace)
    with atomic_dir(target) as tmp:
        (tmp / "model.onnx").write_text("v2")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "f").write_text("v2")
    assert os.stat(target).st_ino == inode  # the same folder, new contents
    assert sorted(os.listdir(target)) == ["model.onnx", "sub"] and (target / "model.onnx").read_text() == "v2"
    assert sorted(os.listdir(tmp_path)) == ["volume"]
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:  # a failed write leaves the volume as it was
        (tmp / "model.onnx").write_text("half")
        raise RuntimeError("interrupted")
    assert (target / "model.onnx").read_text() == "v2"


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_one(tmp_path):
    dead = tmp_path / ".onnx.999999999.abcd1234.kdqat-tmp"  # no such process
    alive = tmp_path / f".onnx.{os.getpid()}.abcd1234.kdqat-tmp"  # a writer still at work
    other = tmp_path / ".onnx-notes"
    for folder in (dead, alive, other):
        folder.mkdir()
    with atomic_dir(tmp_path / "onnx") as tmp:
        (tmp / "f").write_text("x")
    assert not dead.exists() and alive.exists() and other.exists()


def test_an_export_killed_midway_leaves_nothing_behind_the_next_export(tmp_path, tiny_model_dir):
    import signal
    import subprocess
    import sys
    import time

    from conftest import make_student_run, run_cli

    from kdqat import QuantConfig

    run = make_student_run(tmp_path / "run", tiny_model_dir, QuantConfig())
    export = subprocess.Popen([sys.executable, "-m", "kdqat.cli", "export", str(run), "--samples", "64"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(run.glob(".onnx.*")) and time.monotonic() < deadline and export.poll() is None:
        time.sleep(0.05)
    assert list(run.glob(".onnx.*")), "the export finished before it could be killed"
    export.send_signal(signal.SIGKILL)
    export.wait(30)
    assert list(run.glob(".onnx.*"))  # what SIGKILL leaves
    done = run_cli("export", run, "--samples", "8", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not list(run.glob(".onnx.*")) and (run / "onnx" / "export.json").is_file()


@pytest.fixture
def bind_mount(tmp_path):
    """A real mount point (a bind mount, as Docker makes for a volume), where this machine lets us make one."""
    import shutil
    import subprocess

    source, target = tmp_path / "volume-data", tmp_path / "volume"
    source.mkdir()
    target.mkdir()
    if not (shutil.which("mount") and shutil.which("mountpoint")) or subprocess.run(["mount", "--bind", source, target], capture_output=True).returncode:
        pytest.skip("no permission to make a bind mount here (needs root)")
    yield target
    subprocess.run(["umount", target], check=True)


def test_export_twice_into_a_real_mount_point(bind_mount, tiny_model_dir, tmp_path):
    from conftest import make_student_run, run_cli

    from kdqat import QuantConfig

    import subprocess

    def is_mount_point() -> bool:  # os.path.ismount misses a bind mount on the same file system
        return subprocess.run(["mountpoint", "-q", bind_mount]).returncode == 0

    assert is_mount_point()
    run = make_student_run(tmp_path / "run", tiny_model_dir, QuantConfig())
    for attempt in range(2):
        done = run_cli("export", run, "--output-dir", bind_mount, "--samples", "8", cwd=tmp_path)
        assert done.returncode == 0, (attempt, done.stderr)
        assert is_mount_point() and (bind_mount / "export.json").is_file() and (bind_mount / "model.onnx").is_file()
        assert not [p for p in os.listdir(bind_mount) if p.startswith(".")] and not list(tmp_path.glob(".volume*"))
