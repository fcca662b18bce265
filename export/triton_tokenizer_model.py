"""Triton Python-backend model: texts in, the student's token ids out (copied into the repository as model.py).

Runs inside Triton's Python backend, which provides `triton_python_backend_utils`; it needs `transformers`
in that Python environment. The tokenizer files sit beside this file; the maximum length comes from the
model config's `max_length` parameter, the outputs (the student graph's inputs) from its outputs. Every output is
padded to that length, so that the student's dynamic batcher can put requests of different lengths into one batch.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer



def _texts(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in tensor.as_numpy().reshape(-1)]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.max_length = int(config["parameters"]["max_length"]["string_value"])
        self.outputs = [output["name"] for output in config["output"]]  # the student's inputs, as its graph takes them
        self.tokenizer = AutoTokenizer.from_pretrained(str(Path(__file__).parent))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                text, pair = _texts(request, "TEXT"), _texts(request, "TEXT_PAIR")
                enc = self.tokenizer(text, pair, truncation=True, max_length=self.max_length, padding="max_length",
                                     return_tensors="np")
                tensors = [pb_utils.Tensor(name, enc[name].astype(np.int64) if name in enc
                                           else np.zeros_like(enc["input_ids"], dtype=np.int64)) for name in self.outputs]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as e:  # this request fails alone
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
        return responses
