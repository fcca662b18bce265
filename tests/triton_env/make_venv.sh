#!/usr/bin/env bash
# The Python environment of the real-Triton tests (tests/test_triton_server.py): nvidia-pytriton 0.7.0 bundles a
# Triton Inference Server 2.51 binary that runs on a CPU (python backend only) and pins numpy below 2, so it lives
# apart from kdqat's own environment; onnxruntime for the onnxruntime-backend stand-in, transformers for the
# repository's tokenizer model. Usage: bash tests/triton_env/make_venv.sh [FOLDER, default .venv-triton]
set -euo pipefail
cd "$(dirname "$0")/../.."
folder="${1:-.venv-triton}"
python3 -m venv "$folder"
"$folder/bin/pip" install -q "nvidia-pytriton==0.7.0" onnxruntime "transformers>=4.40"
"$folder/bin/python" -c "import pytriton, onnxruntime, transformers; print('$folder: Triton environment ready')"
