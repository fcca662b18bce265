"""The graphs export writes, with the oldest onnxruntime the GPU extra allows (the GPU image's, whose GPU build
has no release that loads INT2): export itself runs there and checks the packed graph with onnx.reference; the
deploy, fp16 and float graphs load; the packed INT2 graph loads from onnxruntime 1.32 on (the CPU build used here)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import tomllib
from conftest import REPO, make_student_run

from kdqat import QuantConfig


def oldest_gpu_onnxruntime() -> str:
    gpu = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    spec = next(d for d in gpu if d.startswith("onnxruntime-gpu"))
    return re.search(r">=\s*([\d.]+)", spec).group(1)


@pytest.fixture(scope="module")
def old_onnxruntime(tmp_path_factory) -> tuple[str, dict]:
    """onnxruntime (CPU build) at the GPU extra's lowest version, installed apart, and an environment using it."""
    version = oldest_gpu_onnxruntime()
    target = tmp_path_factory.mktemp("old-onnxruntime")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                           f"onnxruntime=={version}.*"], capture_output=True, text=True, timeout=600)
    if done.returncode:
        pytest.skip(f"onnxruntime {version} cannot be installed here: {done.stderr.strip().splitlines()[-1:]}")
    return version, {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


def test_export_runs_with_the_oldest_gpu_onnxruntime_and_its_graphs_load(old_onnxruntime, tmp_path, tiny_model_dir):
    version, env = old_onnxruntime
    run = make_student_run(tmp_path / "run", tiny_model_dir, QuantConfig())
    env = {k: v for k, v in env.items() if k != "GLUE_DIR"}  # random-token parity sample: fast
    done = subprocess.run([sys.executable, "-m", "kdqat.cli", "export", str(run), "--samples", "16"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads((run / "onnx" / "export.json").read_text())
    assert report["versions"]["onnxruntime"].startswith(version)
    parity = report["parity"]
    assert "ort_packed_vs_torch" not in parity and parity["onnx_reference_packed_vs_torch"]["agreement"] == 1.0
    probe = ("import onnxruntime as ort, sys\n"
             "for g in sys.argv[1:]:\n"
             "    try:\n"
             "        ort.InferenceSession(g, providers=['CPUExecutionProvider']); print(g, 'loads')\n"
             "    except Exception as e:\n"
             "        print(g, 'refused')\n")
    graphs = [str(run / "onnx" / g) for g in ("model.onnx", "model.fp16.onnx", "model.float.onnx", "model.packed.onnx")]
    old = subprocess.run([sys.executable, "-c", probe, *graphs], capture_output=True, text=True, env=env, timeout=300)
    assert old.stdout.split("\n")[:4] == [f"{g} loads" for g in graphs[:3]] + [f"{graphs[3]} refused"], old.stderr
    new = subprocess.run([sys.executable, "-c", probe, *graphs], capture_output=True, text=True, timeout=300)
    assert all(line.endswith(" loads") for line in new.stdout.split("\n")[:4]), new.stdout  # onnxruntime >= 1.32
