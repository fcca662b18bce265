"""TensorRT engines built from the deploy graph: explicit quantization from its Q/DQ nodes (no calibration),
INT8 with FP16 fallback, one optimization profile, a timing cache, and a record that makes a stale engine
(other TensorRT, other GPU, other graph, other profile) be rebuilt rather than loaded.

Written against the TensorRT 10 Python API; it needs the GPU image (see the Dockerfile). Everything that
does not touch TensorRT itself (profiles, staleness, the layer report) is plain Python and tested on CPU.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kdqat.errors import KdqatError
from kdqat.io import write_json


@dataclass(frozen=True)
class ShapeProfile:
    """min / opt / max batch size and sequence length of the one optimization profile."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    min_seq: int = 1
    opt_seq: int = 128
    max_seq: int = 128

    def __post_init__(self) -> None:
        if not (0 < self.min_batch <= self.opt_batch <= self.max_batch):
            raise KdqatError(f"batch profile needs 0 < min <= opt <= max, got {self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if not (0 < self.min_seq <= self.opt_seq <= self.max_seq):
            raise KdqatError(f"sequence profile needs 0 < min <= opt <= max, got {self.min_seq}/{self.opt_seq}/{self.max_seq}")

    @classmethod
    def parse(cls, batch: str, seq: str) -> ShapeProfile:
        """From "MIN,OPT,MAX" strings, e.g. ("1,8,32", "16,128,128")."""
        try:
            b, s = [int(x) for x in batch.split(",")], [int(x) for x in seq.split(",")]
        except ValueError:
            raise KdqatError(f"profile {batch!r} / {seq!r}: give MIN,OPT,MAX integers") from None
        if len(b) != 3 or len(s) != 3:
            raise KdqatError(f"profile {batch!r} / {seq!r}: give exactly MIN,OPT,MAX")
        return cls(*b, *s)

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        return (self.min_batch, self.min_seq), (self.opt_batch, self.opt_seq), (self.max_batch, self.max_seq)

    def check(self, shape: tuple[int, ...]) -> None:
        """A clear error for a [batch, seq] input the engine was not built for."""
        batch, seq = shape
        if not (self.min_batch <= batch <= self.max_batch and self.min_seq <= seq <= self.max_seq):
            raise KdqatError(f"input shape [batch {batch}, sequence {seq}] is outside the engine's profile "
                             f"(batch {self.min_batch}..{self.max_batch}, sequence {self.min_seq}..{self.max_seq}); "
                             "ask for a profile that covers it (kdqat bench --batch-sizes / --seq-lengths, "
                             "kdqat eval --batch-size) and the engine is rebuilt")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def engine_record(onnx_path: Path, profile: ShapeProfile, tensorrt_version: str, gpu: str, capability: str) -> dict:
    """What an engine was built from and for, saved beside it as PLAN.json."""
    return {"onnx": onnx_path.name, "onnx_sha256": file_sha256(onnx_path), "profile": asdict(profile),
            "tensorrt": tensorrt_version, "gpu": gpu, "compute_capability": capability,
            "precision": "explicit INT8 from Q/DQ, FP16 fallback"}


def stale_reason(saved: dict | None, current: dict) -> str | None:
    """Why a saved engine must not be loaded (None when it matches what would be built now)."""
    if saved is None:
        return "no engine record"
    for key, label in (("tensorrt", "TensorRT version"), ("gpu", "GPU"), ("compute_capability", "compute capability"),
                       ("onnx_sha256", "ONNX graph"), ("profile", "profile")):
        if saved.get(key) != current.get(key):
            return f"{label} changed ({saved.get(key)!r} -> {current.get(key)!r})"
    return None


def layer_report(engine_info: dict) -> dict:
    """Count layers by output precision from the engine inspector's JSON (built with DETAILED verbosity);
    a deploy graph whose MatMuls do not run in INT8 has lost its fusions."""
    counts: dict[str, int] = {}
    not_int8 = []
    for layer in engine_info.get("Layers", []):
        if not isinstance(layer, dict):
            continue
        formats = " ".join(str(o.get("Format/Datatype", "")) for o in layer.get("Outputs", [])).lower()
        precision = ("INT8" if "int8" in formats else "FP16" if ("half" in formats or "fp16" in formats)
                     else "FP32" if ("float" in formats or "fp32" in formats) else "other")
        counts[precision] = counts.get(precision, 0) + 1
        kind = str(layer.get("LayerType", ""))
        if precision != "INT8" and any(k in kind.lower() for k in ("gemm", "matrixmultiply", "convolution", "myelin")):
            not_int8.append({"name": layer.get("Name"), "type": kind, "precision": precision})
    return {"layers_by_precision": counts, "matmul_like_layers_not_int8": not_int8}


def _require_tensorrt():
    """The tensorrt module, or one error naming everything missing: the GPU, TensorRT, or both."""
    import torch

    missing = [] if torch.cuda.is_available() else ["no CUDA GPU is visible (torch.cuda.is_available() is False)"]
    try:
        import tensorrt
    except ImportError:
        tensorrt = None
        missing.append("TensorRT is not installed (its wheels come from NVIDIA's index, not the package registry)")
    if missing:
        raise KdqatError(f"the TensorRT engine needs a CUDA GPU and TensorRT: {'; '.join(missing)}. "
                         "Use the GPU image (Dockerfile) on a machine with an NVIDIA GPU")
    return tensorrt


def build_engine(trt, onnx_path: Path, profile: ShapeProfile, timing_cache: Path) -> bytes:
    """Parse the Q/DQ graph and build a serialized engine (INT8 where Q/DQ say so, FP16 elsewhere)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise KdqatError(f"{onnx_path}: TensorRT's ONNX parser refused the graph: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.INT8)  # Q/DQ define the INT8 parts; no calibrator is given
    config.set_flag(trt.BuilderFlag.FP16)  # everything else may use FP16
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # for the layer report
    shapes = profile.shapes()
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        opt_profile.set_shape(network.get_input(i).name, *shapes)
    config.add_optimization_profile(opt_profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise KdqatError(f"{onnx_path}: TensorRT could not build an engine (see the messages above)")
    timing_cache.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(plan)


class TrtEngine:
    """A deserialized engine run with PyTorch CUDA tensors as device buffers."""

    name = "trt"

    def __init__(self, trt, plan: bytes, profile: ShapeProfile) -> None:
        import torch

        self.torch = torch
        self.profile = profile
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        if self.engine is None:
            raise KdqatError("TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.stream = torch.cuda.Stream()
        inspector = self.engine.create_engine_inspector()
        self.layers = layer_report(json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON)))

    @classmethod
    def open(cls, onnx_path: str | Path, profile: ShapeProfile | None = None, rebuild: bool = False) -> TrtEngine:
        """Load ONNX_PATH.plan when its record matches this TensorRT, GPU, graph and profile; else build it."""
        trt = _require_tensorrt()
        import torch

        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise KdqatError(f"{onnx_path}: no such ONNX file (run kdqat export first)")
        profile = profile or ShapeProfile()
        plan_path, record_path = onnx_path.with_suffix(".plan"), onnx_path.with_suffix(".plan.json")
        major, minor = torch.cuda.get_device_capability()
        current = engine_record(onnx_path, profile, trt.__version__, torch.cuda.get_device_name(), f"{major}.{minor}")
        saved = json.loads(record_path.read_text()) if record_path.is_file() else None
        if rebuild or stale_reason(saved, current) is not None or not plan_path.is_file():
            plan = build_engine(trt, onnx_path, profile, onnx_path.with_name("timing.cache"))
            tmp = plan_path.with_name(f".{plan_path.name}.tmp")
            tmp.write_bytes(plan)
            tmp.replace(plan_path)
            engine = cls(trt, plan, profile)
            write_json(record_path, {**current, "layers": engine.layers})
            return engine
        return cls(trt, plan_path.read_bytes(), profile)

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        torch = self.torch
        shape = batch["input_ids"].shape
        self.profile.check(shape)
        with torch.cuda.stream(self.stream):
            buffers = {}
            for name in self.inputs:
                dtype = torch.int32 if "INT32" in str(self.engine.get_tensor_dtype(name)) else torch.int64
                buffers[name] = torch.from_numpy(batch[name]).to("cuda", dtype=dtype, non_blocking=True)
                self.context.set_input_shape(name, tuple(shape))
            for name in self.outputs:
                buffers[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
            for name, tensor in buffers.items():
                self.context.set_tensor_address(name, tensor.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise KdqatError("TensorRT failed to run the engine")
        self.stream.synchronize()
        return buffers[self.outputs[0]].float().cpu().numpy()


__all__ = ["ShapeProfile", "TrtEngine", "engine_record", "layer_report", "stale_reason"]
