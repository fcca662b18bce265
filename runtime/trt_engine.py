"""TensorRT engines built from the deploy graph: explicit quantization from its Q/DQ nodes (no calibration),
one optimization profile, a timing cache, and a record that makes a stale engine (other TensorRT, other
GPU, other graph, other profile) be rebuilt rather than loaded. The graph is the deploy graph's FP16 form
(model.fp16.onnx, written by export beside model.onnx) where it exists.

Two build routes: strongly typed (the default where TensorRT has it, and the only one TensorRT 11 keeps):
the graph's own types decide, INT8 where Q/DQ say so and the float parts in the graph's float type (float16 in
model.fp16.onnx); and
the weakly-typed route of older TensorRT 10 releases (BuilderFlag.INT8 + FP16, float parts may run in FP16).

Written against the TensorRT 10 Python API; it needs the GPU image (see the Dockerfile). Everything that
does not touch TensorRT itself (profiles, staleness, the layer report, the dtype table) is plain Python
and tested on CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np

from kdqat.errors import KdqatError
from kdqat.io import write_json
from kdqat.runtime.engine import ShapeProfile


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def engine_record(onnx_path: Path, profile: ShapeProfile, tensorrt_version: str, gpu: str, capability: str,
                  build: str = "strongly typed") -> dict:
    """What an engine was built from and for, saved beside it as PLAN.json."""
    return {"onnx": onnx_path.name, "onnx_sha256": file_sha256(onnx_path), "profile": asdict(profile),
            "tensorrt": tensorrt_version, "gpu": gpu, "compute_capability": capability,
            "precision": f"explicit INT8 from Q/DQ ({build})"}


def stale_reason(saved: dict | None, current: dict) -> str | None:
    """Why a saved engine must not be loaded (None when it matches what would be built now)."""
    if saved is None:
        return "no engine record"
    for key, label in (("tensorrt", "TensorRT version"), ("gpu", "GPU"), ("compute_capability", "compute capability"),
                       ("onnx_sha256", "ONNX graph"), ("profile", "profile"), ("precision", "build route")):
        if saved.get(key) != current.get(key):
            return f"{label} changed ({saved.get(key)!r} -> {current.get(key)!r})"
    return None


# How the inspector names a tensor's type (its "Format/Datatype", e.g. "Int8 NC/32HW32", "Half format",
# "BFloat16", "Row major linear FP32") -> precision; the more specific names first ("bfloat16" holds "float").
_PRECISIONS = (("bfloat16", "BF16"), ("bf16", "BF16"), ("fp8", "FP8"), ("int8", "INT8"), ("int4", "INT4"),
               ("half", "FP16"), ("fp16", "FP16"), ("int32", "INT32"), ("int64", "INT64"), ("float", "FP32"),
               ("fp32", "FP32"), ("bool", "BOOL"))


def tensor_precision(fmt: str) -> str:
    fmt = fmt.lower()
    return next((p for key, p in _PRECISIONS if key in fmt), "other")


INDEX_PRECISIONS = {"INT64", "INT32", "BOOL"}  # token ids, masks, shapes: they say nothing of a layer's math


def _format(tensor: dict) -> str:
    """A tensor's type as the inspector names it: TensorRT 10's "Format/Datatype", or 11's split "Datatype" and
    "Format" fields."""
    joined = tensor.get("Format/Datatype")
    return str(joined) if joined is not None else f"{tensor.get('Datatype', '')} {tensor.get('Format', '')}".strip()


def _precisions(tensors) -> list[str]:
    return [tensor_precision(_format(t)) for t in tensors or [] if isinstance(t, dict)]


def layer_precision(layer: dict) -> str:
    """A layer's precision from the inspector's per-layer input and output formats: INT8 when any data input is
    INT8 (an INT8 GEMM with a half-precision output is an INT8 layer), else its first data input's, else its
    first data output's. Index tensors (token ids, masks) are not data: a fused layer whose first input is
    input_ids does not read as INT64."""
    inputs, outputs = _precisions(layer.get("Inputs")), _precisions(layer.get("Outputs"))
    data = [p for p in inputs if p not in INDEX_PRECISIONS] or [p for p in outputs if p not in INDEX_PRECISIONS]
    if "INT8" in data:
        return "INT8"
    return (data or inputs or outputs or ["other"])[0]


def layer_report(engine_info: dict) -> dict:
    """Count layers by precision from the engine inspector's JSON (built with DETAILED verbosity); a
    deploy graph whose MatMuls do not run in INT8 has lost its fusions. Myelin layers (TensorRT's fused
    regions) show only their boundary tensors, not the precision of the GEMMs inside: they are listed apart,
    with those boundary precisions, and never counted as broken fusions."""
    counts: dict[str, int] = {}
    not_int8, myelin, int8_gemms = [], [], 0
    for layer in engine_info.get("Layers", []):
        if not isinstance(layer, dict):
            continue
        precision = layer_precision(layer)
        counts[precision] = counts.get(precision, 0) + 1
        kind = str(layer.get("LayerType", ""))
        if "myelin" in kind.lower():
            myelin.append({"name": layer.get("Name"), "inputs": _precisions(layer.get("Inputs")),
                           "outputs": _precisions(layer.get("Outputs"))})
        elif any(k in kind.lower() for k in ("gemm", "matrixmultiply", "convolution")):
            if precision == "INT8":
                int8_gemms += 1
            else:
                not_int8.append({"name": layer.get("Name"), "type": kind, "precision": precision})
    return {"layers_by_precision": counts, "int8_gemms": int8_gemms, "matmul_like_layers_not_int8": not_int8,
            "myelin_regions": myelin}


def gemm_verdict(report: dict, quantized: int, float_allowed: int) -> str:
    """Whether an engine runs the student's integer matrix products in INT8, from its layer report: at least
    `quantized` INT8 GEMMs (the quantized Linears and the two attention products of each layer) and at most
    `float_allowed` other GEMMs (the float head: a classifier, a pre-classifier). Raises AssertionError where the
    report shows otherwise, or shows no GEMM at all (only fused regions: it then proves nothing)."""
    float_gemms = report["matmul_like_layers_not_int8"]
    if report["int8_gemms"] == 0 and not float_gemms:
        raise AssertionError(f"the layer report lists no GEMM, only {len(report['myelin_regions'])} fused Myelin "
                             "region(s): it cannot tell INT8 from float (TensorRT 10.10 or later lists their layers)")
    if report["int8_gemms"] < quantized:
        raise AssertionError(f"{report['int8_gemms']} INT8 GEMMs for the student's {quantized} quantized matrix "
                             f"products; float GEMMs: {[g['name'] for g in float_gemms]}")
    if len(float_gemms) > float_allowed:
        raise AssertionError(f"{len(float_gemms)} GEMMs outside INT8 where the student has {float_allowed} float "
                             f"Linear(s): {[g['name'] for g in float_gemms]}")
    return f"{report['int8_gemms']} INT8 GEMMs (student: {quantized} quantized products), {len(float_gemms)} float " \
           f"(its float head: {float_allowed})"


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


def strongly_typed_supported(trt) -> bool:
    return hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")


def timing_cache_path(folder: Path, tensorrt_version: str, gpu: str) -> Path:
    """A timing cache per TensorRT version and GPU model: another one's cache would be rejected."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{tensorrt_version}-{gpu}").strip("-")
    return folder / f"timing-{slug}.cache"


