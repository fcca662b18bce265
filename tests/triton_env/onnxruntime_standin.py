"""A test stand-in for Triton's C++ onnxruntime backend, which no package registry carries: a Python-based
backend (Triton runs `backends/onnxruntime/model.py` through its python backend for every model whose config says
`backend: "onnxruntime"`) that runs the model version's model.onnx with pip onnxruntime. Inputs and outputs are
the config's, by name; the requests the dynamic batcher gathered run as one batch, as the C++ backend runs them."""

import json
from pathlib import Path

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        graph = Path(args["model_repository"]) / args["model_version"] / (config.get("default_model_filename") or "model.onnx")
        self.session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests):
        parts = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests] for name in self.inputs}
        sizes = [part.shape[0] for part in parts[self.inputs[0]]]
        results = self.session.run(self.outputs, {name: np.concatenate(p) for name, p in parts.items()})
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, result[start:start + size]) for name, result in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
