"""`kdqat doctor`: what this machine's inference stack is (versions, onnxruntime's build and providers, OpenVINO,
the GPU, TensorRT, the CPU's integer dot-product features) and what in it is broken, e.g. the CPU onnxruntime wheel
installed beside onnxruntime-gpu, where it can shadow the GPU build."""

from __future__ import annotations

import platform
from importlib import metadata

ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def openvino_on(cpu: dict) -> str:
    """What OpenVINO's INT8 layers get on this CPU (kdqat.runtime.cpu_info's dict), or why it is the slower engine."""
    from kdqat.runtime.cpu_info import openvino_caution

    caution, dot_products = openvino_caution(cpu), [f for f in cpu["features"] if f != "AVX2"]
    if caution:
        return f"slower than onnxruntime: {caution}"
    return f"INT8 dot-product instructions for it here: {', '.join(dot_products)}" if dot_products else "not measured on such a CPU"


def inspect_stack() -> dict:
    """Versions and capabilities, each None (or empty) where absent."""
    from kdqat import __version__
    from kdqat.runtime.cpu_info import cpu_info, describe

    cpu = cpu_info()
    report: dict = {"kdqat": __version__, "python": platform.python_version(), "cpu": describe(cpu),
                    "openvino_on_cpu": openvino_on(cpu), "onnxruntime_distributions": {}}
    for dist in ORT_DISTRIBUTIONS:
        if (v := _version(dist)) is not None:
            report["onnxruntime_distributions"][dist] = v
    for module in ("torch", "transformers", "onnx", "openvino"):  # openvino: the optional CPU engine
        report[module] = _version(module)
    try:
        import onnxruntime

        report["onnxruntime"] = onnxruntime.__version__
        report["providers"] = list(onnxruntime.get_available_providers())
    except ImportError:
        report["onnxruntime"], report["providers"] = None, []
    try:
        import torch

        report["torch_cuda"] = torch.version.cuda
        report["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        report["torch_cuda"], report["gpu"] = None, None
    try:
        import tensorrt

        report["tensorrt"] = tensorrt.__version__
    except ImportError:
        report["tensorrt"] = None
    return report


def problems(report: dict, gpu: bool) -> list[str]:
    """What is wrong with `report`: always the shadowing of onnxruntime-gpu; with `gpu`, every missing piece of
    the GPU stack (a GPU, a CUDA build of PyTorch, onnxruntime's CUDA and TensorRT providers, TensorRT)."""
    found = []
    if set(ORT_DISTRIBUTIONS) <= set(report["onnxruntime_distributions"]):
        found.append("onnxruntime and onnxruntime-gpu are both installed: they provide the same module and the CPU "
                     "build can shadow the GPU one; fix: pip uninstall -y onnxruntime onnxruntime-gpu && "
                     "pip install --no-deps onnxruntime-gpu")
    if gpu:
        if report["gpu"] is None:
            found.append("no CUDA GPU visible to PyTorch" + ("" if report["torch_cuda"] else " (a CPU build of PyTorch)"))
        for provider in GPU_PROVIDERS:
            if provider not in report["providers"]:
                found.append(f"onnxruntime has no {provider} (install onnxruntime-gpu for CUDA 12, alone)")
        if report["tensorrt"] is None:
            found.append("TensorRT's Python package is not importable (use the GPU image: NVIDIA's TensorRT container)")
    return found
