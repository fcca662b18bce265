"""OpenVINO (Intel's inference runtime) as a CPU engine for the exported deploy graph.

OpenVINO reads the Q/DQ deploy graph as it is (no rewrite): its low-precision passes turn each quantized
MatMul into an INT8 FullyConnected and the attention block into one fused INT8 kernel per layer; LayerNorm,
GELU and the residuals run as its own FP32 kernels. On a 2-core Xeon with AMX the student
runs 1.4-1.6x faster than in onnxruntime from 1x128 to 32x128 and 1.1-1.2x at 1x32 (1.5x with that shape compiled
ahead), but behind `kdqat serve` (small calls, a new shape each) it is slower (docs/results/cpu-speed.md, "The student on
OpenVINO" and "Batch 1: steady calls"). That lead rests on AMX and VNNI: with AVX2 kernels alone (no VNNI) the
student ran at half the speed of onnxruntime's int8 peer, and opening the engine on such a CPU logs a warning
(docs/results/cpu-speed.md, "Without AMX").

The float parts run in FP32 (`INFERENCE_PRECISION_HINT`): OpenVINO's default on CPUs with AMX or
AVX-512 BF16 is BF16, which would make the numbers depend on the machine. Shapes stay dynamic: one compiled
model takes any batch and sequence length. A deployment can also have a few fixed shapes compiled ahead
(`static_shapes`), as TensorRT builds fixed-shape engines: a model compiled for one shape runs 8-26% faster at
small shapes (docs/results/openvino/), at about 0.5 s of compilation and 80 MB of memory per shape. A call
that fits one (batch and length at most its own) is padded to the smallest that fits, its padding masked and its
padded rows dropped from the answer; a call that fits none runs on the dynamic model.
Calls from several threads at once each get their own infer request; `threads` per call sets as many CPU
streams as fit the cores, so such calls run side by side.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from kdqat.errors import KdqatError, first_line
from kdqat.runtime.cpu_info import cpu_info, openvino_caution

log = logging.getLogger(__name__)


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise KdqatError("openvino is not installed: pip install 'kdqat[openvino]' (or pip install openvino)") from None
    return openvino


@functools.cache
def _caution_once() -> None:
    """Warn, once per process, where the student was measured slower on OpenVINO than on onnxruntime."""
    caution = openvino_caution(cpu_info())
    if caution:
        log.warning("OpenVINO: %s", caution)


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
    """The deploy graph compiled for OpenVINO's CPU plugin, for any batch and sequence length, and for each of
    `static_shapes` ((batch, sequence) pairs) as a model of that one shape. `run` is safe from several threads
    at once."""

    def __init__(self, path: str | Path, threads: int | None = None, name: str = "openvino",
                 static_shapes: Iterable[tuple[int, int]] = ()) -> None:
        ov = _import_openvino()
        static_shapes = sorted(set(static_shapes))
        for batch, seq in static_shapes:
            if batch < 1 or seq < 1:
                raise KdqatError(f"static shape {batch}x{seq}: batch and sequence length must be 1 or more")
        path = Path(path)
        if not path.is_file():
            raise KdqatError(f"{path}: no such ONNX file (run kdqat export first)")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as e:
            raise KdqatError(f"{path}: OpenVINO cannot read this graph ({first_line(e)})") from None
        self.config = compile_config(threads)
        _caution_once()
        self.input_names = [i.get_any_name() for i in model.inputs]
        self._dtypes = [i.get_element_type().to_dtype() for i in model.inputs]
        self._tensor = ov.Tensor
        self.models = {None: core.compile_model(model, "CPU", self.config)}  # shape -> compiled model; None: any
        self.static_shapes = static_shapes
        for batch, seq in static_shapes:
            fixed = model.clone()
            try:
                fixed.reshape({input_name: [batch, seq] for input_name in self.input_names})
            except RuntimeError:
                raise KdqatError(f"static shape {batch}x{seq}: the graph does not take that shape (is {seq} longer "
                                 "than the model's positions?)") from None
            self.models[(batch, seq)] = core.compile_model(fixed, "CPU", self.config)
        self._requests = threading.local()  # an infer request is not thread-safe: one per calling thread and model
        self.name = name
        self.path = path

    def fixed_shape_for(self, batch: int, seq: int) -> tuple[int, int] | None:
        """The smallest fixed shape a call of `batch` x `seq` fits in, or None (the dynamic model)."""
        fits = [(b, s) for b, s in self.static_shapes if b >= batch and s >= seq]
        return min(fits, key=lambda shape: (shape[0] * shape[1], shape[0]), default=None)

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        rows, seq = batch["input_ids"].shape
        key = self.fixed_shape_for(rows, seq)
        if key is not None and key != (rows, seq):  # zeros: [PAD] ids, masked, segment 0
            batch = {k: np.pad(batch[k], ((0, key[0] - rows), (0, key[1] - seq))) for k in self.input_names}
        requests = getattr(self._requests, "by_model", None)
        if requests is None:
            requests = self._requests.by_model = {}
        request = requests.get(key)
        if request is None:
            request = requests[key] = self.models[key].create_infer_request()
        # the inputs lent to the request, not copied, and the plain infer() (not the dict-in, dict-out call):
        # measured 6-10% less time per call at 1x32
        arrays = [np.ascontiguousarray(batch[name], dtype=dtype) for name, dtype in zip(self.input_names, self._dtypes)]
        for name, array in zip(self.input_names, arrays):  # `arrays` holds the lent memory until infer() returns
            request.set_tensor(name, self._tensor(array, shared_memory=True))
        request.infer()
        return request.get_output_tensor(0).data[:rows].copy()  # the request's output buffer is reused by its next call
