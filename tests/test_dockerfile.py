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
    extras = set(re.findall(r'"\.\[([a-z,]+)\]"', DOCKERFILE))
    assert extras == {"gpu"}
    assert set(project["optional-dependencies"]) >= {"gpu"}
    assert any(d.startswith("tensorrt") for d in project["optional-dependencies"]["gpu"])
    assert project["scripts"]["kdqat"] == "kdqat.cli:main"


def test_every_image_runs_kdqat_help_and_gpu_is_the_default_target():
    stages = re.findall(r"^FROM \S+ AS (\w+)", DOCKERFILE, flags=re.M)
    assert stages == ["cpu", "gpu"]  # the last stage is what `docker build .` builds
    assert instructions("CMD") == ['["kdqat", "--help"]'] * 2
