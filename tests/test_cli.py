"""The command line: bad input ends in one line on stderr and exit status 2, no traceback, no output."""

import subprocess
import sys

import pytest


def kdqat(*args, cwd):
    return subprocess.run([sys.executable, "-m", "kdqat.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "squad"], "error: --task 'squad' is not a GLUE task"),
        (["--task", "rte", "--data-dir", "nowhere"], "error: --data-dir nowhere: no such folder"),
        (["--task", "rte", "--kd", "minilm"], "error: --kd 'minilm' is not one of"),
        (["--task", "rte", "--gamma", "0.5"], "error: --gamma needs --gamma-on"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    done = kdqat("train", "--output-dir", str(tmp_path / "out"), *args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(message), done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "student").exists()


def test_help_lists_the_train_command(tmp_path):
    done = kdqat("--help", cwd=tmp_path)
    assert done.returncode == 0 and "train" in done.stdout
