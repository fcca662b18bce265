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
    report["libnvinfer"] = _libnvinfer()
    report["cuda_majors"] = _cuda_majors(report)
    try:
        import tensorrt

        report["tensorrt"] = tensorrt.__version__
    except ImportError:
        report["tensorrt"] = None
    return report


def _libnvinfer() -> str | None:
    """Whether TensorRT's runtime library loads here (onnxruntime lists its TensorRT provider even when it does
    not): the library's file name, or None."""
    import ctypes

    for name in ("libnvinfer.so.10", "libnvinfer.so"):
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return None


def _major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except (TypeError, ValueError):
        return None


def _cuda_majors(report: dict) -> dict[str, int]:
    """The CUDA major version each GPU library was built for, where it says: PyTorch (torch.version.cuda),
    onnxruntime-gpu (its build info), TensorRT (its wheel's name, tensorrt-cu12 / -cu13)."""
    majors = {}
    if (m := _major(report.get("torch_cuda"))) is not None:
        majors["torch"] = m
    try:
        import onnxruntime

        info = onnxruntime.get_build_info() if hasattr(onnxruntime, "get_build_info") else ""
        for part in str(info).replace(",", " ").split():
            if part.lower().startswith("cuda_version="):
                if (m := _major(part.split("=", 1)[1])) is not None:
                    majors["onnxruntime"] = m
    except ImportError:
        pass
    for cuda in (12, 13):
        if _version(f"tensorrt-cu{cuda}") or _version(f"tensorrt_cu{cuda}_libs"):
            majors["tensorrt"] = cuda
    return majors


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
        elif _major(report["tensorrt"]) != 10:
            found.append(f"TensorRT {report['tensorrt']}: kdqat's engine is written for TensorRT 10 (11 drops its "
                         "builder flags); install tensorrt-cu12>=10,<11")
        if "TensorrtExecutionProvider" in report["providers"] and report.get("libnvinfer") is None:
            found.append("onnxruntime lists TensorrtExecutionProvider but TensorRT's library (libnvinfer.so.10) does "
                         "not load: the provider would fall back to CUDA; put TensorRT's lib folder on LD_LIBRARY_PATH")
        majors = report.get("cuda_majors") or {}
        if len(set(majors.values())) > 1:
            found.append("the GPU libraries are built for different CUDA majors ("
                         + ", ".join(f"{k} CUDA {v}" for k, v in sorted(majors.items())) + "): install one CUDA's builds")
    return found
