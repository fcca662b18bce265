"""Engines by name: what `--engine` accepts, and how each opens an exported student."""

from __future__ import annotations

from pathlib import Path

from kdqat.errors import KdqatError

ENGINES = {"torch": "PyTorch", "ort": "onnxruntime", "trt": "TensorRT"}


def open_student_engine(kind: str, onnx_path: str | Path, provider: str = "cpu", profile=None):
    """An engine running the exported deploy graph (`ort`, or `trt` with an optional ShapeProfile)."""
    if kind == "ort":
        from runtime.ort_engine import OrtEngine

        return OrtEngine(onnx_path, provider, profile=profile)
    if kind == "trt":
        from runtime.trt_engine import TrtEngine

        return TrtEngine.open(onnx_path, profile)
    raise KdqatError(f"--engine {kind!r} is not one of {', '.join(ENGINES)}")