def _attach_timing_cache(config, cache_file: Path) -> None:
    """Use the saved cache when TensorRT accepts it, else start an empty one (never build without)."""
    if cache_file.is_file():
        cache = config.create_timing_cache(cache_file.read_bytes())
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise KdqatError("TensorRT refused even an empty timing cache")


def build_engine(trt, onnx_path: Path, profile: ShapeProfile, timing_cache: Path, strongly_typed: bool | None = None,
                 fp16: bool = False) -> bytes:
    """Parse the Q/DQ graph and build a serialized engine. Strongly typed (default where supported): the
    graph's types decide. Otherwise the INT8 flag (Q/DQ say where) and the FP16 flag (float parts may use
    it). `fp16` with a float graph builds the plain FP16 baseline engine."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = strongly_typed_supported(trt) if strongly_typed is None else strongly_typed
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed and not fp16 else 0
    network = builder.create_network(flags)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise KdqatError(f"{onnx_path}: TensorRT's ONNX parser refused the graph: {errors}")
    config = builder.create_builder_config()
    if fp16 and not hasattr(trt.BuilderFlag, "FP16"):
        raise KdqatError(f"TensorRT {trt.__version__} has no FP16 builder flag (removed in 11): build the float16 "
                         "form of the graph strongly typed instead (kdqat.eval.gpu_check does)")
    if fp16 or not strongly_typed:  # precision flags are refused on a strongly typed network
        if not fp16:
            config.set_flag(trt.BuilderFlag.INT8)  # Q/DQ define the INT8 parts; no calibrator is given
        config.set_flag(trt.BuilderFlag.FP16)  # the float parts may use FP16
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # for the layer report
    shapes = profile.shapes()
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        opt_profile.set_shape(network.get_input(i).name, *shapes)
    config.add_optimization_profile(opt_profile)
    _attach_timing_cache(config, timing_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise KdqatError(f"{onnx_path}: TensorRT could not build an engine (see the messages above)")
    timing_cache.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(plan)


# TensorRT DataType name -> torch dtype name, for the engine's I/O buffers; anything else is refused.
TRT_TO_TORCH = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
                "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


def torch_dtype(trt_dtype) -> str:
    """The torch dtype name of a TensorRT DataType (e.g. DataType.HALF -> "float16")."""
    name = str(trt_dtype).rsplit(".", 1)[-1]
    if name not in TRT_TO_TORCH:
        raise KdqatError(f"engine I/O type {name} has no buffer type here (known: {', '.join(TRT_TO_TORCH)})")
    return TRT_TO_TORCH[name]


class TrtEngine:
    """A deserialized engine run with PyTorch CUDA tensors as device buffers."""

    name = "trt"
    float16_parts = False  # set by open() for a graph whose float parts are float16 (model.fp16.onnx)

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
        self.dtypes = {n: getattr(torch, torch_dtype(self.engine.get_tensor_dtype(n))) for n in names}
        self.stream = torch.cuda.Stream()
        inspector = self.engine.create_engine_inspector()
        self.layers = layer_report(json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON)))

    @classmethod
    def open(cls, onnx_path: str | Path, profile: ShapeProfile | None = None, rebuild: bool = False,
             fp16: bool = False) -> TrtEngine:
        """Load ONNX_PATH.plan when its record matches this TensorRT, GPU, graph and profile; else build it.
        `fp16` builds a float graph (model.float.onnx) as the FP16 baseline engine instead."""
        trt = _require_tensorrt()
        import torch

        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise KdqatError(f"{onnx_path}: no such ONNX file (run kdqat export first)")
        profile = profile or ShapeProfile()
        plan_path, record_path = onnx_path.with_suffix(".plan"), onnx_path.with_suffix(".plan.json")
        major, minor = torch.cuda.get_device_capability()
        gpu = torch.cuda.get_device_name()
        build = "FP16 flag, float graph" if fp16 else ("strongly typed" if strongly_typed_supported(trt) else "INT8 + FP16 flags")
        current = engine_record(onnx_path, profile, trt.__version__, gpu, f"{major}.{minor}", build)
        saved = json.loads(record_path.read_text()) if record_path.is_file() else None
        if rebuild or stale_reason(saved, current) is not None or not plan_path.is_file():
            plan = build_engine(trt, onnx_path, profile, timing_cache_path(onnx_path.parent, trt.__version__, gpu),
                                fp16=fp16)
            tmp = plan_path.with_name(f".{plan_path.name}.{os.getpid()}.tmp")  # two builders never share one
            tmp.write_bytes(plan)
            tmp.replace(plan_path)
            engine = cls(trt, plan, profile)
            write_json(record_path, {**current, "layers": engine.layers})
        else:
            engine = cls(trt, plan_path.read_bytes(), profile)
        engine.float16_parts = fp16 or onnx_path.name.endswith(".fp16.onnx")
        return engine

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.run_all(batch)[self.outputs[0]]

    def run_all(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output of the engine by name (kdqat debug marks its quantization points as outputs)."""
        torch = self.torch
        shape = batch["input_ids"].shape
        self.profile.check(shape)
        with torch.cuda.stream(self.stream):
            buffers = {}
            for name in self.inputs:
                buffers[name] = torch.from_numpy(batch[name]).to("cuda", dtype=self.dtypes[name], non_blocking=True)
                if not self.context.set_input_shape(name, tuple(shape)):
                    raise KdqatError(f"TensorRT refused input shape {tuple(shape)} for {name}")
            for name in self.outputs:
                buffers[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name], device="cuda")
            for name, tensor in buffers.items():
                self.context.set_tensor_address(name, tensor.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise KdqatError("TensorRT failed to run the engine")
        self.stream.synchronize()
        return {name: buffers[name].float().cpu().numpy() for name in self.outputs}


__all__ = ["TrtEngine", "engine_record", "layer_report", "stale_reason"]
