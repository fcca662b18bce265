"""onnxruntime as an engine, on the CPU, CUDA or TensorRT execution provider."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from kdqat.errors import KdqatError
from kdqat.runtime.engine import PROVIDERS



def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise KdqatError("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)") from None
    return onnxruntime


def provider_options(provider: str, cache_dir: Path, input_names: list[str], profile=None) -> dict[str, str]:
    """Options for onnxruntime's provider. The TensorRT provider on a Q/DQ graph: no precision flags (with
    trt_int8_enable or trt_fp16_enable it builds a weakly typed network, deprecated since TensorRT 10.12; with
    neither, a strongly typed one whose precisions are the graph's Q/DQ and casts, the route of kdqat's own
    TensorRT engine), explicit profile shapes (without them it rebuilds its engine for every new batch shape) and
    an engine and timing cache, kept beside the graph (the folder must exist: the provider makes one level only)."""
    if provider != "tensorrt":
        return {}
    from kdqat.runtime.engine import ShapeProfile

    profile = profile or ShapeProfile()
    (low, opt, high) = profile.shapes()

    def shapes(shape: tuple[int, int]) -> str:
        return ",".join(f"{name}:{shape[0]}x{shape[1]}" for name in input_names)

    return {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache_dir),
            "trt_profile_min_shapes": shapes(low), "trt_profile_opt_shapes": shapes(opt),
            "trt_profile_max_shapes": shapes(high)}


def trt_cache_dir(path: Path, serialized: bytes) -> Path:
    """Where the TensorRT provider caches engines for this graph: a folder named by the graph's hash. Given the
    model as bytes, the provider keys its cache by the graph's structure alone, so a re-exported graph of the same
    structure (new weights, new scales) would silently reuse the old engine; a folder per content cannot."""
    folder = path.parent / "ort_trt_cache" / hashlib.sha256(serialized).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)  # two levels: the provider would make only the last, then not start
    return folder


class OrtEngine:
    """An InferenceSession on one provider; refuses to start rather than fall back silently to the CPU.

    cpu_rewrites (default: on for the CPU provider) applies runtime.ort_passes.onnxruntime_cpu in memory: uint8
    activations with zero point 128 instead of int8 with 0 (the form onnxruntime's integer kernels take) and
    the embedding rows dequantized after the lookup. The same numbers; the file on disk stays portable.
    """

    def __init__(self, path: str | Path, provider: str = "cpu", threads: int | None = None,
                 cpu_rewrites: bool | None = None, name: str = "ort", profile=None) -> None:
        import onnx

        from kdqat.runtime.ort_passes import onnxruntime_cpu

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
        inputs = [i.name for i in model.graph.input]
        serialized = model.SerializeToString()
        cache = trt_cache_dir(path, serialized) if provider == "tensorrt" else path.parent
        chosen = (wanted, provider_options(provider, cache, inputs, profile))
        self.session = ort.InferenceSession(serialized, options, providers=[chosen])
        if self.session.get_providers()[0] != wanted:
            raise KdqatError(f"onnxruntime did not start {wanted} (it fell back to {self.session.get_providers()[0]})")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.name = name
        self.path = path

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {k: batch[k] for k in self.input_names})[0]
