"""OpenVINO (Intel's inference runtime) as a CPU engine for the exported deploy graph.

OpenVINO reads the Q/DQ deploy graph as it is (no rewrite): its low-precision passes turn each quantized
MatMul into an INT8 FullyConnected and the attention block into one fused INT8 kernel per layer; LayerNorm,
GELU and the residuals run as its own FP32 kernels. On a 2-core Xeon with AMX the student
runs 1.3-1.45x faster than in onnxruntime at 1x128 and 8x128, 1.65x at 32x128, but not at 1x32, and behind
`kdqat serve` (small calls, a new shape each) it is slower (docs/RESULTS.md, "The student on OpenVINO").

The float parts run in FP32 (`INFERENCE_PRECISION_HINT`): OpenVINO's default on CPUs with AMX or
AVX-512 BF16 is BF16, which would make the numbers depend on the machine. Shapes stay dynamic: one compiled
model takes any batch and sequence length (a model compiled for one fixed shape runs 8-26% faster, measured by
benchmarks/openvino_shapes.py, but compiling takes about 0.4 s and a copy of the weights per shape, which only a
deployment with fixed padded shapes repays).
Calls from several threads at once each get their own infer request; `threads` per call sets as many CPU
streams as fit the cores, so such calls run side by side.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from kdqat.errors import KdqatError


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise KdqatError("openvino is not installed: pip install 'kdqat[openvino]' (or pip install openvino)") from None
    return openvino


def compile_config(threads: int | None, cores: int | None = None) -> dict[str, str]:
    """OpenVINO CPU properties: FP32 float parts, and with `threads` per call, one stream per `threads` cores
    (streams are OpenVINO's parallel calls); without, one stream on every core (the lowest latency)."""
    cores = cores or os.cpu_count() or 1
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        if threads < 1:
            raise KdqatError(f"threads {threads}: must be 1 or more")
        streams = max(1, cores // threads)
        config.update({"NUM_STREAMS": str(streams), "INFERENCE_NUM_THREADS": str(streams * threads)})
    else:
        config["INFERENCE_NUM_THREADS"] = str(cores)
    return config


class OpenVinoEngine:
    """The deploy graph compiled for OpenVINO's CPU plugin, for any batch and sequence length. `run` is safe from
    several threads at once."""

    def __init__(self, path: str | Path, threads: int | None = None, name: str = "openvino") -> None:
        ov = _import_openvino()
        path = Path(path)
        if not path.is_file():
            raise KdqatError(f"{path}: no such ONNX file (run kdqat export first)")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as e:
            raise KdqatError(f"{path}: OpenVINO cannot read this graph ({str(e).strip().splitlines()[0]})") from None
        self.config = compile_config(threads)
        self.compiled = core.compile_model(model, "CPU", self.config)
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.output = self.compiled.output(0)
        self._requests = threading.local()  # an infer request is not thread-safe: one per calling thread
        self.name = name
        self.path = path

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled.create_infer_request()
        result = request.infer({k: batch[k] for k in self.input_names})
        return np.array(result[self.output], copy=True)  # the request's output buffer is reused by its next call
