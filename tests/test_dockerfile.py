"""What can be checked of the Dockerfile without a Docker engine: what it copies exists, the extras it
installs are defined, each image's default command is `kdqat --help`, the GPU image is the default."""

from __future__ import annotations

import re

import tomllib
from conftest import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions(keyword: str) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)  # join continued lines
    return [line.split(None, 1)[1] for line in text.splitlines() if line.strip().startswith(keyword + " ")]


def test_copied_paths_exist_and_are_not_docker_ignored():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip()}
    for copy in instructions("COPY"):
        for source in copy.split()[:-1]:
            assert (REPO / source).exists(), source
            assert source not in ignored, source


def test_installed_extras_exist_in_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = {e for group in re.findall(r'"\.\[([a-z,]+)\]"', DOCKERFILE) for e in group.split(",")}
    assert extras == {"dev"}  # the GPU image takes TensorRT from its base and onnxruntime-gpu from ORT_GPU
    assert set(project["optional-dependencies"]) >= {"gpu", "dev"}
    assert any(d.startswith("tensorrt") for d in project["optional-dependencies"]["gpu"])
    assert project["scripts"]["kdqat"] == "kdqat.cli:main"


def test_every_image_runs_kdqat_help_and_gpu_is_the_default_target():
    stages = re.findall(r"^FROM \S+ AS (\w+)", DOCKERFILE, flags=re.M)
    assert stages == ["cpu", "gpu"]  # the last stage is what `docker build .` builds
    assert instructions("CMD") == ['["kdqat", "--help"]'] * 2


def from_arg_problems(dockerfile: str) -> list[str]:
    """ARGs a FROM uses that are not declared before the first FROM (Docker expands them to nothing)."""
    lines = [line.strip() for line in dockerfile.splitlines()]
    first_from = next(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    global_args = {line.split()[1].split("=")[0] for line in lines[:first_from] if line.upper().startswith("ARG ")}
    problems = []
    for line in lines:
        if line.upper().startswith("FROM "):
            for name in re.findall(r"\$\{?(\w+)\}?", line):
                if name not in global_args:
                    problems.append(f"{line}: ${name} is not declared before the first FROM")
    return problems


def test_every_arg_a_from_uses_is_declared_before_the_first_from():
    assert from_arg_problems(DOCKERFILE) == []
    broken = "FROM python:3.11-slim AS cpu\nARG TRT_IMAGE=nvcr.io/nvidia/tensorrt:25.06-py3\nFROM ${TRT_IMAGE} AS gpu\n"
    assert from_arg_problems(broken) == ["FROM ${TRT_IMAGE} AS gpu: $TRT_IMAGE is not declared before the first FROM"]


def test_gpu_versions_are_pinned_to_the_apis_the_code_is_written_for():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    gpu = project["optional-dependencies"]["gpu"]
    assert "tensorrt-cu12>=10,<11" in gpu  # TensorRT 11 removes BuilderFlag.INT8 / FP16; CUDA 12 like the rest
    ort = next(d for d in gpu if d.startswith("onnxruntime-gpu"))
    assert "<" in ort and re.search(rf'^ARG ORT_GPU="{re.escape(ort)}"$', DOCKERFILE, flags=re.M)  # one spec
    assert DOCKERFILE.count("onnxruntime-gpu>=") == 1 and '"${ORT_GPU}"' in DOCKERFILE
    assert "whl/cu128" not in DOCKERFILE  # no torch>=2.13 wheels there
    assert re.search(r"ARG TORCH_INDEX=https://download.pytorch.org/whl/cu1(26|30)\b", DOCKERFILE)


def test_hadolint_finds_no_errors():
    """hadolint (a dev dependency) at error level; its warnings (DL3013: `pip install .` is unpinned) remain."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    done = subprocess.run([hadolint, "--no-color", "--failure-threshold", "error", str(REPO / "Dockerfile")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " error:" not in done.stdout


def test_the_gpu_image_carries_the_check_the_readme_runs_in_it():
    """`docker run --gpus all IMAGE kdqat gpu-check RUN_DIR` is part of the package; the GPU tests need tests/ and
    pytest in the image."""
    gpu_stage = DOCKERFILE.split(" AS gpu", 1)[1]
    copied = {line.split()[1] for line in gpu_stage.splitlines() if line.startswith("COPY ")}
    assert {"kdqat", "export", "runtime", "eval", "tests"} <= copied
    assert '".[dev]"' in gpu_stage and "kdqat doctor --gpu" in (REPO / "README.md").read_text()
    assert "ENV PIP_BREAK_SYSTEM_PACKAGES=1" in gpu_stage  # Ubuntu 24.04 bases refuse pip otherwise (PEP 668)
