"""kdqat doctor: the inference stack as found here, and the problems it names (the CPU onnxruntime shadowing the
GPU build, missing GPU pieces)."""

from __future__ import annotations

import pytest
from conftest import run_cli

from kdqat.runtime.doctor import inspect_stack, problems

COMPLETE = {"onnxruntime_distributions": {"onnxruntime-gpu": "1.23.2"}, "gpu": "NVIDIA H100", "torch_cuda": "12.6",
            "providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
            "tensorrt": "10.11.0", "libnvinfer": "libnvinfer.so.10",
            "cuda_majors": {"torch": 12, "onnxruntime": 12, "tensorrt": 12}}


def test_a_complete_gpu_stack_has_no_problem_and_each_missing_piece_is_named():
    assert problems(COMPLETE, gpu=True) == []
    shadowed = {**COMPLETE, "onnxruntime_distributions": {"onnxruntime": "1.23.2", "onnxruntime-gpu": "1.23.2"}}
    (problem,) = problems(shadowed, gpu=False)
    assert "both installed" in problem and "pip uninstall -y onnxruntime onnxruntime-gpu" in problem
    cpu_only = {**COMPLETE, "gpu": None, "torch_cuda": None, "providers": ["CPUExecutionProvider"], "tensorrt": None}
    assert problems(cpu_only, gpu=False) == []
    found = problems(cpu_only, gpu=True)
    assert found[0] == "no CUDA GPU visible to PyTorch (a CPU build of PyTorch)" and len(found) == 4
    assert any("TensorrtExecutionProvider" in p for p in found) and any("TensorRT's Python package" in p for p in found)


@pytest.mark.parametrize("change, problem", [
    ({"libnvinfer": None}, "lists TensorrtExecutionProvider but TensorRT's library (libnvinfer.so.10) does not load"),
    ({"tensorrt": "11.0.0"}, "TensorRT 11.0.0: kdqat's engine is written for TensorRT 10"),
    ({"cuda_majors": {"torch": 12, "onnxruntime": 12, "tensorrt": 13}},
     "built for different CUDA majors (onnxruntime CUDA 12, tensorrt CUDA 13, torch CUDA 12)"),
])
def test_doctor_catches_gpu_stacks_where_the_engines_would_fail(change, problem):
    """Stacks that `kdqat doctor --gpu` used to call OK although checks 1 and 4 of the GPU check fail on them."""
    found = problems({**COMPLETE, **change}, gpu=True)
    assert len(found) == 1 and problem in found[0], found


def test_doctor_reports_this_machine(tmp_path):
    report = inspect_stack()
    assert "CPUExecutionProvider" in report["providers"] and report["torch"] and report["onnxruntime"]
    done = run_cli("doctor", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CPUExecutionProvider" in done.stdout and "no problem found" in done.stdout
    assert "OpenVINO" in done.stdout and (report["openvino"] or "not installed") in done.stdout
    if report["gpu"] is not None and report["tensorrt"] is not None:
        pytest.skip("a GPU and TensorRT are here: the --gpu check would pass")
    done = run_cli("doctor", "--gpu", cwd=tmp_path)
    assert done.returncode == 1 and "problem: " in done.stdout


def test_doctor_says_where_openvino_is_the_slower_engine():
    from kdqat.runtime.doctor import openvino_on

    def cpu(*features: str) -> dict:
        return {"model": "cpu", "arch": "x86_64", "logical_cores": 2, "features": list(features)}

    assert openvino_on(cpu("AVX2")).startswith("slower than onnxruntime: this CPU has AVX2 but no VNNI or AMX")
    assert openvino_on(cpu("AVX2", "AVX-512 VNNI", "AMX-INT8")) == "INT8 dot-product instructions for it here: AVX-512 VNNI, AMX-INT8"
    assert openvino_on(cpu()) == "not measured on such a CPU"
