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
