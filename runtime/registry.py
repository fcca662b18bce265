"""Engines by name: what `--engine` accepts, each with a factory that opens the exported student on it.

Adding an engine is a change to this file: a factory taking a `StudentSource` and returning an object
with `run(batch) -> logits` (runtime.engine.Engine), and its entry in ENGINES. `kdqat eval`, `kdqat
bench` and `kdqat serve` open every engine through `open_engine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kdqat.errors import KdqatError
from kdqat.runtime.engine import PROVIDERS, Engine, ShapeProfile


@dataclass(frozen=True)
class StudentSource:
    """Where an engine finds the student: its PyTorch folder and its deploy graph, and how to run it."""

    student: Path  # the kdqat student folder (fake-quant PyTorch model)
    onnx: Path  # the Q/DQ deploy graph written by kdqat export
    provider: str = "cpu"  # onnxruntime execution provider
    device: str = "cpu"  # PyTorch device
    profile: ShapeProfile | None = None  # shapes TensorRT must accept
    threads: int | None = None  # onnxruntime's or OpenVINO's threads per call (None: every core)
    static_shapes: tuple[tuple[int, int], ...] = ()  # (batch, seq) shapes OpenVINO also compiles as fixed-shape models


@dataclass(frozen=True)
class EngineSpec:
    label: str  # how tables name it
    open: Callable[[StudentSource], Engine]


def _torch(source: StudentSource) -> Engine:
    from kdqat.runtime.torch_engine import TorchEngine

    return TorchEngine.student(source.student, source.device)


def _onnxruntime(source: StudentSource) -> Engine:
    from kdqat.runtime.ort_engine import OrtEngine
    from kdqat.layout import tensorrt_graph

    graph = tensorrt_graph(source.onnx) if source.provider == "tensorrt" else source.onnx  # TensorRT gets FP16 float parts
    return OrtEngine(graph, source.provider, threads=source.threads, profile=source.profile)


def _openvino(source: StudentSource) -> Engine:
    from kdqat.runtime.openvino_engine import OpenVinoEngine

    if source.provider != "cpu":
        raise KdqatError(f"--provider {source.provider}: OpenVINO runs on the CPU here; use --provider cpu")
    return OpenVinoEngine(source.onnx, threads=source.threads, static_shapes=source.static_shapes)


def _tensorrt(source: StudentSource) -> Engine:
    from kdqat.layout import tensorrt_graph
    from kdqat.runtime.trt_engine import TrtEngine

    return TrtEngine.open(tensorrt_graph(source.onnx), source.profile)


ENGINES: dict[str, EngineSpec] = {
    "torch": EngineSpec("PyTorch", _torch),
    "ort": EngineSpec("onnxruntime", _onnxruntime),
    "trt": EngineSpec("TensorRT", _tensorrt),
    "openvino": EngineSpec("OpenVINO", _openvino),
}
REFERENCE = "torch"  # what every other engine is compared with
__all__ = ["ENGINES", "PROVIDERS", "REFERENCE", "Engine", "ShapeProfile", "StudentSource", "check_engine", "open_engine",
           "open_teacher"]


def parse_shapes(text: str, option: str = "--static-shapes") -> tuple[tuple[int, int], ...]:
    """'1x32,32x128' -> ((1, 32), (32, 128)), with a one-line error naming `option` on anything else."""
    shapes = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        batch, _, seq = item.lower().partition("x")
        if not (batch.isdigit() and seq.isdigit() and int(batch) > 0 and int(seq) > 0):
            raise KdqatError(f"{option} {text!r}: give BATCHxLENGTH shapes of positive integers, e.g. 1x32,32x128")
        shapes.append((int(batch), int(seq)))
    return tuple(shapes)


def check_static_shapes(engines: tuple[str, ...] | list[str], shapes) -> None:
    if shapes and "openvino" not in engines:
        raise KdqatError("--static-shapes: only --engine openvino compiles fixed-shape models; add --engine openvino")


def check_engine(name: str) -> EngineSpec:
    if name not in ENGINES:
        raise KdqatError(f"--engine {name!r} is not one of {', '.join(ENGINES)}")
    return ENGINES[name]


def open_engine(name: str, source: StudentSource) -> Engine:
    """The student on engine `name`."""
    return check_engine(name).open(source)


def open_teacher(folder: Path, device: str = "cpu") -> Engine:
    """A float model folder (a run's teacher, or the student's float weights) in PyTorch: the baseline every
    table compares with."""
    from kdqat.runtime.torch_engine import TorchEngine

    return TorchEngine.teacher(folder, device)
