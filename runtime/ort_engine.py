"""onnxruntime as an engine, on the CPU, CUDA or TensorRT execution provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdqat.errors import KdqatError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise KdqatError("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)") from None
    return onnxruntime


class OrtEngine:
    """An InferenceSession on one provider; refuses to start rather than fall back silently to the CPU.

    cpu_rewrites (default: on for the CPU provider) applies export.passes.onnxruntime_cpu in memory: uint8
    activations with zero point 128 instead of int8 with 0 (the form onnxruntime's integer kernels take) and
    the embedding rows dequantized after the lookup. The same numbers; the file on disk stays portable.
    """

    def __init__(self, path: str | Path, provider: str = "cpu", threads: int | None = None,
                 cpu_rewrites: bool | None = None, name: str = "ort") -> None:
        import onnx

        from export.passes import onnxruntime_cpu

        ort = _import_ort()
        if provider not in PROVIDERS:
            raise KdqatError(f"--provider {provider!r} is not one of {', '.join(PROVIDERS)}")
        wanted = PROVIDERS[provider]
        available = ort.get_available_providers()
        if wanted not in available:
            raise KdqatError(f"onnxruntime provider {wanted} is not available here (installed: {', '.join(available)}); "
                             "install onnxruntime-gpu (pip install 'kdqat[gpu]') on a machine with CUDA")
        path = Path(path)
        if not path.is_file():
            raise KdqatError(f"{path}: no such ONNX file (run kdqat export first)")
        try:
            model = onnx.load(str(path))
        except Exception as e:  # onnx raises DecodeError and others from protobuf
            raise KdqatError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
        if cpu_rewrites if cpu_rewrites is not None else provider == "cpu":
            model = onnxruntime_cpu(model)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # no warnings about initializers the optimizer drops
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=[wanted])
        if self.session.get_providers()[0] != wanted:
            raise KdqatError(f"onnxruntime did not start {wanted} (it fell back to {self.session.get_providers()[0]})")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.name = name
        self.path = path

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {k: batch[k] for k in self.input_names})[0]
